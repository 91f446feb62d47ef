"""`pip install 'interest[onnx]'` is torch-free: a fresh venv built from the project's own metadata scores an export.

The venv is real (no --system-site-packages); packages come from the package
registry pip is configured with. The project is copied out first so that
building it leaves nothing in the working tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxmltools")

from apps_helpers import train_image_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "torchvision", "open_clip", "lightgbm", "flickrapi")


def build_torch_free_env(where: Path) -> Path:
    """A venv with `pip install '<copy of the project>[onnx]'`; returns its python."""
    source = where / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    shutil.copytree(REPO / "interest", source / "interest", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(where / "env")], check=True)
    python = where / "env" / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{source}[onnx]"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return python


SCORE = """
import importlib.util, json, sys
import interest.onnx
scorer = interest.onnx.load(sys.argv[1], threads=1)
result = scorer.score(sys.argv[3:], user=sys.argv[2])
print(json.dumps({
    "missing": [m for m in %r if importlib.util.find_spec(m) is None],
    "ci_score": [float(x) for x in result["ci_score"]],
    "user_score": [float(x) for x in result["user_score"]],
    "trend_group": [int(x) for x in result["trend_group"]],
}))
""" % (FORBIDDEN,)


@pytest.mark.slow
def test_an_onnx_install_has_no_torch_and_scores_an_export(tmp_path):
    from interest.apps.export_onnx import export_onnx

    root = tmp_path / "world"
    model = train_image_model(root, backbone_id="openclip/ViT-S-32/none", n_users=30, n_photos=60, n_topics=4,
                              clusters=6, seed=3)
    export_onnx(model, tmp_path / "export")
    images = sorted((root / "images").glob("*.jpg"))[:6]
    user = model.users[0]
    expected = model.score(images, user=user, progress=False)

    python = build_torch_free_env(tmp_path / "venv")
    run = subprocess.run([str(python), "-c", SCORE, str(tmp_path / "export"), user, *map(str, images)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert got["missing"] == list(FORBIDDEN)  # none of them is installed, let alone imported
    np.testing.assert_allclose(got["ci_score"], expected["ci_score"], atol=1e-3)
    np.testing.assert_allclose(got["user_score"], expected["user_score"], atol=1e-3)
    assert got["trend_group"] == expected["trend_group"].tolist()
    # the researcher's API says in one line what to install
    load = subprocess.run([str(python), "-c", "import interest; interest.load(__import__('sys').argv[1])",
                           str(root / "model")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "pip install 'interest[research]'" in load.stderr.strip().splitlines()[-1]
    # and so does the command line, for the pipeline's commands
    cli = python.parent / "interest"
    train = subprocess.run([str(cli), "train", str(root), "--out", str(tmp_path / "m2")], capture_output=True,
                           text=True, timeout=120, cwd=tmp_path)
    assert train.returncode == 2 and train.stderr.strip().splitlines() == [
        train.stderr.strip()] and "pip install 'interest[research]'" in train.stderr, train.stderr
