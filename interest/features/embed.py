"""The embedding pipeline: image files to an embeddings table, as fast as the model can go.

Three pieces, composed by :func:`embed_collection`:

* a **reader** (:class:`ImageReader`, run by a torch DataLoader in worker
  processes): opens each file with :func:`~interest.features.images.load_image`
  and applies the backbone's picklable ``transform``; a bad file becomes a
  reason, never an exception, so it cannot stop the run or shift a neighbour;
* a **mapper** (:func:`iter_embeddings`): stacks the readers' arrays into
  batches and feeds them to ``backbone.encode`` while the workers decode the
  next ones (pinned memory and non-blocking copies on a GPU);
* a **writer** (:class:`PartWriter`): appends finished rows as Parquet parts
  under ``features/<backbone-id>/parts/``; at the end the parts and the
  earlier table are consolidated into ``embeddings.parquet`` (atomically).

Rows are keyed by (photo_id, sha256 of the file) within the backbone's folder,
so a second run re-embeds nothing, a changed file is re-embedded, and a run
killed at any point resumes from its parts to the same table.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interest.collection import (
    atomic_path,
    embeddings_path,
    embeddings_to_arrow,
    read_manifest,
    read_table,
    update_manifest,
    write_parquet_atomic,
    write_table,
)
from interest.errors import InterestError
from interest.features.backbones import Backbone, load_backbone, load_openclip
from interest.features.characteristics import characterize  # noqa: F401 - part of this module's interface
from interest.features.images import (
    DEFAULT_MAX_PIXELS,
    BadImage,
    find_images,
    load_image,
)

DEFAULT_PART_SIZE = 1024
CACHE_COLUMNS = ["photo_id", "sha256", "embedding", "norm"]


# ---------------------------------------------------------------- reader


class ImageReader:
    """A map-style dataset: index -> (index, model input or None, failure reason or None)."""

    def __init__(self, paths: list, transform, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            image = load_image(self.paths[i], max_pixels=self.max_pixels)
            return i, np.asarray(self.transform(image), dtype=np.float32), None
        except BadImage as exc:
            return i, None, exc.reason
        except Exception:  # noqa: BLE001 - a decoder crash on one file must not end the run
            return i, None, "unreadable"


def _collate(items: list[tuple[int, np.ndarray | None, str | None]]):
    import torch

    good = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, reason) for i, x, reason in items if x is None]
    if good:
        index = np.array([i for i, _ in good], dtype=np.int64)
        batch = torch.from_numpy(np.stack([x for _, x in good]))
    else:
        index, batch = np.zeros(0, dtype=np.int64), None
    return index, batch, failed


def default_workers(device: str, backbone: Backbone) -> int:
    """Decoding processes to run beside the model.

    On a CPU the model and the decoders share the cores: decoding and
    preprocessing a 640x480 JPEG costs about a tenth of a ViT-B-32 forward
    pass, so a few workers keep the model fed; two beat one even on two cores
    (measured: 0.90 against 0.86 of the encode-only ceiling), and one per
    eight cores beyond that. A GPU waits on decoding, so it gets all cores
    but one. The perceptual backbone does all its work in the reader, so it
    gets every core.
    """
    cores = os.cpu_count() or 1
    if not getattr(backbone, "has_text", False):  # perceptual: the transform is the model
        return cores
    if device.startswith("cpu"):
        return max(2, cores // 8) if cores >= 2 else 1
    return max(1, min(cores - 1, 16))


def default_batch_size(device: str) -> int:
    """64 on a CPU (the best throughput of ViT-B-32 on two cores), 256 on an accelerator."""
    return 64 if device.startswith("cpu") else 256


# ---------------------------------------------------------------- mapper


def iter_transformed(
    paths: list,
    transform,
    *,
    batch_size: int = 64,
    workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pin_memory: bool = False,
) -> Iterator[tuple[np.ndarray, "object", list[tuple[int, str]]]]:
    """Yield (indices into ``paths``, stacked ``transform`` outputs as a tensor or None, failures).

    Batches come in the order of ``paths``; decoding and ``transform`` run in
    ``workers`` processes (0: in this process). ``transform`` must be picklable.
    """
    from torch.utils.data import DataLoader

    if len(paths) == 0:
        return
    loader = DataLoader(
        ImageReader(paths, transform, max_pixels),
        batch_size=max(1, int(batch_size)),
        shuffle=False,
        num_workers=max(0, int(workers)),
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
    )
    yield from loader


def iter_embeddings(
    paths: list,
    backbone: Backbone,
    *,
    batch_size: int = 64,
    workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]]:
    """Yield (indices into ``paths``, their embeddings, [(index, failure reason)]) batch by batch.

    The model encodes one batch while the workers decode the next ones.
    """
    for index, emb, _, failed in iter_embeddings_with_norms(
        paths, backbone, batch_size=batch_size, workers=workers, max_pixels=max_pixels
    ):
        yield index, emb, failed


def iter_embeddings_with_norms(
    paths: list,
    backbone: Backbone,
    *,
    batch_size: int = 64,
    workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str]]]]:
    """As :func:`iter_embeddings`, with each row's L2 norm before normalisation (the contract's ``norm``)."""
    on_gpu = str(getattr(backbone, "device", "cpu")).startswith("cuda")
    for index, batch, failed in iter_transformed(
        paths, backbone.transform, batch_size=batch_size, workers=workers, max_pixels=max_pixels, pin_memory=on_gpu
    ):
        if batch is None:
            emb, norms = np.zeros((0, backbone.dim), dtype=np.float32), np.zeros(0, dtype=np.float32)
        else:
            emb, norms = split_norms(backbone.encode_raw(batch))
        yield index, emb, norms, failed


def split_norms(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw features (n, d) as (L2-normalised rows, their norms (n,) float32); zero rows stay zero."""
    raw = np.asarray(raw, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", raw, raw, dtype=np.float64)).astype(np.float32)
    return raw / np.where(norms > 0, norms, np.float32(1))[:, None], norms


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
    the loader and transform that :func:`embed_collection` uses, so a photo
    app that embeds with this function gets the collection's embeddings.
    ``raw``: rows before L2 normalisation (embedding * norm), for heads trained on raw features.
    """
    from interest.progress import progress_bar

    out = np.full((len(paths), backbone.dim), np.nan, dtype=np.float32)
    reasons: list[str | None] = [None] * len(paths)
    with progress_bar(total=len(paths), unit="img", desc="embed", enabled=progress) as bar:
        for index, emb, norms, failed in iter_embeddings_with_norms(
            paths, backbone, batch_size=batch_size, workers=workers, max_pixels=max_pixels
        ):
            out[index] = emb * norms[:, None] if raw else emb
            for i, reason in failed:
                reasons[i] = reason
            bar.update(len(index) + len(failed))
    return out, reasons


# ---------------------------------------------------------------- writer


class PartWriter:
    """Appends (photo_id, sha256, embedding) rows as numbered Parquet parts, each written atomically."""

    def __init__(self, folder: Path, part_size: int) -> None:
        self.folder = folder
        self.part_size = max(1, int(part_size))
        self.ids: list[str] = []
        self.shas: list[str] = []
        self.rows: list[np.ndarray] = []
        self.norms: list[float] = []
        numbers = [int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet")] if folder.is_dir() else []
        self.next_number = max(numbers, default=-1) + 1

    def add(self, photo_id: str, sha: str, embedding: np.ndarray, norm: float = float("nan")) -> None:
        self.ids.append(photo_id)
        self.shas.append(sha)
        self.rows.append(embedding)
        self.norms.append(norm)
        if len(self.ids) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        if not self.ids:
            return
        table = embeddings_to_arrow(self.ids, np.stack(self.rows), norms=np.asarray(self.norms, dtype=np.float32))
        table = table.append_column("sha256", pa.array(self.shas, pa.string()))
        with atomic_path(self.folder / f"part-{self.next_number:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.next_number += 1
        self.ids, self.shas, self.rows, self.norms = [], [], [], []


def _read_rows(path: Path) -> pd.DataFrame:
    """(photo_id, sha256, embedding as float32 arrays, norm) from a table or part; empty when unusable.

    ``norm`` is NaN for rows written before the contract had it.
    """
    try:
        table = pq.read_table(path)
        table = table.select([c for c in ("photo_id", "sha256", "embedding", "norm") if c in table.column_names])
    except Exception:  # noqa: BLE001 - a damaged cache file is only a cache miss
        return pd.DataFrame(columns=CACHE_COLUMNS)
    if not {"photo_id", "sha256", "embedding"} <= set(table.column_names):
        return pd.DataFrame(columns=CACHE_COLUMNS)
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size if pa.types.is_fixed_size_list(column.type) else None
    flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    emb = flat.reshape(len(table), dim or (len(flat) // max(1, len(table))))
    norms = (np.asarray(table.column("norm").to_pandas(), dtype=np.float32) if "norm" in table.column_names
             else np.full(len(table), np.nan, dtype=np.float32))
    return pd.DataFrame(
        {"photo_id": table.column("photo_id").to_pylist(), "sha256": table.column("sha256").to_pylist(),
         "embedding": list(emb), "norm": norms}
    )


def _load_cache(folder: Path, current_preprocessing: dict | None, stored_preprocessing: dict | None) -> pd.DataFrame:
    """Earlier rows of this backbone: the consolidated table, then the parts of an unfinished run."""
    if stored_preprocessing is not None and current_preprocessing is not None \
            and stored_preprocessing != current_preprocessing:
        return pd.DataFrame(columns=CACHE_COLUMNS)  # another preprocessing: start afresh
    frames = [_read_rows(folder / "embeddings.parquet")] if (folder / "embeddings.parquet").is_file() else []
    frames += [_read_rows(p) for p in sorted((folder / "parts").glob("part-*.parquet"))]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=CACHE_COLUMNS)
    rows = pd.concat(frames, ignore_index=True)
    return rows.drop_duplicates(["photo_id", "sha256"], keep="last")


# ---------------------------------------------------------------- runner


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


def _hash_files(paths: list[Path], progress: bool) -> list[str | None]:
    from interest.progress import progress_bar

    # hashlib releases the GIL on large buffers: threads hash files in parallel.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        return list(progress_bar(pool.map(sha256_file, paths, chunksize=64), total=len(paths), unit="file",
                                 desc="hash", enabled=progress and len(paths) >= 2000))


def _open_backbone(model: str, pretrained: str | None, backbone_id: str | None, cache_dir: str | None,
                   device: str, precision: str) -> Backbone:
    if backbone_id is not None:
        if backbone_id.startswith("openclip/"):
            from interest.features.backbones import resolve_device

            device = resolve_device(device)
        elif device == "auto":
            device = "cpu"
        return load_backbone(backbone_id, device=device, cache_dir=cache_dir, precision=precision)
    return load_openclip(model, pretrained, device=device, cache_dir=cache_dir, precision=precision)


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
    default to what suits the device (see :func:`default_workers`).
    The run's counts (embedded, cached, failed) go to ``manifest.json``.
    """
    from interest.progress import progress_bar

    root = Path(root)
    photos = read_table(root, "photos", required=["photo_id", "path"])
    if len(photos) == 0:
        raise InterestError(f"{root / 'photos.parquet'}: no photos in this collection; collect or import some first")
    if backbone is None:
        backbone = _open_backbone(model, pretrained, backbone_id, cache_dir, device, precision)
    device = str(getattr(backbone, "device", "cpu"))
    batch_size = batch_size or default_batch_size(device)
    workers = default_workers(device, backbone) if workers is None else workers
    folder = embeddings_path(root, backbone.id).parent
    entry = f"features/{backbone.id}"
    stored = read_manifest(root).get("tables", {}).get(entry, {})

    ids = photos["photo_id"].astype(str).to_numpy()
    has_path = photos["path"].notna().to_numpy()
    files = [root / p if has_path[i] else None for i, p in enumerate(photos["path"].astype(object))]
    candidates = np.flatnonzero(has_path)
    shas: dict[int, str | None] = dict(zip(candidates, _hash_files([files[i] for i in candidates], progress)))

    status: dict[int, tuple[str, str | None]] = {}
    cache = _load_cache(folder, backbone.preprocessing, stored.get("preprocessing"))
    cached = {(p, s): (e, n) for p, s, e, n in zip(cache["photo_id"], cache["sha256"], cache["embedding"],
                                                     cache["norm"])}
    done: dict[int, tuple[np.ndarray, float]] = {}
    todo: list[int] = []
    for i in candidates:
        sha = shas[i]
        if sha is None:
            status[i] = ("missing", "file_not_found") if not files[i].exists() else ("bad_image", "unreadable")
        elif (ids[i], sha) in cached:
            done[i] = cached[(ids[i], sha)]
            status[i] = ("ok", None)
        else:
            todo.append(i)
    n_cached = len(done)

    started = time.perf_counter()
    writer = PartWriter(folder / "parts", part_size)
    with progress_bar(total=len(todo), unit="img", desc=f"embed {backbone.id}", enabled=progress) as bar:
        for index, emb, norms, failed in iter_embeddings_with_norms(
            [files[i] for i in todo], backbone, batch_size=batch_size, workers=workers, max_pixels=max_pixels
        ):
            for j, row, norm in zip(index, emb, norms):
                i = todo[j]
                done[i] = (row, float(norm))
                status[i] = ("ok", None)
                writer.add(ids[i], shas[i], row, float(norm))
            for j, reason in failed:
                status[todo[j]] = _status_of(reason)
            bar.update(len(index) + len(failed))
    writer.flush()
    seconds = time.perf_counter() - started

    order = sorted(done)  # the photos table's order: the same table whatever the run's history
    path = embeddings_path(root, backbone.id)
    rows_changed = len(todo) > 0 or (folder / "parts").is_dir() or not path.is_file() \
        or len(order) != _table_rows(path)
    if rows_changed:
        emb = np.stack([done[i][0] for i in order]) if order else np.zeros((0, backbone.dim), dtype=np.float32)
        norms = np.array([done[i][1] for i in order], dtype=np.float32)
        table = embeddings_to_arrow(ids[order], emb, norms=norms).append_column(
            "sha256", pa.array([shas[i] for i in order], pa.string())
        )
        write_parquet_atomic(path, table)
        # ".part-*.tmp": a part whose write an interrupt cut short (its rows are embedded again, never read)
        for part in [*(folder / "parts").glob("part-*.parquet"), *(folder / "parts").glob(".part-*.tmp")]:
            part.unlink()
        if (folder / "parts").is_dir():
            (folder / "parts").rmdir()
    n_failed = sum(1 for s, _ in status.values() if s != "ok")
    update_manifest(
        root, entry, rows=len(order), dim=int(backbone.dim), backbone_id=backbone.id,
        preprocessing=backbone.preprocessing, embedded=len(todo) - sum(1 for i in todo if status[i][0] != "ok"),
        cached=n_cached, failed=n_failed, seconds=round(seconds, 3),
        random_weights=bool(getattr(backbone, "random_weights", False)),
    )
    _write_status(root, photos, status, shas)
    return path


def _table_rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # noqa: BLE001 - unreadable table: treat as absent, it will be rewritten
        return -1


def photos_to_embed(root: str | os.PathLike) -> pd.DataFrame:
    """The photos :func:`embed_collection` embeds: (photo_id, path) of those with a file path, in table order."""
    photos = read_table(root, "photos", columns=["photo_id", "path"], required=["photo_id", "path"])
    return photos[photos["path"].notna()].reset_index(drop=True)


def _status_of(reason: str) -> tuple[str, str]:
    return ("missing", "file_not_found") if reason in ("missing", "file_not_found") else ("bad_image", reason)


def record_photo_status(
    root: str | os.PathLike,
    *,
    ok: list[str] | tuple = (),
    bad: dict[str, str] | None = None,
    hashes: dict[str, str] | None = None,
) -> None:
    """Record what an embedding run found in photos.parquet.

    ``ok`` photo_ids get status "ok"; each {photo_id: reason} in ``bad`` gets
    "bad_image" (or "missing") with the reason in ``status_reason``; each
    {photo_id: sha256} in ``hashes`` is stored. Any engine (local or Ray) ends
    a run with this, so both leave the same table behind.
    """
    photos = read_table(root, "photos")
    row = {pid: i for i, pid in enumerate(photos["photo_id"].astype(str))}
    status = {row[pid]: ("ok", None) for pid in ok if pid in row}
    status.update({row[pid]: _status_of(reason) for pid, reason in (bad or {}).items() if pid in row})
    shas = {row[pid]: sha for pid, sha in (hashes or {}).items() if pid in row}
    _write_status(Path(root), photos, status, shas)


def _write_status(root: Path, photos: pd.DataFrame, status: dict, shas: dict) -> None:
    """Write photos.status, status_reason and sha256 back, only when one of them changed."""
    photos = photos.copy()
    if "status_reason" not in photos:
        photos["status_reason"] = pd.Series(pd.NA, index=photos.index, dtype="string")
    before = photos[["status", "status_reason", "sha256"]].astype("string").copy()
    for i, (state, reason) in status.items():
        photos.iat[i, photos.columns.get_loc("status")] = state
        photos.iat[i, photos.columns.get_loc("status_reason")] = reason if reason is not None else pd.NA
    for i, sha in shas.items():
        if sha is not None:
            photos.iat[i, photos.columns.get_loc("sha256")] = sha
    after = photos[["status", "status_reason", "sha256"]].astype("string")
    if before.fillna("\0").equals(after.fillna("\0")):
        return
    info = {k: v for k, v in read_manifest(root).get("tables", {}).get("photos", {}).items() if k != "written_at"}
    info["status_from"] = "interest embed"
    write_table(root, "photos", photos, **{k: v for k, v in info.items() if k != "rows"})


def embed_folder(folder: str | os.PathLike, out: str | os.PathLike, **options) -> Path:
    """Embed a plain folder of images into a new minimal collection at ``out``.

    ``photo_id`` is each file's path relative to ``folder`` (with ``/``);
    ``photos.path`` points at the file relative to ``out``. Nothing is
    written inside ``folder``. ``options`` are those of :func:`embed_collection`.
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
    return embed_collection(out, **options)

