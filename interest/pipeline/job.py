"""What every engine does before and after it maps the shard runner: one embedding job of a collection.

:func:`open_backbone` loads the backbone asked for, :func:`read_work` runs
the reader (hashes, cache lookup) and :func:`finish_run` consolidates the
cache into the embeddings table, then writes the manifest entry and
``photos.status``. The local and the Ray engine call these same three, so
their tables cannot differ.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from interest.core.collection import embeddings_path, read_manifest, read_table, update_manifest
from interest.core.errors import InterestError
from interest.imaging.backbones import Backbone, load_backbone, load_openclip
from interest.pipeline.reader import CollectionReader, WorkItems
from interest.pipeline.writer import consolidate, read_cache, write_photo_status


def open_backbone(model: str = "ViT-B-32", pretrained: str | None = "laion2b_s34b_b79k",
                  backbone_id: str | None = None, cache_dir: str | None = None, device: str = "auto",
                  precision: str = "fp32", encoder: str = "auto") -> Backbone:
    """The backbone an embedding run asked for: ``backbone_id`` if given, else open_clip ``model``/``pretrained``."""
    if backbone_id is not None:
        if backbone_id.startswith("openclip/"):
            from interest.imaging.backbones import resolve_device

            device = resolve_device(device)
        elif device == "auto":
            device = "cpu"
        return load_backbone(backbone_id, device=device, cache_dir=cache_dir, precision=precision, encoder=encoder)
    return load_openclip(model, pretrained, device=device, cache_dir=cache_dir, precision=precision, encoder=encoder)


def read_work(root: Path, backbone: Backbone, progress: bool,
              image_roots: Sequence[str | os.PathLike] = ()) -> tuple[pd.DataFrame, WorkItems]:
    """The photos table of ``root`` and its work items for ``backbone`` (the reader, as both engines call it).

    ``image_roots``: folders besides ``root`` that ``photos.path`` may point into (a folder collection's images).
    """
    photos = read_table(root, "photos", required=["photo_id", "path"])
    if len(photos) == 0:
        raise InterestError(f"{root / 'photos.parquet'}: no photos in this collection; collect or import some first")
    folder = embeddings_path(root, backbone.id).parent
    stored = read_manifest(root).get("tables", {}).get(f"features/{backbone.id}", {})
    reader = CollectionReader(root, folder, backbone.preprocessing, stored.get("preprocessing"), image_roots)
    return photos, reader.read(photos, progress)


def finish_run(root: Path, backbone: Backbone, photos: pd.DataFrame, work: WorkItems, status: dict[int, str | None],
               embedded: int, seconds: float, **manifest_info: object) -> Path:
    """Consolidate the cache into the table (photos order), then the manifest entry and photos.status."""
    folder = embeddings_path(root, backbone.id).parent
    status = {**work.status, **status}
    ok = [i for i in sorted(status) if status[i] is None]  # the photos table's order, whatever the run's history
    fresh = read_cache(folder, None, None, table=False) if embedded else None  # this run's rows are in parts
    rows = [work.cached.get(i) or fresh.get(work.photo_ids[i], work.shas[i]) for i in ok]
    path = consolidate(folder, [work.photo_ids[i] for i in ok], [work.shas[i] for i in ok], [r[0] for r in rows],
                       [r[1] for r in rows], int(backbone.dim), changed=embedded > 0)
    update_manifest(
        root, f"features/{backbone.id}", rows=len(ok), dim=int(backbone.dim), backbone_id=backbone.id,
        preprocessing=backbone.preprocessing, embedded=embedded, cached=len(work.cached),
        failed=sum(1 for s in status.values() if s is not None), seconds=round(seconds, 3),
        random_weights=bool(getattr(backbone, "random_weights", False)),
        # what ran the image tower (torch, onnxruntime-fp32, onnxruntime-int8): the same space either way at fp32
        **({"encoder": backbone.encoder} if getattr(backbone, "encoder", None) else {}), **manifest_info,
    )
    write_photo_status(root, photos, status, work.shas)
    return path
