"""Bundles by Hub name from a pre-filled cache, offline; Hub export; offline detection; backbone device and weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import interest
from interest.core import hub
from interest.apps import hub_export
from interest.core.errors import InterestError
from interest.imaging.backbones import PerceptualBackbone
from interest.imaging.perceptual import PERCEPTUAL_DIM
from interest.models.study import linear_model
from tests.image_files import jpeg_bytes, photo_like

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 for this test, and a fresh network verdict."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_state", {})


@pytest.fixture()
def bundle(tmp_path):
    """A small bundle: a linear head over the weight-free perceptual backbone, with trend groups."""
    rng = np.random.default_rng(1)
    model = linear_model(rng.normal(size=PERCEPTUAL_DIM), 0.5, backbone_id="perceptual/v1", raw=False,
                         group_cuts=(0.3, 0.7), preprocessing=PerceptualBackbone().preprocessing)
    model.save(tmp_path / "bundle")
    return tmp_path / "bundle"


def fill_cache(cache: Path, repo: str, folder: Path, commit: str = COMMIT) -> Path:
    """Lay ``folder``'s files out as huggingface_hub's cache does: models--ORG--NAME/{refs/main, snapshots/COMMIT}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(photo_like(96, 64, seed=i)))
    return sorted(folder.glob("*.jpg"))


def test_a_bundle_loads_by_hub_name_offline_from_the_cache(bundle, photos, tmp_path, offline):
    cache = tmp_path / "hf" / "hub"
    fill_cache(cache, "acme/interest-demo", bundle)
    local = interest.load(bundle).score(photos, progress=False)
    by_name = interest.load("hf-hub:acme/interest-demo", cache_dir=cache)
    assert by_name.name == "hf-hub:acme/interest-demo"
    scored = by_name.score(photos, progress=False)
    np.testing.assert_allclose(scored["ci_score"], local["ci_score"], atol=1e-6)
    assert list(scored["trend_group"]) == list(local["trend_group"])
    pinned = interest.load(f"hf-hub:acme/interest-demo@{COMMIT}", cache_dir=cache)
    np.testing.assert_allclose(pinned.score(photos, progress=False)["ci_score"], local["ci_score"], atol=1e-6)
    with pytest.raises(InterestError, match="read-only"):
        by_name.save("hf-hub:acme/interest-demo")


def test_a_bundle_missing_from_the_cache_is_one_line_at_once(tmp_path, offline):
    started = time.monotonic()
    with pytest.raises(InterestError, match="not in the Hugging Face cache") as info:
        interest.load("hf-hub:acme/nothing-here", cache_dir=tmp_path / "empty")
    assert time.monotonic() - started < 5 and "\n" not in str(info.value)
    with pytest.raises(InterestError, match="not a Hub bundle name"):
        interest.load("hf-hub:no-slash")


def test_cli_scores_with_a_hub_name(bundle, photos, tmp_path):
    fill_cache(tmp_path / "hf" / "hub", "acme/interest-demo", bundle)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "scores.csv"
    run = subprocess.run([sys.executable, "-m", "interest", "score", "hf-hub:acme/interest-demo", *map(str, photos),
                          "--out", str(out)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    want = interest.load(bundle).score(photos, progress=False)["ci_score"]
    np.testing.assert_allclose(pd.read_csv(out)["ci_score"], want, atol=1e-5)
    missing = subprocess.run([sys.executable, "-m", "interest", "score", "hf-hub:acme/absent", str(photos[0])],
                             capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr


def test_export_hub_writes_a_loadable_folder_with_a_model_card(bundle, photos, tmp_path, offline):
    out = tmp_path / "export"
    hub_export.export_hub(bundle, out, license="cc-by-nc-4.0")
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    fields = {line.split(":", 1)[0]: json.loads(line.split(":", 1)[1]) for line in front.strip().splitlines()}
    assert fields["license"] == "cc-by-nc-4.0" and fields["backbone"] == "perceptual/v1"
    assert {"intended_use", "data_provenance", "consent", "metrics"} <= set(fields)
    assert "consent" in fields["consent"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "direction_heads.npz", "linear_head.npz", "model.json"]
    fill_cache(tmp_path / "cache", "acme/exported", out)
    again = interest.load("hf-hub:acme/exported", cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(again.score(photos, progress=False)["ci_score"],
                               interest.load(bundle).score(photos, progress=False)["ci_score"], atol=1e-6)
    with pytest.raises(InterestError, match="not empty"):
        hub_export.export_hub(bundle, out)


def test_export_hub_names_the_collection_never_its_path(bundle, photos, tmp_path, offline):
    """A bundle written before collections were named keeps the trainer's paths in model.json: the export drops them."""
    meta = json.loads((bundle / "model.json").read_text())
    meta["data"] = {"collection": "/home/trainer/private/flickr-2024", "fingerprint": "sha256:0d0f70"}
    meta.setdefault("provenance", {})["group_cuts_from"] = {"collection": "C:\\Users\\trainer\\flickruser", "agreement": 0.9}
    (bundle / "model.json").write_text(json.dumps(meta))  # model.json is not among the checksummed parts
    out = tmp_path / "export"
    hub_export.export_hub(bundle, out)
    exported = json.loads((out / "model.json").read_text())
    assert exported["data"] == {"collection": "flickr-2024", "fingerprint": "sha256:0d0f70"}
    assert exported["provenance"]["group_cuts_from"]["collection"] == "flickruser"
    for name in ("model.json", "README.md"):
        text = (out / name).read_text()
        assert "trainer" not in text and str(tmp_path) not in text, name
    assert "Flickr favourites of collection flickr-2024" in (out / "README.md").read_text()
    np.testing.assert_allclose(interest.load(out).score(photos, progress=False)["ci_score"],
                               interest.load(bundle).score(photos, progress=False)["ci_score"], atol=1e-6)
    saved = interest.load(bundle)
    saved.save(bundle)  # and any save of such a bundle (a personalisation) drops them on disk too
    assert "trainer" not in (bundle / "model.json").read_text()


def test_an_unreachable_hub_is_detected_once_in_seconds(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_state", {})
    started = time.monotonic()
    assert hub.check_network(timeout=2.0) is False
    assert time.monotonic() - started < 3
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    assert hub.check_network() is False  # remembered: no second probe
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.hub_offline()


def test_offline_weights_fail_in_one_line_without_retries(tmp_path, photos):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    run = subprocess.run([sys.executable, "-m", "interest", "embed", str(photos[0].parent), "--out",
                          str(tmp_path / "col"), "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "not cached" in lines[0] and "ViT-B-32" in lines[0], run.stderr


def _checkpoint(tmp_path: Path, name: str, seed: int) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = open_clip.create_model("ViT-S-32", pretrained=None)
    path = tmp_path / "ckpt" / f"{name}.safetensors"
    path.parent.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_a_bundle_on_a_local_checkpoint_finds_or_is_given_its_weights(tmp_path, photos, monkeypatch):
    from interest.imaging.backbones import load_openclip

    monkeypatch.delenv("INTEREST_CHECKPOINTS", raising=False)
    path = _checkpoint(tmp_path, "mynet", seed=1)
    backbone = load_openclip("ViT-S-32", str(path))
    assert backbone.id == "openclip/ViT-S-32/mynet"
    assert len(backbone.preprocessing["checkpoint_sha256"]) == 64
    rng = np.random.default_rng(2)
    weight = rng.normal(size=backbone.dim)
    linear_model(weight, 0.0, backbone_id=backbone.id, raw=False,
                 preprocessing=backbone.preprocessing).save(tmp_path / "bundle")
    from interest.imaging.images import load_image

    want = backbone.embed([load_image(p) for p in photos]) @ weight

    with pytest.raises(InterestError, match="local checkpoint name"):
        interest.load(tmp_path / "bundle").score(photos, progress=False)
    found = interest.load(tmp_path / "bundle", cache_dir=path.parent).score(photos, progress=False)
    np.testing.assert_allclose(found["ci_score"], want, atol=1e-4)
    given = interest.load(tmp_path / "bundle", weights=path).score(photos, progress=False)
    np.testing.assert_allclose(given["ci_score"], want, atol=1e-4)
    monkeypatch.setenv("INTEREST_CHECKPOINTS", str(path.parent))
    env_found = interest.load(tmp_path / "bundle").score(photos, progress=False)
    np.testing.assert_allclose(env_found["ci_score"], want, atol=1e-4)
    other = _checkpoint(tmp_path, "othernet", seed=2)
    with pytest.raises(InterestError, match="not the one .* was trained on"):
        interest.load(tmp_path / "bundle", weights=other).score(photos, progress=False)
    with pytest.raises(InterestError, match="precision 'fp8'"):
        interest.load(tmp_path / "bundle", precision="fp8")


def _accelerators() -> list[str]:
    import torch

    found = ["cuda"] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found or ["none"]


@pytest.mark.parametrize("device", _accelerators())
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_scores_on_an_accelerator_match_the_cpu(device, precision, tmp_path, photos):
    if device == "none":
        pytest.skip("no CUDA or MPS device")
    from interest.imaging.backbones import load_openclip

    path = _checkpoint(tmp_path, "acc", seed=3)
    backbone = load_openclip("ViT-S-32", str(path))
    weight = np.random.default_rng(4).normal(size=backbone.dim)
    linear_model(weight, 0.0, backbone_id=backbone.id, raw=False,
                 preprocessing=backbone.preprocessing).save(tmp_path / "bundle")
    cpu = interest.load(tmp_path / "bundle", weights=path).score(photos, progress=False)
    model = interest.load(tmp_path / "bundle", weights=path, device=device, precision=precision)
    got = model.score(photos, progress=False)
    assert model.backbone.device.startswith(device)
    np.testing.assert_allclose(got["ci_score"], cpu["ci_score"], atol=1e-3 if precision == "fp32" else 5e-2)


def test_a_tag_bundle_accepts_its_weights_as_a_file(tmp_path, photos):
    from interest.imaging.backbones import load_openclip

    path = _checkpoint(tmp_path, "downloaded", seed=5)
    backbone = load_openclip("ViT-S-32", str(path))
    # a bundle over a backbone named by its tag, with that tag's preprocessing (no file hash)
    preprocessing = {k: v for k, v in backbone.preprocessing.items() if k != "checkpoint_sha256"}
    weight = np.random.default_rng(6).normal(size=backbone.dim)
    linear_model(weight, 0.0, backbone_id="openclip/ViT-S-32/sometag", raw=False,
                 preprocessing=preprocessing).save(tmp_path / "bundle")
    from interest.imaging.images import load_image

    want = backbone.embed([load_image(p) for p in photos]) @ weight
    model = interest.load(tmp_path / "bundle", weights=path)
    np.testing.assert_allclose(model.score(photos, progress=False)["ci_score"], want, atol=1e-4)
    assert model.backbone.id == "openclip/ViT-S-32/sometag"
