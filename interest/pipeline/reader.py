"""The read stage: a collection's photos (or plain files) as work items, hashed, looked up in the cache.

A work item is a photo id, its file and the sha256 of the file's bytes. The
embedding cache is content-addressed: a row of ``features/<backbone-id>/``
(the table or a part of an unfinished run) is reused when its photo id and
sha256 match, so a second run embeds nothing, a changed file is embedded
again, and a run killed at any point resumes from its parts.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from interest.pipeline.writer import CachedRows, read_cache


def sha256_file(path: str | os.PathLike) -> str | None:
    """Hex sha256 of a file, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def hash_files(paths: list[Path], progress: bool = False) -> list[str | None]:
    """sha256 of each file (None where it cannot be read), in order."""
    from interest.progress import progress_bar

    # hashlib releases the GIL on large buffers: threads hash files in parallel.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        return list(progress_bar(pool.map(sha256_file, paths, chunksize=64), total=len(paths), unit="file",
                                 desc="hash", enabled=progress and len(paths) >= 2000))


@dataclass
class WorkItems:
    """What one embedding run has to do, by row of the photos table.

    ``todo``: rows whose file is to be embedded (in table order); ``cached``:
    {row: (unit embedding, norm)} found in the cache; ``status``: {row: None
    (ok) or the reason a file is unusable} for the rows settled already.
    """

    photo_ids: np.ndarray
    files: list[Path | None]
    shas: dict[int, str | None]
    todo: list[int] = field(default_factory=list)
    cached: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)
    status: dict[int, str | None] = field(default_factory=dict)

    def todo_columns(self) -> dict[str, np.ndarray]:
        """The rows to embed as columns (``row``, ``photo_id``, ``path``, ``sha256``): a shard's input."""
        return {
            "row": np.asarray(self.todo, dtype=np.int64),
            "photo_id": np.asarray([self.photo_ids[i] for i in self.todo], dtype=object),
            "path": np.asarray([str(self.files[i]) for i in self.todo], dtype=object),
            "sha256": np.asarray([self.shas[i] for i in self.todo], dtype=object),
        }


class CollectionReader:
    """Work items of a collection's photos for one backbone's folder of embeddings."""

    def __init__(self, root: str | os.PathLike, folder: Path, preprocessing: dict | None,
                 stored_preprocessing: dict | None) -> None:
        self.root = Path(root)
        self.folder = folder
        self.preprocessing = preprocessing
        self.stored_preprocessing = stored_preprocessing

    def read(self, photos, progress: bool = False) -> WorkItems:
        """Hash every downloaded photo's file and split the photos into cache hits, failures and work."""
        ids = photos["photo_id"].astype(str).to_numpy()
        has_path = photos["path"].notna().to_numpy()
        files = [self.root / p if has_path[i] else None for i, p in enumerate(photos["path"].astype(object))]
        candidates = [int(i) for i in np.flatnonzero(has_path)]
        shas = dict(zip(candidates, hash_files([files[i] for i in candidates], progress)))
        cache: CachedRows = read_cache(self.folder, self.preprocessing, self.stored_preprocessing)
        items = WorkItems(ids, files, shas)
        for i in candidates:
            hit = cache.get(ids[i], shas[i])
            if shas[i] is None:
                items.status[i] = "file_not_found" if not files[i].exists() else "unreadable"
            elif hit is not None:
                items.cached[i] = hit
                items.status[i] = None
            else:
                items.todo.append(i)
        return items


def folder_collection(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A plain folder of images as a new minimal collection at ``out`` (its path); either engine embeds it.

    ``photo_id`` is each file's path relative to ``folder`` (with ``/``);
    ``photos.path`` points at the file relative to ``out``. Nothing is
    written inside ``folder``.
    """
    import pandas as pd

    from interest.collection import write_table
    from interest.errors import InterestError
    from interest.features.images import find_images

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
    return out
