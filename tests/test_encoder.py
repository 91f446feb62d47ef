"""The onnxruntime image encoder: exact against torch eager, cached, rebuilt when damaged, int8 kept apart."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from apps_helpers import run_cli
from PIL import Image

from interest.core.errors import InterestError
from interest.imaging import onnx_encoder
from interest.imaging.backbones import load_backbone

SMALL_CLIP = "ViT-S-32"
SIZE = (32, 32)


class TinyTower(torch.nn.Module):
    """A model with open_clip's encode_image: exports in a fraction of a second, for the cache's behaviour."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            self.visual = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.GELU(),
                                              torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 16))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTEREST_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six 640x480 JPEGs: smooth colour fields with noise, each different."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640] / 480.0
    for i in range(6):
        base = np.stack([np.sin(xx * (i + 1)), np.cos(yy * (i + 2)), np.sin((xx + yy) * 3 + i)], axis=-1)
        pixels = np.clip(127 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{i}.jpg", quality=90)
    return folder


def _folder(cache_root) -> "object":
    (folder,) = (cache_root / "encoders").iterdir()
    return folder


def test_onnx_encoder_is_the_cpu_default_and_exact(photos):
    auto = load_backbone(f"openclip/{SMALL_CLIP}/none", device="cpu")
    eager = load_backbone(f"openclip/{SMALL_CLIP}/none", device="cpu", encoder="torch")
    assert auto.encoder == "onnxruntime-fp32" and eager.encoder == "torch"
    assert auto.id == eager.id and auto.preprocessing == eager.preprocessing  # one space: the cache is shared
    images = [Image.open(p).convert("RGB") for p in sorted(photos.glob("*.jpg"))]
    cosines = np.sum(auto.embed(images) * eager.embed(images), axis=1)
    assert cosines.min() >= 0.99999, cosines
    raw_ratio = np.linalg.norm(auto.embed_raw(images), axis=1) / np.linalg.norm(eager.embed_raw(images), axis=1)
    np.testing.assert_allclose(raw_ratio, 1.0, atol=1e-4)  # raw features too (the norm column)


def test_export_is_cached_and_reused(tmp_path):
    net = TinyTower()
    first, record = onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)
    assert first is not None and record["exact"] and record["min_cosine"] >= onnx_encoder.EXACT_COSINE
    folder = _folder(tmp_path / "cache")
    path = folder / "visual-fp32.onnx"
    stamp = path.stat().st_mtime_ns
    assert json.loads((folder / "encoder.json").read_text())["fp32_bytes"] == path.stat().st_size
    again, _ = onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)
    assert again is not None and path.stat().st_mtime_ns == stamp  # no second export
    # other weights are another key, another file
    with torch.no_grad():
        net.visual[3].bias.add_(1.0)
    onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)
    assert len(list((tmp_path / "cache" / "encoders").iterdir())) == 2


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_cached_export_is_rebuilt(tmp_path, damage):
    net = TinyTower()
    onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)
    path = _folder(tmp_path / "cache") / "visual-fp32.onnx"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3] if damage == "truncate" else b"\x00not an onnx model" * 50)
    encoder, record = onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)
    assert encoder is not None and record["exact"] and path.stat().st_size == len(good)
    x = torch.randn(3, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net.encode_image(x).numpy()
    assert onnx_encoder.row_cosines(encoder(x.numpy()), expected).min() >= onnx_encoder.EXACT_COSINE


def test_inexact_export_falls_back_to_eager_with_one_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(onnx_encoder, "EXACT_COSINE", 1.5)  # no export can reach it
    net = TinyTower()
    with caplog.at_level(logging.WARNING, logger="interest.imaging.onnx_encoder"):
        encoder, record = onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)
    assert encoder is None and record["exact"] is False and 0.99999 < record["min_cosine"] <= 1.0 + 1e-6
    assert len(caplog.records) == 1 and "torch eager" in caplog.records[0].getMessage()
    stamp = (_folder(tmp_path / "cache") / "visual-fp32.onnx").stat().st_mtime_ns
    assert onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)[0] is None  # remembered, not exported again
    assert (_folder(tmp_path / "cache") / "visual-fp32.onnx").stat().st_mtime_ns == stamp


def test_int8_measures_its_agreement_and_survives_pickling(tmp_path):
    import pickle

    net = TinyTower()
    int8, _ = onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE, int8=True)
    assert int8.path.name == "visual-int8.onnx" and int8.agreement.n == 0
    x = torch.randn(5, 3, *SIZE, generator=torch.Generator().manual_seed(2)).numpy()
    features = int8(x)
    fp32, _ = onnx_encoder.onnx_image_encoder(net, "test/tiny", SIZE)
    expected = onnx_encoder.row_cosines(features, fp32(x))
    np.testing.assert_allclose(int8.agreement.cosines, expected, atol=1e-6)
    assert int8.agreement.n == 5 and "on 5 of the photos embedded" in int8.agreement.summary()
    copy = pickle.loads(pickle.dumps(int8))  # a spawned decoder process gets the backbone pickled
    np.testing.assert_allclose(copy(x), features, atol=1e-6)


def test_cli_int8_is_kept_apart_and_reports_agreement(photos, tmp_path, monkeypatch, capsys):
    out = tmp_path / "collection"
    common = ("--model", SMALL_CLIP, "--pretrained", "none", "--out", out, "--workers", "0", "--no-progress")
    code, _, err = run_cli(monkeypatch, capsys, "embed", photos, *common)
    assert code == 0, err
    fp32_table = out / "features" / "openclip" / SMALL_CLIP / "none" / "embeddings.parquet"
    before = fp32_table.read_bytes()
    export = _folder(tmp_path / "cache") / "visual-fp32.onnx"
    stamp = export.stat().st_mtime_ns
    code, stdout, err = run_cli(monkeypatch, capsys, "embed", photos, *common, "--precision", "int8")
    assert code == 0, err
    assert export.stat().st_mtime_ns == stamp  # the second load reused the cached export (and quantised it)
    assert fp32_table.read_bytes() == before  # the fp32 embeddings table is untouched
    int8_table = out / "features" / "openclip" / SMALL_CLIP / "none@int8" / "embeddings.parquet"
    assert pq.read_metadata(int8_table).num_rows == 6
    line = [x for x in stdout.splitlines() if x.startswith("int8 agrees with fp32")]
    assert len(line) == 1 and "on 6 of the photos embedded" in line[0], stdout
    mean = float(line[0].split("mean cosine ")[1].split()[0])
    fp32 = np.stack(pq.read_table(fp32_table).column("embedding").to_numpy(zero_copy_only=False))
    int8 = np.stack(pq.read_table(int8_table).column("embedding").to_numpy(zero_copy_only=False))
    # random weights quantise worse than trained ones (0.982 with onnxruntime 1.32, over 0.99 with earlier
    # releases); the bound only says int8 stays close: the figure on real weights is in BENCHMARKS.md
    assert mean == pytest.approx(float(np.mean(np.sum(fp32 * int8, axis=1))), abs=2e-4) and mean > 0.95
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tables"][f"features/openclip/{SMALL_CLIP}/none@int8"]["preprocessing"]["encoder"] == \
        "onnxruntime-int8-dynamic"
    # the int8 id loads at int8 by itself (a model trained on it gets the same encoder back)
    assert load_backbone(f"openclip/{SMALL_CLIP}/none@int8").encoder == "onnxruntime-int8"


@pytest.mark.parametrize("args, blocked, fragments", [
    (("--encoder", "onnx"), "onnxruntime", ("--encoder onnx needs onnxruntime", "pip install 'interest[onnx]'")),
    (("--precision", "int8"), "onnx", ("--precision int8", "needs onnx", "pip install 'interest[export]'")),
    (("--encoder", "torch", "--precision", "int8"), None, ("precision int8 runs onnxruntime on the CPU",)),
    (("--encoder", "onnx", "--device", "cuda"), None, ("--encoder onnx runs on the CPU",)),
    (("--encoder", "onnx", "--precision", "fp16"), None, ("fp16 is torch autocast", "--encoder torch")),
])
def test_cli_encoder_errors_are_one_line(photos, tmp_path, monkeypatch, capsys, args, blocked, fragments):
    if blocked:
        monkeypatch.setitem(sys.modules, blocked, None)  # as if the extra were not installed
    code, _, err = run_cli(monkeypatch, capsys, "embed", photos, "--model", SMALL_CLIP, "--pretrained", "none",
                        "--out", tmp_path / "c", "--workers", "0", *args)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not (tmp_path / "c").exists()  # refused before any work


def test_auto_without_onnxruntime_stays_on_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    backbone = load_backbone(f"openclip/{SMALL_CLIP}/none", device="cpu")
    assert backbone.encoder == "torch" and backbone.image_encoder is None
    with pytest.raises(InterestError, match="interest\\[onnx\\]"):
        load_backbone(f"openclip/{SMALL_CLIP}/none", device="cpu", encoder="onnx")
