"""The notebooks run top to bottom the way docs/analysis.md says, right after `make demo`, and are stored clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from test_analyze import model_world

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
JUPYTER = Path(sys.executable).parent / "jupyter"


@pytest.fixture(scope="module")
def demo_layout(tmp_path_factory):
    """A folder laid out like the repository after `make demo`: notebooks/ and demo-output/{collection,model}.

    The collection is a small trained world whose photos have no faves or
    comments counts, as the demo's crawl (without per-photo enrichment) has.
    """
    root, bundle = model_world(tmp_path_factory.getbasetemp())
    layout = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "notebooks", layout / "notebooks")
    shutil.copytree(root, layout / "demo-output" / "collection")
    shutil.copytree(bundle, layout / "demo-output" / "model")
    photos_path = layout / "demo-output" / "collection" / "photos.parquet"
    photos = pd.read_parquet(photos_path)
    photos["faves"] = pd.array([None] * len(photos), dtype="Int64")
    photos["comments"] = pd.array([None] * len(photos), dtype="Int64")
    photos.to_parquet(photos_path)
    return layout


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


def test_docs_command_is_the_one_tested():
    text = (REPO / "docs" / "analysis.md").read_text()
    assert ".venv/bin/jupyter execute notebooks/02_what_makes_images_common.ipynb" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_as_documented(path, demo_layout):
    """`.venv/bin/jupyter execute notebooks/<name>.ipynb` from the repository root, no variables set."""
    env = {k: v for k, v in os.environ.items() if k not in ("INTEREST_DATA", "INTEREST_MODEL")}
    env["OMP_NUM_THREADS"] = "1"
    before = sorted(p.relative_to(demo_layout) for p in demo_layout.rglob("*"))
    proc = subprocess.run(
        [str(JUPYTER), "execute", f"notebooks/{path.name}"], cwd=demo_layout, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr[-3000:]
    # the notebooks write nothing: not into notebooks/, not into the collection
    assert sorted(p.relative_to(demo_layout) for p in demo_layout.rglob("*")) == before


def test_relative_variables_are_taken_from_the_repository_root(demo_layout, tmp_path):
    """INTEREST_DATA=my/collection as in docs/analysis.md: relative to the root, though the kernel runs in notebooks/."""
    nb = nbformat.read(demo_layout / "notebooks" / "01_collection_tour.ipynb", as_version=4)
    nb.cells = nb.cells[:2]  # the set-up cell is enough to see which folder it reads
    nb.cells[1].source += "\nprint(DATA.resolve())"
    probe = demo_layout / "notebooks" / "probe.ipynb"
    nbformat.write(nb, probe)
    try:
        from nbclient import NotebookClient

        env = {"INTEREST_DATA": "demo-output/collection", "INTEREST_MODEL": "nowhere"}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(probe.parent)}}).execute()
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    finally:
        probe.unlink()
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.output_type == "stream").strip().splitlines()
    assert printed[-1] == str((demo_layout / "demo-output" / "collection").resolve())
    assert "model: none" in printed[0]
