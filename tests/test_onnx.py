"""Torch-free scoring: export, parity with the torch path, and no torch behind `import interest.onnx`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxmltools")

from apps_helpers import train_image_model  # noqa: E402

SCORE_COLUMNS = ["ci_score", "p_common", "p_interplay", "p_subjective", "user_score", "deviation"]


def test_import_never_loads_torch():
    code = (
        "import sys, interest.onnx, interest.onnx as o; "
        "print([m for m in ('torch', 'torchvision', 'open_clip', 'pandas', 'lightgbm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _parity(model, export_dir, images, user):
    import interest.onnx

    scorer = interest.onnx.load(export_dir, threads=1)
    assert scorer.users == model.users and scorer.backbone_id == model.backbone_id
    onnx_scores = pd.DataFrame(scorer.score(images, user=user))
    torch_scores = model.score(images, user=user, progress=False)
    assert onnx_scores["path"].tolist() == torch_scores["path"].tolist()
    for col in SCORE_COLUMNS:
        np.testing.assert_allclose(onnx_scores[col], torch_scores[col], atol=1e-3, err_msg=col)
    assert (onnx_scores["trend_group"].to_numpy() == torch_scores["trend_group"].to_numpy()).all()
    plain = scorer.score(images[:3])
    assert "user_score" not in plain
    np.testing.assert_allclose(plain["ci_score"], torch_scores["ci_score"][:3], atol=1e-3)
    return scorer, torch_scores


@pytest.fixture(scope="module")
def openclip_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_openclip")
    return root, train_image_model(root, backbone_id="openclip/ViT-S-32/none", n_users=30, n_photos=80, n_topics=4, clusters=8, seed=7)


def test_openclip_parity_via_cli(openclip_model, tmp_path):
    from typer.testing import CliRunner

    from interest.cli import app

    root, model = openclip_model
    out = tmp_path / "onnx"
    result = CliRunner().invoke(app, ["export-onnx", str(root / "model"), str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "interest-onnx.json").read_text())
    assert manifest["backbone"]["kind"] == "onnx" and (out / "backbone.onnx").is_file()
    images = sorted((root / "images").glob("*.jpg"))[:12]
    scorer, _ = _parity(model, out, images, model.users[1])

    from interest.imaging.images import load_image

    pil = [load_image(p) for p in images[:4]]
    np.testing.assert_allclose(scorer.embed(pil), model.backbone.embed(pil), atol=1e-4)


def test_perceptual_parity_and_bad_images(tmp_path):
    from interest.apps.export_onnx import export_onnx

    root = tmp_path / "world"
    model = train_image_model(root)
    images = sorted((root / "images").glob("*.jpg"))[:20]
    # a head made after training is exported too (10 liked photos: in this small world only the
    # 8-photo few-shot setting beats chance on validation, so fewer would leave alice at the common score)
    model.personalize("alice", images[:10])
    files = export_onnx(model, tmp_path / "onnx")
    assert {f.name for f in files} == {"heads.onnx", "interest-onnx.json"}  # perceptual/v1 is NumPy: no backbone file
    trained = next(u for u in model.users if np.abs(model.heads.weights_[model.heads._index[u]]).max() > 0)
    for user in (trained, "alice"):
        _, torch_scores = _parity(model, tmp_path / "onnx", images, user)
        assert torch_scores["deviation"].abs().max() > 1e-3  # the head is not trivially zero

    import interest.onnx
    from interest.core.errors import InterestError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    scorer = interest.onnx.load(tmp_path / "onnx")
    result = scorer.score([images[0], broken], errors="coerce")
    assert np.isnan(result["ci_score"][1]) and result["error"][1] and result["error"][0] is None
    with pytest.raises(InterestError, match="broken.jpg"):
        scorer.score([broken])
    with pytest.raises(InterestError, match="no head"):
        scorer.score([images[0]], user="nobody")
