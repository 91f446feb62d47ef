"""The local engine: the image pipeline on this machine (``interest embed`` without ``--engine``).

The job's reader (:mod:`interest.pipeline.job`) -> one shard runner
(decoding processes beside the model) -> part writer -> the job's
consolidation and per-photo status. The Ray engine
(:mod:`interest.pipeline.ray`) shares every step but the scheduling.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from interest.core.collection import embeddings_path
from interest.imaging.backbones import Backbone
from interest.imaging.images import DEFAULT_MAX_PIXELS
from interest.pipeline.decoder import default_batch_size, default_workers
from interest.pipeline.job import finish_run, open_backbone, read_work
from interest.pipeline.reader import folder_collection
from interest.pipeline.runner import shard_runner
from interest.pipeline.writer import DEFAULT_PART_SIZE, PartWriter


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
    image_roots: Sequence[str | os.PathLike] = (),
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
    A ``photos.path`` must resolve inside ``root`` or one of ``image_roots``
    (the folder of a folder collection); one outside gets status_reason
    "path_outside", a FIFO or device "not_a_file", and is never read.
    """
    from interest.core.progress import progress_bar

    root = Path(root)
    if backbone is None:
        backbone = open_backbone(model, pretrained, backbone_id, cache_dir, device, precision)
    photos, work = read_work(root, backbone, progress, image_roots)
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
    cache: str | os.PathLike | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """Embed image files: an (n, dim) float32 matrix and, per file, a failure reason or None.

    Rows of files that could not be read are NaN. Files go through exactly
    the decoder and encoder that :func:`embed_collection` uses, so a photo
    app that embeds with this function gets the collection's embeddings.
    ``raw``: rows before L2 normalisation, for heads trained on raw features.
    ``cache``: a folder of embeddings by file content (:mod:`interest.pipeline.file_cache`).
    """
    from interest.core.progress import progress_bar

    runner = shard_runner(backbone, batch_size=batch_size, workers=workers, max_pixels=max_pixels)
    with progress_bar(total=len(paths), unit="img", desc="embed", enabled=progress, leave=False) as bar:
        if cache is None:
            emb, failures = runner.embed_files(paths, raw=raw, on_batch=bar.update)
        else:
            from interest.pipeline.file_cache import embed_files_cached

            emb, failures = embed_files_cached(runner, backbone, paths, cache, raw=raw, on_batch=bar.update)
    return emb, [None if f is None else f.reason for f in failures]


def embed_folder(folder: str | os.PathLike, out: str | os.PathLike, **options) -> Path:
    """Embed a plain folder of images into a new minimal collection at ``out``
    (see :func:`~interest.pipeline.reader.folder_collection`); ``options`` are those of :func:`embed_collection`."""
    return embed_collection(folder_collection(folder, out), image_roots=[folder], **options)
