"""interest.pipeline.local (the embed stage): bad files recorded and skipped, cache hits, resumption, folders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from image_files import bad_corpus, jpeg_bytes, photo_like, save_with_orientation

from interest.core.collection import read_embeddings, read_manifest, read_table, write_table
from interest.core.errors import InterestError
from interest.imaging.backbones import PerceptualBackbone, load_backbone
from interest.pipeline.local import embed_collection, embed_folder, embed_paths
from interest.pipeline.writer import record_photo_status
from interest.imaging.images import load_image


class CountingPerceptual(PerceptualBackbone):
    """The real perceptual backbone, counting the images it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded = 0

    def encode_raw(self, batch):
        self.encoded += len(batch)
        return super().encode_raw(batch)


def make_collection(root: Path, n_good: int = 6, bad: bool = True) -> dict[str, str]:
    """A collection of good JPEGs, optionally the bad corpus, a missing file and an undownloaded photo."""
    (root / "images").mkdir(parents=True)
    rows, expected = [], {}
    for i in range(n_good):
        (root / "images" / f"g{i}.jpg").write_bytes(jpeg_bytes(photo_like(80, 60, seed=i)))
        rows.append((f"g{i}", f"images/g{i}.jpg"))
        expected[f"g{i}"] = "ok"
    if bad:
        for name, reason in bad_corpus(root / "images").items():
            pid = "bad_" + name.split(".")[0]
            rows.insert(2, (pid, f"images/{name}"))  # between good photos: must not shift them
            expected[pid] = reason
        rows.append(("gone", "images/gone.jpg"))
        expected["gone"] = "file_not_found"
        rows.append(("not_downloaded", None))
    write_table(root, "photos", pd.DataFrame(rows, columns=["photo_id", "path"]))
    return expected


def test_bad_files_are_recorded_and_skipped(tmp_path):
    expected = make_collection(tmp_path / "c")
    path = embed_collection(tmp_path / "c", backbone_id="perceptual/v1", workers=0, batch_size=4, progress=False)
    photos = read_table(tmp_path / "c", "photos").set_index("photo_id")
    for pid, reason in expected.items():
        if reason == "ok":
            assert photos.loc[pid, "status"] == "ok" and pd.isna(photos.loc[pid, "status_reason"])
        elif reason == "file_not_found":
            assert photos.loc[pid, "status"] == "missing" and photos.loc[pid, "status_reason"] == reason
        else:
            assert photos.loc[pid, "status"] == "bad_image", pid
            assert photos.loc[pid, "status_reason"] == reason, pid
    assert pd.isna(photos.loc["not_downloaded", "status"])
    assert photos.loc["g0", "sha256"] is not pd.NA and len(photos.loc["g0", "sha256"]) == 64

    backbone_id, ids, emb = read_embeddings(tmp_path / "c")
    assert backbone_id == "perceptual/v1" and path.name == "embeddings.parquet"
    assert list(ids) == [f"g{i}" for i in range(6)]
    direct = PerceptualBackbone().embed([load_image(tmp_path / "c" / "images" / f"g{i}.jpg") for i in range(6)])
    assert np.abs(emb - direct).max() < 1e-6  # one bad file shifts nothing (reading renormalises: float rounding)

    # A collection without the bad files gives the same embeddings.
    make_collection(tmp_path / "clean", bad=False)
    embed_collection(tmp_path / "clean", backbone_id="perceptual/v1", workers=1, batch_size=3, progress=False)
    assert np.array_equal(read_embeddings(tmp_path / "clean")[2], emb)


def test_second_run_is_a_cache_hit_and_a_changed_file_is_redone(tmp_path):
    root = tmp_path / "c"
    make_collection(root, n_good=5, bad=False)
    backbone = CountingPerceptual()
    path = embed_collection(root, backbone=backbone, workers=0, progress=False)
    assert backbone.encoded == 5
    first = path.read_bytes()
    embed_collection(root, backbone=backbone, workers=0, progress=False)
    assert backbone.encoded == 5  # nothing embedded again
    entry = read_manifest(root)["tables"]["features/perceptual/v1"]
    assert (entry["embedded"], entry["cached"], entry["rows"]) == (0, 5, 5)
    assert path.read_bytes() == first

    (root / "images" / "g3.jpg").write_bytes(jpeg_bytes(photo_like(80, 60, seed=99)))
    embed_collection(root, backbone=backbone, workers=0, progress=False)
    assert backbone.encoded == 6
    _, ids, emb = read_embeddings(root)
    new = PerceptualBackbone().embed([load_image(root / "images" / "g3.jpg")])[0]
    assert np.abs(emb[3] - new).max() < 1e-6 and float(emb[3] @ new) > float(emb[2] @ new)


def test_killed_run_resumes_to_identical_output(rendered_world, tmp_path):
    def copy(dest: Path) -> Path:
        dest.mkdir()
        shutil.copy(rendered_world / "photos.parquet", dest / "photos.parquet")
        shutil.copytree(rendered_world / "images", dest / "images")
        return dest

    killed, clean = copy(tmp_path / "killed"), copy(tmp_path / "clean")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = Path(sys.executable).with_name("interest")
    proc = subprocess.Popen(
        [str(cli), "embed", str(killed), "--backbone", "perceptual/v1", "--workers", "0", "--batch-size", "4",
         "--part-size", "8", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    parts = killed / "features" / "perceptual" / "v1" / "parts"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3 and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    written = len(list(parts.glob("part-*.parquet")))
    assert written >= 3 and not (killed / "features" / "perceptual" / "v1" / "embeddings.parquet").exists()

    backbone = CountingPerceptual()
    embed_collection(killed, backbone=backbone, workers=0, progress=False)
    entry = read_manifest(killed)["tables"]["features/perceptual/v1"]
    assert entry["cached"] >= 8 * written and backbone.encoded == 300 - entry["cached"]
    assert not parts.exists()
    embed_collection(clean, backbone_id="perceptual/v1", workers=0, progress=False)
    a, b = read_embeddings(killed), read_embeddings(clean)
    assert list(a[1]) == list(b[1]) and np.array_equal(a[2], b[2])


def test_exif_rotated_file_embeds_like_the_upright_one(tmp_path):
    clip = load_backbone("openclip/ViT-S-32/none")
    upright = photo_like(120, 80, seed=5)
    upright.save(tmp_path / "upright.png")
    save_with_orientation(upright, tmp_path / "rotated.png", 6)
    upright.save(tmp_path / "upright.jpg", quality=95)
    save_with_orientation(upright, tmp_path / "rotated.jpg", 8, fmt="JPEG")
    files = [tmp_path / n for n in ("upright.png", "rotated.png", "upright.jpg", "rotated.jpg")]
    emb, reasons = embed_paths(files, clip, batch_size=2)
    assert reasons == [None] * 4
    assert np.abs(emb[0] - emb[1]).max() < 1e-6
    assert float(emb[2] @ emb[3]) > 0.99  # JPEG: the same picture, compressed in another orientation
    # Batched through worker processes, and one image at a time, agree.
    single, _ = embed_paths(files, clip, batch_size=1, workers=1)
    assert np.abs(emb - single).max() < 1e-5


def test_embed_paths_marks_failures_with_nan(tmp_path):
    bad = bad_corpus(tmp_path / "bad")
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes(photo_like()))
    files = [tmp_path / "ok.jpg"] + [tmp_path / "bad" / n for n in bad] + [tmp_path / "ok.jpg"]
    emb, reasons = embed_paths(files, PerceptualBackbone(), batch_size=3)
    assert reasons == [None] + list(bad.values()) + [None]
    assert np.isnan(emb[1:-1]).all() and np.isfinite(emb[[0, -1]]).all()
    assert np.array_equal(emb[0], emb[-1])


def test_openclip_none_through_the_pipeline(tmp_path):
    make_collection(tmp_path / "c", n_good=3, bad=False)
    embed_collection(tmp_path / "c", model="ViT-S-32", pretrained="none", device="cpu", workers=0, progress=False)
    backbone_id, ids, emb = read_embeddings(tmp_path / "c")
    assert backbone_id == "openclip/ViT-S-32/none" and emb.shape == (3, 384)
    entry = read_manifest(tmp_path / "c")["tables"]["features/openclip/ViT-S-32/none"]
    assert entry["random_weights"] is True and entry["preprocessing"]["size"] == [224, 224]


def test_embed_folder_writes_a_minimal_collection_outside(tmp_path):
    folder = tmp_path / "my photos"
    (folder / "trip").mkdir(parents=True)
    photo_like(seed=1).save(folder / "a.jpg")
    photo_like(seed=2).save(folder / "trip" / "b.png")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.jpg").write_bytes(b"")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    out = tmp_path / "collection"
    embed_folder(folder, out, backbone_id="perceptual/v1", workers=0, progress=False)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    photos = read_table(out, "photos").set_index("photo_id")
    assert sorted(photos.index) == ["a.jpg", "broken.jpg", "trip/b.png"]
    assert photos.loc["broken.jpg", "status_reason"] == "empty"
    assert list(read_embeddings(out)[1]) == ["a.jpg", "trip/b.png"]
    with pytest.raises(InterestError, match="inside the photo folder"):
        embed_folder(folder, folder / "out", backbone_id="perceptual/v1")


def test_synthetic_embeddings_have_no_image_backbone(tmp_path):
    make_collection(tmp_path / "c", n_good=1, bad=False)
    with pytest.raises(InterestError, match="no image backbone"):
        embed_collection(tmp_path / "c", backbone_id="synthetic/d64", progress=False)


def test_record_photo_status(tmp_path):
    make_collection(tmp_path / "c", n_good=2, bad=False)
    record_photo_status(tmp_path / "c", bad={"g1": "truncated", "g0": "missing"})
    photos = read_table(tmp_path / "c", "photos").set_index("photo_id")
    assert (photos.loc["g1", "status"], photos.loc["g1", "status_reason"]) == ("bad_image", "truncated")
    assert (photos.loc["g0", "status"], photos.loc["g0", "status_reason"]) == ("missing", "file_not_found")


def test_real_photos_folder_through_the_cli(tmp_path):
    """Real photographs (the sample photos scikit-learn and matplotlib ship) through embed and characterize."""
    import matplotlib
    import sklearn

    folder = tmp_path / "my photos"
    (folder / "trip").mkdir(parents=True)
    sk = Path(sklearn.__file__).parent / "datasets" / "images"
    shutil.copy(sk / "china.jpg", folder / "china.jpg")
    shutil.copy(sk / "flower.jpg", folder / "trip" / "flower.jpg")
    shutil.copy(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", folder / "hopper.jpg")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    out = tmp_path / "collection"
    for args in (["embed", folder, "--backbone", "perceptual/v1", "--out", out], ["characterize", out]):
        proc = subprocess.run([sys.executable, "-m", "interest", *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written into the photos
    backbone, ids, emb = read_embeddings(out)
    assert sorted(ids) == ["china.jpg", "hopper.jpg", "trip/flower.jpg"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    chars = pd.read_parquet(out / "features" / "characteristics.parquet").set_index("photo_id")
    assert chars.loc[["china.jpg", "hopper.jpg", "trip/flower.jpg"], "colourfulness"].notna().all()
    # the portrait of Grace Hopper is far less colourful than the flower
    assert chars.loc["hopper.jpg", "colourfulness"] < chars.loc["trip/flower.jpg", "colourfulness"]
