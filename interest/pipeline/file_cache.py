"""An embedding cache for plain image files: scoring a person's folder again embeds only what changed.

A collection keeps its embeddings under ``features/`` (:mod:`interest.pipeline.reader`);
a folder of photos scored with ``interest score`` or ``interest curate`` has no
collection, so its embeddings go to a cache folder, one per backbone
(``<cache>/<backbone-id>/``), keyed by the sha256 of each file's bytes: a
second run hashes the files and embeds none of those seen before, and a photo
moved or renamed is a hit too. The rows are stored as the collection's parts
(photo id = sha256), so the collection's reader reads them back; a backbone
whose preprocessing changed (another checkpoint) starts afresh, and a
damaged part is only a miss. Nothing is written into the photo folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from interest.core.errors import InterestError

if TYPE_CHECKING:
    from interest.imaging.backbones import Backbone

MAX_PARTS = 32  # parts of earlier runs merged into one table beyond this many


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/interest/embeddings`` (``~/.cache/interest/embeddings`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "interest" / "embeddings"


def backbone_cache(cache_dir: str | os.PathLike, backbone_id: str) -> Path:
    """The folder of ``backbone_id``'s rows inside ``cache_dir``."""
    parts = backbone_id.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise InterestError(f"backbone id {backbone_id!r} cannot name a cache folder; score without --embedding-cache")
    return Path(cache_dir).joinpath(*parts)


def embed_files_cached(runner: Any, backbone: Backbone, files: Sequence[Path], cache_dir: str | os.PathLike, *,
                       raw: bool = False, on_batch: Callable[[int], None] | None = None):
    """``runner.embed_files(files, raw=raw)`` through the cache: (n, dim) embeddings and each file's failure or None.

    Files whose bytes were embedded before are read from the cache; the
    others are embedded and added to it (unreadable files are not cached, so
    a repaired file is tried again).
    """
    from interest.pipeline.reader import hash_files
    from interest.pipeline.writer import PartWriter, read_cache

    folder = backbone_cache(cache_dir, backbone.id)
    preprocessing = getattr(backbone, "preprocessing", None)
    stored = _stored_preprocessing(folder)
    fresh = stored is not None and preprocessing is not None and _jsonable(stored) != _jsonable(preprocessing)
    cache = read_cache(folder, None, None) if not fresh else None
    shas = [sha for sha, _ in hash_files(list(files))]  # an unreadable file (FIFO, device, gone) is embedded as a failure
    out = np.full((len(files), int(backbone.dim)), np.nan, dtype=np.float32)
    failures: list[Any] = [None] * len(files)
    todo = []
    for i, sha in enumerate(shas):
        hit = cache.get(sha, sha) if cache is not None and sha is not None else None
        if hit is not None and (not raw or np.isfinite(hit[1])):
            out[i] = hit[0] * hit[1] if raw else hit[0]
        else:
            todo.append(i)
    if on_batch is not None and len(files) > len(todo):
        on_batch(len(files) - len(todo))
    if not todo:
        return out, failures
    from interest.pipeline.encoder import split_norms

    emb, failed = runner.embed_files([files[i] for i in todo], raw=True, on_batch=on_batch)
    if fresh:  # another preprocessing: the old rows are of another embedding space
        for old in [folder / "embeddings.parquet", *(folder / "parts").glob("part-*.parquet")]:
            old.unlink(missing_ok=True)
    writer = PartWriter(folder / "parts")
    ok = [j for j, f in enumerate(failed) if f is None]
    unit, norms = split_norms(emb[ok]) if ok else (np.zeros((0, out.shape[1]), np.float32), np.zeros(0, np.float32))
    for row, j in enumerate(ok):
        i = todo[j]
        if shas[i] is not None:
            writer.add(shas[i], shas[i], unit[row], float(norms[row]))
        out[i] = emb[j] if raw else unit[row]
    for j, failure in enumerate(failed):
        if failure is not None:
            failures[todo[j]] = replace(failure, index=todo[j])
    writer.flush()
    _store_preprocessing(folder, preprocessing)
    _merge_parts(folder)
    return out, failures


def _stored_preprocessing(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _store_preprocessing(folder: Path, preprocessing: dict | None) -> None:
    from interest.core.collection import write_json_atomic

    if preprocessing is not None and _stored_preprocessing(folder) != _jsonable(preprocessing):
        write_json_atomic(folder / "preprocessing.json", _jsonable(preprocessing))


def _merge_parts(folder: Path) -> None:
    """Merge the parts into ``embeddings.parquet`` once there are many (each run adds one)."""
    from interest.pipeline.writer import consolidate, read_cache

    if len(list((folder / "parts").glob("part-*.parquet"))) <= MAX_PARTS:
        return
    rows = read_cache(folder, None, None).rows
    if not rows:
        return
    keys = sorted(rows)
    dim = len(next(iter(rows.values()))[0])
    consolidate(folder, [k[0] for k in keys], [k[1] for k in keys], [rows[k][0] for k in keys],
                [rows[k][1] for k in keys], dim, changed=True)


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))
