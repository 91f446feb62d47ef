"""The write stage: embedded rows as Parquet parts while a run goes, then one table.

Parts live in ``features/<backbone-id>/parts/``, each written atomically with
its own stats (rows, seconds since the previous part) in the Parquet schema
metadata under ``interest.part``, so a run killed at any point keeps every finished part and the next
run reads them back as cache hits (:func:`read_cache`). At the end
:func:`consolidate` writes ``embeddings.parquet`` (atomically) from the cache
in the photos table's order and removes the parts, including one an
interrupt cut short. Any engine ends with the same two calls, and with
:func:`write_photo_status`, so both leave the same tables behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interest.core.collection import atomic_path, embeddings_to_arrow, write_parquet_atomic

DEFAULT_PART_SIZE = 1024
PART_STATS_KEY = b"interest.part"
_NUMBERED_PART = re.compile(r"part-(\d+)")


class PartWriter:
    """Appends (photo_id, sha256, embedding, norm) rows as Parquet parts of ``part_size`` rows.

    ``prefix`` names the parts of one writer among several writing into the
    same folder at once (a Ray write task per block); parts of a local run are
    numbered after those already there.
    """

    def __init__(self, folder: Path, part_size: int = DEFAULT_PART_SIZE, prefix: str = "") -> None:
        self.folder = Path(folder)
        self.part_size = max(1, int(part_size))
        self.prefix = prefix
        self.ids: list[str] = []
        self.shas: list[str] = []
        self.rows: list[np.ndarray] = []
        self.norms: list[float] = []
        numbers = [int(m.group(1)) for p in self.folder.glob("part-*.parquet")
                   if (m := _NUMBERED_PART.fullmatch(p.stem))] if self.folder.is_dir() else []
        self.next_number = max(numbers, default=-1) + 1
        self.started = time.perf_counter()

    def add(self, photo_id: str, sha: str, embedding: np.ndarray, norm: float = float("nan")) -> None:
        self.ids.append(photo_id)
        self.shas.append(sha)
        self.rows.append(embedding)
        self.norms.append(norm)
        if len(self.ids) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        """Write the rows added since the last part as one part (nothing when there are none)."""
        if not self.ids:
            return
        table = embeddings_to_arrow(self.ids, np.stack(self.rows), norms=np.asarray(self.norms, dtype=np.float32))
        table = table.append_column("sha256", pa.array(self.shas, pa.string()))
        now = time.perf_counter()
        stats = {"rows": len(self.ids), "seconds": round(now - self.started, 3)}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PART_STATS_KEY: json.dumps(stats)})
        with atomic_path(self.folder / f"part-{self.prefix}{self.next_number:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.next_number += 1
        self.started = now
        self.ids, self.shas, self.rows, self.norms = [], [], [], []


class CachedRows:
    """Earlier embeddings of one backbone, keyed by (photo_id, sha256): the table, then unfinished parts."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[np.ndarray, float]] = {}

    def add_file(self, path: Path) -> None:
        """Add the rows of a table or part; a damaged file is only a cache miss."""
        try:
            table = pq.read_table(path)
        except Exception:  # noqa: BLE001 - a damaged cache file is only a cache miss
            return
        if not {"photo_id", "sha256", "embedding"} <= set(table.column_names) or len(table) == 0:
            return
        column = table.column("embedding").combine_chunks()
        dim = column.type.list_size if pa.types.is_fixed_size_list(column.type) else None
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        emb = flat.reshape(len(table), dim or (len(flat) // len(table)))
        # rows written before the contract had a norm get NaN
        norms = (np.asarray(table.column("norm").to_numpy(zero_copy_only=False), dtype=np.float32)
                 if "norm" in table.column_names else np.full(len(table), np.nan, dtype=np.float32))
        for key, row, norm in zip(zip(table.column("photo_id").to_pylist(), table.column("sha256").to_pylist()),
                                  emb, norms):
            self.rows[key] = (row, float(norm))  # later files win: a part is newer than the table

    def get(self, photo_id: str, sha: str | None) -> tuple[np.ndarray, float] | None:
        return None if sha is None else self.rows.get((photo_id, sha))


def read_cache(folder: Path, current_preprocessing: dict | None, stored_preprocessing: dict | None, *,
               table: bool = True) -> CachedRows:
    """The rows already embedded under ``features/<backbone-id>/`` (empty when the preprocessing changed);
    ``table=False``: only the parts (the rows of runs not consolidated yet)."""
    cache = CachedRows()
    if stored_preprocessing is not None and current_preprocessing is not None \
            and stored_preprocessing != current_preprocessing:
        return cache  # another preprocessing: start afresh
    if table and (folder / "embeddings.parquet").is_file():
        cache.add_file(folder / "embeddings.parquet")
    for part in sorted((folder / "parts").glob("part-*.parquet")):
        cache.add_file(part)
    return cache


def table_rows(path: Path) -> int:
    """Rows of a Parquet table; -1 when it is unreadable (it will be rewritten)."""
    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # noqa: BLE001 - unreadable table: treat as absent
        return -1


def consolidate(folder: Path, ids: list[str], shas: list[str], embeddings: list[np.ndarray], norms: list[float],
                dim: int, *, changed: bool) -> Path:
    """Write ``folder/embeddings.parquet`` from these rows (in this order) and remove the parts.

    ``changed``: whether any row was embedded in this run; with no new row,
    no parts and a table of the same length, the table is left untouched.
    """
    path = folder / "embeddings.parquet"
    parts = folder / "parts"
    if changed or parts.is_dir() or not path.is_file() or len(ids) != table_rows(path):
        emb = np.stack(embeddings) if embeddings else np.zeros((0, dim), dtype=np.float32)
        table = embeddings_to_arrow(np.asarray(ids, dtype=object), emb, norms=np.asarray(norms, dtype=np.float32))
        write_parquet_atomic(path, table.append_column("sha256", pa.array(list(shas), pa.string())))
        # ".part-*.tmp": a part whose write an interrupt cut short (its rows are embedded again, never read)
        for part in [*parts.glob("part-*.parquet"), *parts.glob(".part-*.tmp")]:
            part.unlink()
        if parts.is_dir():
            parts.rmdir()
    return path


def _status_of(reason: str) -> tuple[str, str]:
    return ("missing", "file_not_found") if reason in ("missing", "file_not_found") else ("bad_image", reason)


def write_photo_status(root: str | os.PathLike, photos, status: dict, shas: dict) -> None:
    """Write photos.status, status_reason and sha256 back (rows by position), only when one of them changed.

    ``status`` maps a row to ("ok", None) or a failure reason (see
    ``images.REASONS``, or "file_not_found"); ``shas`` maps a row to its file's sha256.
    """
    import pandas as pd

    from interest.core.collection import read_manifest, write_table

    photos = photos.copy()
    if "status_reason" not in photos:
        photos["status_reason"] = pd.Series(pd.NA, index=photos.index, dtype="string")
    before = photos[["status", "status_reason", "sha256"]].astype("string").copy()
    for i, reason in status.items():
        state, why = ("ok", None) if reason is None else _status_of(reason)
        photos.iat[i, photos.columns.get_loc("status")] = state
        photos.iat[i, photos.columns.get_loc("status_reason")] = why if why is not None else pd.NA
    for i, sha in shas.items():
        if sha is not None:
            photos.iat[i, photos.columns.get_loc("sha256")] = sha
    after = photos[["status", "status_reason", "sha256"]].astype("string")
    if before.fillna("\0").equals(after.fillna("\0")):
        return
    info = {k: v for k, v in read_manifest(root).get("tables", {}).get("photos", {}).items() if k != "written_at"}
    info["status_from"] = "interest embed"
    write_table(Path(root), "photos", photos, **{k: v for k, v in info.items() if k != "rows"})


def record_photo_status(
    root: str | os.PathLike,
    *,
    ok: list[str] | tuple = (),
    bad: dict[str, str] | None = None,
    hashes: dict[str, str] | None = None,
) -> None:
    """Record what an embedding run found in photos.parquet, by photo id.

    ``ok`` photo_ids get status "ok"; each {photo_id: reason} in ``bad`` gets
    "bad_image" (or "missing") with the reason in ``status_reason``; each
    {photo_id: sha256} in ``hashes`` is stored.
    """
    from interest.core.collection import read_table

    photos = read_table(root, "photos")
    row = {pid: i for i, pid in enumerate(photos["photo_id"].astype(str))}
    status: dict[int, str | None] = {row[pid]: None for pid in ok if pid in row}
    status.update({row[pid]: reason for pid, reason in (bad or {}).items() if pid in row})
    shas = {row[pid]: sha for pid, sha in (hashes or {}).items() if pid in row}
    write_photo_status(root, photos, status, shas)
