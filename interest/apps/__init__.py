"""What photo apps use beyond `interest.load`: the HTTP service (`service.py`), curation of a
folder (`curate.py`), the ONNX export for torch-free scoring (`export_onnx.py`) and batch scoring
on Ray Data (`ray_scoring.py`)."""
