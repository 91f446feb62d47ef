"""The one image pipeline: the same file gives the same embedding through every caller.

`interest embed` (a collection and a plain folder), `embed_paths`, scoring files, scoring decoded
uploads (the service's path), curation and `interest.onnx` all run the pipeline's decoder and
encoder, so they agree bit for bit on one machine (with the same batches: a torch model's rows
may depend on the batch they are encoded in, by float rounding).
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from image_files import bad_corpus, jpeg_bytes, photo_like

from interest.core.collection import embeddings_path, write_table
from interest.imaging.backbones import load_backbone
from interest.imaging.images import load_image
from interest.pipeline.decoder import ClipTransform, Decoder, backbone_transform
from interest.pipeline.local import embed_collection, embed_folder, embed_paths
from interest.pipeline.runner import shard_runner

SMALL_CLIP = "openclip/ViT-S-32/none"


def stored(root, backbone_id: str) -> tuple[list[str], np.ndarray]:
    """The embeddings table's ids and rows as written (read_embeddings renormalises, which may move the last bit)."""
    import pyarrow.parquet as pq

    table = pq.read_table(embeddings_path(root, backbone_id))
    return table.column("photo_id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


@pytest.fixture(scope="module")
def clip():
    return load_backbone(SMALL_CLIP)


def test_numpy_decoder_equals_open_clip_torch_transform(clip):
    """The decoder's NumPy preprocessing gives open_clip's torchvision tensor exactly (max difference 0)."""
    transform = backbone_transform(clip)
    assert isinstance(transform, ClipTransform)
    worst = 0.0
    for seed, (w, h) in enumerate([(640, 480), (480, 640), (80, 60), (224, 224), (300, 1000), (1001, 999), (50, 20)]):
        image = photo_like(w, h, seed=seed)
        torch_input, numpy_input = clip.transform(image), transform(image)
        assert numpy_input.shape == torch_input.shape == (3, 224, 224) and numpy_input.dtype == np.float32
        worst = max(worst, float(np.abs(numpy_input - torch_input).max()))
    assert worst == 0.0


def test_decoder_workers_keep_order_and_failures(tmp_path):
    bad = bad_corpus(tmp_path / "bad")
    good = []
    for i in range(5):
        (tmp_path / f"g{i}.jpg").write_bytes(jpeg_bytes(photo_like(90, 70, seed=i)))
        good.append(tmp_path / f"g{i}.jpg")
    files = good[:2] + [tmp_path / "bad" / n for n in bad] + good[2:]
    transform = backbone_transform(load_backbone("perceptual/v1"))
    serial = list(Decoder(transform, batch_size=3).batches(files))
    pooled = list(Decoder(transform, batch_size=3, workers=2, prefetch=1).batches(files))
    for a, b in zip(serial, pooled, strict=True):
        assert np.array_equal(a.index, b.index) and a.failed == b.failed
        assert (a.pixels is None and b.pixels is None) or np.array_equal(a.pixels, b.pixels)
    failed = {f.index: f.reason for batch in pooled for f in batch.failed}
    assert failed == {2 + k: reason for k, reason in enumerate(bad.values())}
    assert sorted(int(i) for batch in pooled for i in batch.index) == [0, 1, *range(2 + len(bad), len(files))]


def test_clip_embedding_is_the_same_through_collection_folder_files_and_images(clip, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        photo_like(100 + 10 * i, 80, seed=i).save(folder / f"p{i}.jpg", quality=92)
    files = sorted(folder.glob("*.jpg"))
    # a collection of the same files
    root = tmp_path / "collection"
    shutil.copytree(folder, root / "images")
    write_table(root, "photos", pd.DataFrame({"photo_id": [f.stem for f in files],
                                              "path": [f"images/{f.name}" for f in files]}))
    embed_collection(root, backbone=clip, batch_size=8, workers=2, progress=False)
    ids, table = stored(root, clip.id)
    assert list(ids) == [f.stem for f in files]
    embed_folder(folder, tmp_path / "from_folder", backbone=clip, batch_size=8, workers=0, progress=False)
    from_folder = stored(tmp_path / "from_folder", clip.id)[1]
    from_files, reasons = embed_paths(files, clip, batch_size=8)
    from_images = shard_runner(clip, batch_size=8).embed_images([load_image(f) for f in files])
    assert reasons == [None] * len(files)
    for other in (from_folder, from_files, from_images):
        assert np.array_equal(other, table)


def test_every_caller_of_a_model_gets_the_collections_embedding(tmp_path):
    """embed, score, score of decoded uploads (the service), curation and interest.onnx: the same bits."""
    from apps_helpers import train_image_model

    from interest.apps.curate import curate
    from interest.apps.service import decode_upload
    from interest.scoring import read_inputs

    root = tmp_path / "world"
    model = train_image_model(root, n_users=30, n_photos=120, n_topics=4, clusters=8)
    ids, table = stored(root, model.backbone_id)
    by_id = dict(zip(ids, table))
    files = sorted((root / "images").glob("*.jpg"))[:10]
    expected = np.stack([by_id[f.stem] for f in files])  # synthetic photo ids name their files

    kind, _, scored, problems = read_inputs(model, files)
    assert kind == "path" and problems == [None] * len(files)
    uploads = model.embed_images([decode_upload(f.read_bytes(), 10**8) for f in files])
    assert np.array_equal(scored, expected) and np.array_equal(uploads, expected)

    folder = tmp_path / "phone"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    curated = curate(model, folder, progress=False).set_index("path")
    direct = model.score_embeddings(expected).set_index(pd.Index([f.name for f in files]))
    assert np.array_equal(curated.loc[direct.index, "ci_score"].to_numpy(np.float32),
                          direct["ci_score"].to_numpy(np.float32))

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxmltools")
    import interest.onnx
    from interest.apps.export_onnx import export_onnx

    export_onnx(model, tmp_path / "onnx")
    onnx_emb = interest.onnx.load(tmp_path / "onnx").embed([load_image(f) for f in files])
    assert np.array_equal(onnx_emb, expected)  # perceptual/v1: the export runs the same NumPy decoder and encoder


def test_parts_carry_their_stats_and_consolidation_removes_every_part(tmp_path):
    import json

    import pyarrow.parquet as pq

    from interest.pipeline.writer import PART_STATS_KEY, PartWriter, consolidate, read_cache

    folder = tmp_path / "features" / "perceptual" / "v1"
    writer = PartWriter(folder / "parts", part_size=2)
    rows = np.eye(3, 4, dtype=np.float32)
    for i, row in enumerate(rows):
        writer.add(f"p{i}", f"sha{i}", row, 1.0)
    writer.flush()
    parts = sorted((folder / "parts").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-000000.parquet", "part-000001.parquet"]
    stats = [json.loads(pq.read_schema(p).metadata[PART_STATS_KEY]) for p in parts]
    assert [s["rows"] for s in stats] == [2, 1] and all(s["seconds"] >= 0 for s in stats)
    (folder / "parts" / ".part-000002.parquet.tmp").write_bytes(b"cut short by an interrupt")
    assert PartWriter(folder / "parts").next_number == 2  # a resumed run numbers after the parts it finds
    cache = read_cache(folder, None, None)
    hits = [cache.get(f"p{i}", f"sha{i}") for i in range(3)]
    assert cache.get("p0", "another file") is None
    consolidate(folder, [f"p{i}" for i in range(3)], [f"sha{i}" for i in range(3)], [h[0] for h in hits],
                [h[1] for h in hits], 4, changed=True)
    assert not (folder / "parts").exists()
    assert np.array_equal(np.stack(pq.read_table(folder / "embeddings.parquet").column("embedding")
                                   .to_numpy(zero_copy_only=False)), rows)
