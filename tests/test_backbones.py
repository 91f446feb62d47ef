"""interest.imaging.backbones: perceptual/v1 and open_clip backbones, ids and missing weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from image_files import photo_like
from PIL import Image

from interest.core.errors import InterestError
from interest.imaging.backbones import (
    backbone_id_for,
    load_backbone,
    load_openclip,
)
from interest.imaging.images import load_image
from interest.imaging.perceptual import PERCEPTUAL_DIM

SMALL_CLIP = "ViT-S-32"  # the smallest open_clip architecture: about a second to build on one core


@pytest.fixture(scope="module")
def clip():
    return load_backbone(f"openclip/{SMALL_CLIP}/none")


def test_backbone_ids():
    assert backbone_id_for("ViT-B-32", "laion2b_s34b_b79k") == "openclip/ViT-B-32/laion2b_s34b_b79k"
    assert backbone_id_for("ViT-B-32", None) == "openclip/ViT-B-32/none"
    assert backbone_id_for("ViT-B-32", "none") == "openclip/ViT-B-32/none"
    assert backbone_id_for("ViT-L-14", "/models/My Finetune.safetensors") == "openclip/ViT-L-14/My-Finetune"
    assert backbone_id_for("hf-hub:laion/CLIP-ViT-B-32", None) == "openclip/hf-hub:laion/CLIP-ViT-B-32"


def test_perceptual_vectors_are_normalised_and_deterministic():
    backbone = load_backbone("perceptual/v1")
    images = [photo_like(seed=s) for s in range(3)] + [Image.new("RGB", (50, 40), (128, 128, 128))]
    emb = backbone.embed(images)
    assert emb.shape == (4, PERCEPTUAL_DIM) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    assert np.array_equal(emb, backbone.embed(images))
    # A photo's vector does not depend on the others in its batch.
    assert np.array_equal(emb[1:2], backbone.embed(images[1:2]))


def test_perceptual_backbone_needs_no_torch():
    code = (
        "import sys; from PIL import Image; from interest.imaging.backbones import load_backbone; "
        "b = load_backbone('perceptual/v1'); b.embed([Image.new('RGB', (64, 48), (10, 200, 30))]); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_perceptual_sees_topic_and_appeal(rendered_world):
    """On rendered synthetic photos, k-means finds the topics and a ridge reads the appeal."""
    from scipy.stats import spearmanr
    from sklearn.cluster import KMeans
    from sklearn.linear_model import Ridge
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import cross_val_predict

    photos = pd.read_parquet(rendered_world / "photos.parquet")
    truth = pd.read_parquet(rendered_world / "ground_truth" / "photos.parquet").set_index("photo_id")
    truth = truth.loc[photos["photo_id"]]
    backbone = load_backbone("perceptual/v1")
    emb = backbone.embed([load_image(rendered_world / p) for p in photos["path"]])
    k = truth["topic"].nunique()
    clusters = KMeans(k, n_init=10, random_state=0).fit_predict(emb)
    assert adjusted_rand_score(truth["topic"], clusters) > 0.9
    predicted = cross_val_predict(Ridge(alpha=0.1), emb, truth["common_appeal"], cv=5)
    assert spearmanr(predicted, truth["common_appeal"])[0] > 0.8


def test_openclip_random_weights_warn_and_agree_across_loads(clip, capsys):
    again = load_openclip(SMALL_CLIP, "none")
    assert "RANDOM weights" in capsys.readouterr().err
    assert clip.id == f"openclip/{SMALL_CLIP}/none" and clip.dim == 384 and clip.random_weights
    images = [photo_like(seed=s) for s in range(3)]
    a, b = clip.embed(images), again.embed(images)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(a, b, atol=1e-6)  # seeded: the same random model in every process


def test_openclip_batched_equals_single(clip):
    images = [photo_like(seed=s) for s in range(5)]
    batched = clip.embed(images)
    single = np.concatenate([clip.embed([img]) for img in images])
    assert np.abs(batched - single).max() < 1e-5
    assert clip.preprocessing["size"] == [224, 224] and clip.preprocessing["kind"] == "openclip"


def test_openclip_text_tower(clip):
    text = clip.encode_text(["a photo of a dog", "a photo of a cat"])
    assert text.shape == (2, 384)
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert not np.allclose(text[0], text[1])


def test_local_checkpoint_path(clip, tmp_path):
    import torch

    path = tmp_path / "my_finetune.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = load_openclip(SMALL_CLIP, str(path))
    assert loaded.id == f"openclip/{SMALL_CLIP}/my_finetune" and not loaded.random_weights
    images = [photo_like(seed=9)]
    assert np.allclose(loaded.embed(images), clip.embed(images), atol=1e-6)
    # By id, the checkpoint is found in the cache folder; elsewhere the message says how to give it.
    again = load_backbone(loaded.id, cache_dir=str(tmp_path))
    assert np.allclose(again.embed(images), clip.embed(images), atol=1e-6)
    with pytest.raises(InterestError, match="--pretrained PATH"):
        load_backbone(loaded.id, cache_dir=str(tmp_path / "elsewhere"))


@pytest.mark.parametrize(
    "backbone_id, match",
    [
        ("synthetic/d64", "no image backbone"),
        ("perceptual/v9", "unknown perceptual version"),
        ("resnet/foo", "unknown backbone id"),
        ("openclip/NoSuchModel/none", "not an open_clip model"),
        (f"openclip/{SMALL_CLIP}/", "expected openclip"),
    ],
)
def test_bad_backbone_ids(backbone_id, match):
    with pytest.raises(InterestError, match=match):
        load_backbone(backbone_id)


def test_unknown_tag_and_missing_checkpoint():
    with pytest.raises(InterestError, match="not a pretrained tag of ViT-B-32"):
        load_openclip("ViT-B-32", "laion9b_nonsense")
    with pytest.raises(InterestError, match="checkpoint file not found"):
        load_openclip("ViT-B-32", "/no/such/weights.pt")


def test_missing_weights_give_one_line_and_exit_2(tmp_path):
    """No internet and an empty cache: one line that says how to provide the weights, no traceback."""
    (tmp_path / "data").mkdir()
    photo_like().save(tmp_path / "data" / "a.jpg")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    cli = Path(sys.executable).with_name("interest")
    out = subprocess.run(
        [str(cli), "embed", str(tmp_path / "data"), "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k",
         "--out", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr
    assert "openclip/ViT-B-32/laion2b_s34b_b79k" in errors[0]
    assert "--cache-dir" in errors[0] and "HF_HOME" in errors[0] and "--pretrained PATH" in errors[0]
