"""interest.stages.characterize: measures on constructed images, zero-shot sets, aesthetic head."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from image_files import jpeg_bytes, photo_like
from PIL import Image, ImageFilter

from interest.core.collection import read_manifest, read_table, write_table
from interest.core.errors import InterestError
from interest.stages.characterize import (
    EMOTIONS,
    MEASURES,
    STYLES,
    aesthetic_proxy,
    characterize,
    load_prompts,
    perceptual_measures,
)
from interest.pipeline.local import embed_collection

REPO = Path(__file__).resolve().parents[1]


def grey_image(values: np.ndarray) -> Image.Image:
    """An RGB image whose three channels all equal ``values`` (floats in [0, 1])."""
    levels = np.clip(np.round(values * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([levels] * 3, axis=2), "RGB")


def test_flat_grey_has_no_contrast_colour_sharpness_noise_or_entropy():
    m = perceptual_measures(grey_image(np.full((64, 64), 0.5)))
    assert m["brightness"] == pytest.approx(128 / 255, abs=1e-6)
    for name in ("contrast", "colourfulness", "saturation", "sharpness", "noise", "entropy", "dynamic_range",
                 "highlights", "shadows", "warmth", "edge_density"):
        assert m[name] == pytest.approx(0.0, abs=1e-9), name


def test_black_and_white_halves():
    values = np.zeros((64, 64))
    values[:, 32:] = 1.0
    m = perceptual_measures(grey_image(values))
    assert m["brightness"] == pytest.approx(0.5, abs=1e-6)
    assert m["contrast"] == pytest.approx(0.5, abs=1e-6)
    assert m["entropy"] == pytest.approx(1.0, abs=1e-9)
    assert (m["highlights"], m["shadows"], m["dynamic_range"]) == pytest.approx((0.5, 0.5, 1.0))
    assert m["edge_density"] == pytest.approx(2 / 62, abs=1e-6)  # the two interior columns beside the edge


def test_pure_red_colourfulness_saturation_warmth():
    m = perceptual_measures(Image.new("RGB", (40, 40), (255, 0, 0)))
    # Hasler-Suesstrunk: rg = 255, yb = 127.5, no spread: 0.3 * |(255, 127.5)|.
    assert m["colourfulness"] == pytest.approx(0.3 * math.hypot(255, 127.5), rel=1e-6)
    assert m["saturation"] == pytest.approx(1.0)
    assert m["warmth"] == pytest.approx(1.0)
    assert m["brightness"] == pytest.approx(0.299, abs=1e-6)


def test_noise_and_sharpness_of_white_noise_match_theory():
    sigma = 0.05
    rng = np.random.default_rng(0)
    noisy = 0.5 + rng.normal(0, sigma, (256, 256))
    m = perceptual_measures(grey_image(noisy))
    assert m["noise"] == pytest.approx(sigma, rel=0.05)  # Immerkaer's estimator is unbiased for white noise
    assert m["sharpness"] == pytest.approx(20 * sigma**2, rel=0.05)  # Laplacian weights: 4 * 1 + 16
    levels = np.round(np.clip(noisy, 0, 1) * 255) / 255
    assert m["contrast"] == pytest.approx(levels.std(), rel=1e-4)


def test_large_images_are_measured_downscaled():
    small = perceptual_measures(photo_like(300, 256))
    large = perceptual_measures(photo_like(300, 256).resize((600, 512), Image.BICUBIC))
    assert large["brightness"] == pytest.approx(small["brightness"], abs=0.01)
    assert large["contrast"] == pytest.approx(small["contrast"], rel=0.05)


def test_aesthetic_proxy_prefers_a_well_taken_photo():
    good = photo_like(256, 192, seed=1)
    washed = Image.blend(good.filter(ImageFilter.GaussianBlur(2)), Image.new("RGB", good.size, (200, 200, 200)), 0.5)
    rng = np.random.default_rng(1)
    noisy = np.asarray(washed, dtype=float) + rng.normal(0, 12, (192, 256, 1))
    bad = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    table = pd.DataFrame([perceptual_measures(good), perceptual_measures(bad)])
    proxy = aesthetic_proxy(table)
    assert 0 < proxy[1] < proxy[0] < 1


def test_prompts_shipped_and_config_copy_agree_and_are_checked(tmp_path):
    shipped = load_prompts()
    assert list(shipped["emotions"]) == list(EMOTIONS) and list(shipped["styles"]) == list(STYLES)
    assert load_prompts(REPO / "configs" / "prompts.yaml") == shipped
    broken = tmp_path / "p.yaml"
    broken.write_text("emotions:\n  awe: [wow]\nstyles: {}\n")
    with pytest.raises(InterestError, match="exactly the categories"):
        load_prompts(broken)


@pytest.fixture()
def small_collection(tmp_path):
    root = tmp_path / "c"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(4):
        (root / "images" / f"p{i}.jpg").write_bytes(jpeg_bytes(photo_like(96, 64, seed=i)))
        rows.append((f"p{i}", f"images/p{i}.jpg"))
    (root / "images" / "bad.jpg").write_bytes(b"")
    rows.append(("bad", "images/bad.jpg"))
    write_table(root, "photos", pd.DataFrame(rows, columns=["photo_id", "path"]))
    return root


def test_without_a_text_tower_zero_shot_is_skipped_with_a_note(small_collection, caplog):
    embed_collection(small_collection, backbone_id="perceptual/v1", workers=0, progress=False)
    with caplog.at_level(logging.WARNING, logger="interest.stages.characterize"):
        path = characterize(small_collection, workers=0, progress=False)
    assert "no CLIP text tower" in caplog.text
    table = read_table(small_collection, "characteristics").set_index("photo_id")
    assert path.name == "characteristics.parquet"
    assert not any(c.startswith(("emotion_", "style_")) for c in table.columns)
    assert set(MEASURES) <= set(table.columns) and "aesthetic_proxy" in table.columns
    assert table.loc["bad", list(MEASURES)].isna().all() and table.loc["p0", list(MEASURES)].notna().all()
    assert "skipped" in read_manifest(small_collection)["tables"]["characteristics"]["zero_shot"]


def test_clip_zero_shot_scores_sum_to_one(small_collection):
    characterize(small_collection, clip="ViT-S-32/none", device="cpu", workers=0, progress=False)
    table = read_table(small_collection, "characteristics").set_index("photo_id")
    assert (small_collection / "features" / "openclip" / "ViT-S-32" / "none" / "embeddings.parquet").is_file()
    ok = table.drop(index="bad")
    for prefix, names, main in (("emotion_", EMOTIONS, "main_emotion"), ("style_", STYLES, "main_style")):
        scores = ok[[prefix + n for n in names]].to_numpy()
        assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-9) and (scores > 0).all()
        assert list(ok[main]) == [names[j] for j in scores.argmax(axis=1)]
    assert table.loc["bad", "main_emotion"] is pd.NA
    assert read_manifest(small_collection)["tables"]["characteristics"]["zero_shot"] == "openclip/ViT-S-32/none"


def test_aesthetic_head_replaces_the_proxy(small_collection, tmp_path):
    from interest.core.collection import read_embeddings

    embed_collection(small_collection, backbone_id="perceptual/v1", workers=0, progress=False)
    _, ids, emb = read_embeddings(small_collection, "perceptual/v1")
    weight = np.linspace(-1, 1, emb.shape[1])
    head = tmp_path / "head.npz"
    np.savez(head, weight=weight, bias=np.array(0.25), backbone_id=np.array("perceptual/v1"))
    characterize(small_collection, aesthetic_head=head, workers=0, progress=False)
    table = read_table(small_collection, "characteristics").set_index("photo_id")
    assert "aesthetic_proxy" not in table.columns
    assert np.allclose(table.loc[list(ids), "aesthetic_score"], emb @ weight + 0.25)
    np.savez(head, weight=weight[:10], bias=np.array(0.0), backbone_id=np.array("perceptual/v1"))
    with pytest.raises(InterestError, match="head fitted on this backbone"):
        characterize(small_collection, aesthetic_head=head, workers=0, progress=False)


class _LaionMLP(__import__("torch").nn.Module):
    """The LAION "improved aesthetic predictor": Linear layers with Dropout between, no activations."""

    def __init__(self, dim: int) -> None:
        import torch

        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 16), torch.nn.Dropout(0.2),
            torch.nn.Linear(16, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 4), torch.nn.Linear(4, 1),
        )

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize("form", ["linear", "mlp"])
def test_laion_aesthetic_heads_load_safely_and_score_as_in_torch(small_collection, tmp_path, form):
    import torch

    from interest.core.collection import read_embeddings
    from interest.stages.characterize import load_aesthetic_head

    embed_collection(small_collection, backbone_id="perceptual/v1", workers=0, progress=False)
    _, ids, emb = read_embeddings(small_collection, "perceptual/v1")
    torch.manual_seed(0)
    net = torch.nn.Linear(emb.shape[1], 1) if form == "linear" else _LaionMLP(emb.shape[1])
    net.eval()
    path = tmp_path / f"{form}.pth"
    torch.save(net.state_dict(), path)
    with torch.no_grad():
        want = net(torch.from_numpy(emb)).numpy().ravel()
    backbone, weight, bias = load_aesthetic_head(path)
    assert backbone == "openclip/ViT-L-14/openai"
    assert load_aesthetic_head(path, "perceptual/v1")[0] == "perceptual/v1"
    np.testing.assert_allclose(emb.astype(np.float64) @ weight + bias, want, atol=1e-5)
    # in characterize it replaces the proxy, over the CLIP ViT-L/14 embeddings it was fitted on
    from interest.core.collection import write_embeddings

    clip = np.random.default_rng(3).normal(size=(len(ids), emb.shape[1])).astype(np.float32)
    write_embeddings(small_collection, backbone, ids, clip)
    characterize(small_collection, backbone="perceptual/v1", aesthetic_head=path, workers=0, progress=False)
    table = read_table(small_collection, "characteristics").set_index("photo_id")
    assert "aesthetic_proxy" not in table.columns
    with torch.no_grad():
        unit = clip / np.linalg.norm(clip, axis=1, keepdims=True)
        np.testing.assert_allclose(table.loc[list(ids), "aesthetic_score"], net(torch.from_numpy(unit)).numpy().ravel(),
                                   atol=1e-5)
    # a state dict of something else is refused in one line naming the key
    torch.save({"layers.0.weight": torch.zeros(4, emb.shape[1]), "layers.0.bias": torch.zeros(4),
                "head.scale": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(InterestError, match="unexpected key 'head.scale'"):
        load_aesthetic_head(tmp_path / "other.pth")
    torch.save({"weight": torch.zeros(3, emb.shape[1]), "bias": torch.zeros(3)}, tmp_path / "three.pth")
    with pytest.raises(InterestError, match="3 outputs"):
        load_aesthetic_head(tmp_path / "three.pth")
