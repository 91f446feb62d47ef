"""The local engine: the image pipeline on this machine (``interest embed`` without ``--engine``).

reader -> one shard runner (decoding processes beside the model) -> part
writer -> consolidation and per-photo status. The Ray engine
(:mod:`interest.pipeline.ray`) shares every step but the scheduling.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interest.collection import embeddings_path, read_manifest, read_table, update_manifest, write_table
from interest.errors import InterestError
from interest.features.backbones import Backbone, load_backbone, load_openclip
from interest.features.images import DEFAULT_MAX_PIXELS, find_images
from interest.pipeline.decoder import backbone_transform, default_batch_size, default_workers
from interest.pipeline.reader import CollectionReader, WorkItems
from interest.pipeline.runner import ShardRunner
from interest.pipeline.writer import DEFAULT_PART_SIZE, PartWriter, consolidate, write_photo_status


def shard_runner(backbone: Backbone, *, batch_size: int = 64, workers: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> ShardRunner:
    """The runner of ``backbone``: its NumPy decode transform and the backbone itself as the encoder."""
    return ShardRunner(backbone_transform(backbone), backbone, batch_size=batch_size, workers=workers,
                       max_pixels=max_pixels)


def open_backbone(model: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k",
                  backbone_id: str | None = None, cache_dir: str | None = None, device: str = "auto",
                  precision: str = "fp32", encoder: str = "auto") -> Backbone:
    """The backbone an embedding run asked for: ``backbone_id`` if given, else open_clip ``model``/``pretrained``."""
    if backbone_id is not None:
        if backbone_id.startswith("openclip/"):
            from interest.features.backbones import resolve_device

            device = resolve_device(device)
        elif device == "auto":
            device = "cpu"
        return load_backbone(backbone_id, device=device, cache_dir=cache_dir, precision=precision, encoder=encoder)
    return load_openclip(model, pretrained, device=device, cache_dir=cache_dir, precision=precision, encoder=encoder)


def read_work(root: Path, backbone: Any, progress: bool) -> tuple[pd.DataFrame, WorkItems]:
    """The photos table of ``root`` and its work items for ``backbone`` (the reader, as both engines call it)."""
    photos = read_table(root, "photos", required=["photo_id", "path"])
    if len(photos) == 0:
        raise InterestError(f"{root / 'photos.parquet'}: no photos in this collection; collect or import some first")
    folder = embeddings_path(root, backbone.id).parent
    stored = read_manifest(root).get("tables", {}).get(f"features/{backbone.id}", {})
    reader = CollectionReader(root, folder, backbone.preprocessing, stored.get("preprocessing"))
    return photos, reader.read(photos, progress)


def finish_run(root: Path, backbone: Any, photos: pd.DataFrame, work: WorkItems, status: dict[int, str | None],
               embedded: int, seconds: float, **manifest_info: object) -> Path:
    """Consolidate the cache into the table (photos order), then the manifest entry and photos.status."""
    from interest.pipeline.writer import read_cache

    folder = embeddings_path(root, backbone.id).parent
    status = {**work.status, **status}
    ok = [i for i in sorted(status) if status[i] is None]  # the photos table's order, whatever the run's history
    fresh = read_cache(folder, None, None) if embedded else None
    rows = [work.cached.get(i) or fresh.get(work.photo_ids[i], work.shas[i]) for i in ok]
    path = consolidate(folder, [work.photo_ids[i] for i in ok], [work.shas[i] for i in ok], [r[0] for r in rows],
                       [r[1] for r in rows], int(backbone.dim), changed=embedded > 0)
    update_manifest(
        root, f"features/{backbone.id}", rows=len(ok), dim=int(backbone.dim), backbone_id=backbone.id,
        preprocessing=backbone.preprocessing, embedded=embedded, cached=len(work.cached),
        failed=sum(1 for s in status.values() if s is not None), seconds=round(seconds, 3),
        random_weights=bool(getattr(backbone, "random_weights", False)), **manifest_info,
    )
    write_photo_status(root, photos, status, work.shas)
    return path


def embed_collection(
    root: str | os.PathLike,
    *,
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    backbone_id: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    precision: str = "fp32",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    part_size: int = DEFAULT_PART_SIZE,
    progress: bool = True,
    backbone: Backbone | None = None,
) -> Path:
    """Embed every downloaded photo of collection ``root``; return the embeddings table's path.

    The backbone is ``backbone`` if given, else ``backbone_id`` (e.g.
    ``perceptual/v1``), else the open_clip ``model`` with ``pretrained`` (a
    tag, a checkpoint path or ``none``). Photos whose file is unchanged since an
    earlier run (same sha256) are not embedded again. Files that cannot be
    read get ``photos.status`` "bad_image" (or "missing") and a
    ``status_reason``; the others get "ok". ``batch_size`` and ``workers``
    default to what suits the device (see :func:`~interest.pipeline.decoder.default_workers`).
    The run's counts (embedded, cached, failed) go to ``manifest.json``.
    """
    from interest.progress import progress_bar

    root = Path(root)
    if backbone is None:
        backbone = open_backbone(model, pretrained, backbone_id, cache_dir, device, precision)
    photos, work = read_work(root, backbone, progress)
    device = str(getattr(backbone, "device", "cpu"))
    workers = default_workers(device, backbone) if workers is None else workers
    runner = shard_runner(backbone, batch_size=batch_size or default_batch_size(device), workers=workers,
                          max_pixels=max_pixels)
    started = time.perf_counter()
    writer = PartWriter(embeddings_path(root, backbone.id).parent / "parts", part_size)
    with progress_bar(total=len(work.todo), unit="img", desc=f"embed {backbone.id}", enabled=progress) as bar:
        result = runner.run(work.todo_columns(), writer, on_batch=bar.update)
    return finish_run(root, backbone, photos, work, result.status, result.embedded, time.perf_counter() - started)


def embed_paths(
    paths: list,
    backbone: Backbone,
    *,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    raw: bool = False,
) -> tuple[np.ndarray, list[str | None]]:
    """Embed image files: an (n, dim) float32 matrix and, per file, a failure reason or None.

    Rows of files that could not be read are NaN. Files go through exactly
    the decoder and encoder that :func:`embed_collection` uses, so a photo
    app that embeds with this function gets the collection's embeddings.
    ``raw``: rows before L2 normalisation, for heads trained on raw features.
    """
    from interest.progress import progress_bar

    runner = shard_runner(backbone, batch_size=batch_size, workers=workers, max_pixels=max_pixels)
    with progress_bar(total=len(paths), unit="img", desc="embed", enabled=progress, leave=False) as bar:
        emb, failures = runner.embed_files(paths, raw=raw, on_batch=bar.update)
    return emb, [None if f is None else f.reason for f in failures]


def embed_folder(folder: str | os.PathLike, out: str | os.PathLike, *, engine: str = "local", **options) -> Path:
    """Embed a plain folder of images into a new minimal collection at ``out``.

    ``photo_id`` is each file's path relative to ``folder`` (with ``/``);
    ``photos.path`` points at the file relative to ``out``. Nothing is
    written inside ``folder``. ``options`` are those of :func:`embed_collection`,
    or with ``engine="ray"`` of :func:`interest.pipeline.ray.embed_collection_ray`.
    """
    folder, out = Path(folder).resolve(), Path(out).resolve()
    if not folder.is_dir():
        raise InterestError(f"{folder}: not a folder of images")
    if out == folder or folder in out.parents:
        raise InterestError(f"{out}: inside the photo folder {folder}; choose an --out outside it")
    files = find_images(folder)
    out.mkdir(parents=True, exist_ok=True)
    photos = pd.DataFrame(
        {
            "photo_id": [p.relative_to(folder).as_posix() for p in files],
            "path": [os.path.relpath(p, out) for p in files],
        }
    )
    write_table(out, "photos", photos, source=f"interest embed (folder {folder})")
    if engine == "ray":
        from interest.pipeline.ray import embed_collection_ray

        return embed_collection_ray(out, **options)
    return embed_collection(out, **options)
