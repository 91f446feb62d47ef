"""The notebooks run top to bottom with a real Jupyter kernel on a small trained world, and are stored clean."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_analyze import model_world

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return model_world(tmp_path_factory.getbasetemp())


def test_three_notebooks_are_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_collection_tour.ipynb",
        "02_what_makes_images_common.ipynb",
        "03_personal_taste.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, trained, tmp_path, monkeypatch):
    root, bundle = trained
    monkeypatch.setenv("INTEREST_DATA", str(root))
    monkeypatch.setenv("INTEREST_MODEL", str(bundle))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    # "python3" is the .venv's own kernel; jupyter_client runs it with this interpreter
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # figures were drawn (not just text)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, path.name
    assert os.listdir(tmp_path) == []  # the notebooks write nothing into the working folder
