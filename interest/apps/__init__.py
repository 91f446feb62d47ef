"""What photo apps use beyond `interest.load`: the HTTP service (`service.py`), curation of a
folder (`curate.py`) and the ONNX export for torch-free scoring (`export_onnx.py`)."""
