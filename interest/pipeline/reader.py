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
from typing import Sequence

import numpy as np

from interest.pipeline.writer import CachedRows, read_cache
from interest.core.safe_files import MAX_IMAGE_BYTES, UnsafeFile, open_file, resolve_inside


def sha256_file(path: str | os.PathLike, roots: Sequence[Path] | None = None) -> tuple[str | None, str | None]:
    """(hex sha256, None) of a regular file, or (None, the reason it is not read: see ``safe_files.REASONS``).

    The file is opened by :func:`interest.core.safe_files.open_file` (inside ``roots`` when given): a FIFO,
    ``/dev/zero`` or a path outside the collection is a reason, never a hang or a read.
    """
    digest = hashlib.sha256()
    try:
        with open_file(path, max_bytes=MAX_IMAGE_BYTES, roots=roots) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except UnsafeFile as exc:
        return None, exc.reason
    except OSError:
        return None, "unreadable"
    return digest.hexdigest(), None


def hash_files(paths: list[Path], progress: bool = False,
               roots: Sequence[Path] | None = None) -> list[tuple[str | None, str | None]]:
    """(sha256, None) or (None, reason) of each file (see :func:`sha256_file`), in order."""
    from interest.core.progress import progress_bar

    # hashlib releases the GIL on large buffers: threads hash files in parallel.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        return list(progress_bar(pool.map(lambda p: sha256_file(p, roots), paths, chunksize=64), total=len(paths),
                                 unit="file", desc="hash", enabled=progress and len(paths) >= 2000))


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
                 stored_preprocessing: dict | None, image_roots: Sequence[str | os.PathLike] = ()) -> None:
        self.root = Path(root)
        # photos.path must resolve inside the collection (or a folder the caller names: a folder collection's images)
        self.roots = [self.root.resolve(), *(Path(r).resolve() for r in image_roots)]
        self.folder = folder
        self.preprocessing = preprocessing
        self.stored_preprocessing = stored_preprocessing

    def read(self, photos, progress: bool = False) -> WorkItems:
        """Hash every downloaded photo's file and split the photos into cache hits, failures and work.

        A ``photos.path`` that resolves outside the collection (and the caller's image folders) is the
        failure ``path_outside``; one that is not a regular file (a FIFO, a device) is ``not_a_file``.
        """
        ids = photos["photo_id"].astype(str).to_numpy()
        has_path = photos["path"].notna().to_numpy()
        # joined to the resolved collection: a relative collection (`interest embed data/flickr`) would otherwise be
        # joined twice when the safe opener resolves the path against its roots
        files = [self.roots[0] / p if has_path[i] else None for i, p in enumerate(photos["path"].astype(object))]
        candidates = [int(i) for i in np.flatnonzero(has_path)]
        hashed = dict(zip(candidates, hash_files([files[i] for i in candidates], progress, self.roots)))
        shas = {i: sha for i, (sha, _) in hashed.items()}
        cache: CachedRows = read_cache(self.folder, self.preprocessing, self.stored_preprocessing)
        items = WorkItems(ids, files, shas)
        for i in candidates:
            if shas[i] is None:
                items.status[i] = hashed[i][1]
                continue
            try:  # the decoder opens the file again: give it the path that was checked, not the data's text
                items.files[i] = resolve_inside(self.roots, files[i])
            except UnsafeFile as exc:  # replaced by a link since it was hashed
                items.status[i] = exc.reason
                continue
            hit = cache.get(ids[i], shas[i])
            if hit is not None:
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

    from interest.core.collection import write_table
    from interest.core.errors import InterestError
    from interest.imaging.images import find_images

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
    write_table(out, "photos", photos, source=f"interest embed (folder {folder})", image_folder=str(folder))
    return out
