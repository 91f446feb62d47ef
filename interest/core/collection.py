"""The on-disk contract: a collection directory of Parquet tables.

Every stage reads and writes a collection only through this module, so the
tables' names, keys, required columns and types live in one place
(``TABLES``), and every write is atomic (temporary name, then rename): a crash
never leaves a half-written table behind.

Layout::

    users.parquet  photos.parquet  favorites.parquet  labels.parquet
    features/<backbone-id>/embeddings.parquet
    features/characteristics.parquet
    images/  manifest.json

ids are strings. A backbone id such as ``openclip/ViT-B-32/laion2b_s34b_b79k``
is also a relative folder under ``features/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from interest.core.errors import DiskFull, InterestError, is_disk_full
from interest.core.numeric import l2_normalize, row_norms

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Table:
    """One contract table: its file, key and minimum columns with types."""

    file: str
    key: tuple[str, ...]
    columns: dict[str, str]  # column -> pandas dtype it is coerced to on write


TABLES: dict[str, Table] = {
    "users": Table(
        "users.parquet",
        ("user_id",),
        {
            "user_id": "string",
            "gender": "string",
            "timezone_label": "string",
            "timezone_id": "string",
            "country": "string",
        },
    ),
    "photos": Table(
        "photos.parquet",
        ("photo_id",),
        {
            "photo_id": "string",
            "owner_id": "string",
            "url": "string",
            "path": "string",
            "views": "Int64",
            "faves": "Int64",
            "comments": "Int64",
            "upload_date": "datetime64[ns, UTC]",
            "owner_ispro": "boolean",
            "owner_occupation": "string",
            "sha256": "string",
            "status": "string",
        },
    ),
    "favorites": Table(
        "favorites.parquet",
        ("user_id", "photo_id"),
        # source: the published file an imported favourite came from (definition/additional); null when crawled
        {"user_id": "string", "photo_id": "string", "fave_date": "datetime64[ns, UTC]", "source": "string"},
    ),
    "labels": Table(
        "labels.parquet",
        ("photo_id",),
        {
            "photo_id": "string",
            "set": "string",
            "cluster_label": "int64",
            "partition": "string",
            "ci_score": "float64",
            "trend_group": "int64",
        },
    ),
    "characteristics": Table(
        "features/characteristics.parquet", ("photo_id",), {"photo_id": "string"}
    ),
}

# ---------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched;
    a full disk (ENOSPC, EDQUOT, EIO, however the writer words it) is raised
    as :class:`~interest.core.errors.DiskFull` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Not mkstemp: its files are mode 0600, and a shared report or table should get the umask's mode.
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise DiskFull(path, exc) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Write JSON atomically, sorted and indented so that diffs stay readable."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


#: what a spreadsheet reads as the start of a formula (OWASP's CSV injection list)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell that a spreadsheet would run as a formula prefixed with ``'`` (OWASP).

    Text cells (and index values and column names) starting with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return are neutralised; numeric columns
    are left as they are, so a negative score stays a number.
    """

    def cell(value: object) -> object:
        return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value

    def texts(values: pd.Index) -> pd.Index:
        if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_datetime64_any_dtype(values.dtype):
            return values
        return values.map(cell)

    out = table.copy()
    for i, col in enumerate(out.columns):
        series = out.iloc[:, i]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
            out.isetitem(i, series.map(cell, na_action="ignore"))
    if not isinstance(out.index, pd.MultiIndex):
        out.index = texts(out.index)
    out.index.names = [cell(name) for name in out.index.names]
    out.columns = texts(out.columns)
    return out


def write_csv_atomic(path: str | os.PathLike, table: pd.DataFrame, *, index: bool = False) -> None:
    """Write ``table`` as CSV atomically, safe to open in a spreadsheet (:func:`spreadsheet_safe`).

    Every CSV the package writes goes through here. Lines end in CRLF (RFC
    4180): Python's csv module quotes a cell holding a carriage return only
    when the line terminator has one, and an unquoted ``\r=cmd`` would start a
    new row with a formula.
    """
    with atomic_path(path) as tmp:
        spreadsheet_safe(table).to_csv(tmp, index=index, lineterminator="\r\n")


#: the study's published labels of an imported collection (written by `interest import-flickruser`,
#: read by the analysis and by `import-study-model`), beside the contract's tables
REFERENCE_FILE = "reference.parquet"


# ---------------------------------------------------------------- image files

IMAGES_DIR = "images"
#: ids that may name a file as they are: Flickr's are digits; never a dot, a slash or a leading dash
_SAFE_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif")


def image_filename(photo_id: str) -> str:
    """The file name stem of a photo's image: the id when it is a safe name, else a hash of it.

    An id comes from a stranger (a favourites answer, a CSV), so it never
    becomes a path as it is: ``../../x``, ``/etc/x`` or ``a/b`` get
    ``_<sha256 of the id>``, which no safe id can equal (a safe id starts with
    a letter or digit).
    """
    photo_id = str(photo_id)
    if _SAFE_ID.fullmatch(photo_id):
        return photo_id
    return "_" + hashlib.sha256(photo_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def image_relpath(photo_id: str, url: str | None = None) -> str:
    """The image's path relative to the collection: ``images/<image_filename(id)>.<ext of the URL>``."""
    ext = os.path.splitext(url.split("?", 1)[0])[1].lower() if isinstance(url, str) else ""
    return f"{IMAGES_DIR}/{image_filename(photo_id)}{ext if ext in _IMAGE_EXTS else '.jpg'}"


def inside_collection(root: str | os.PathLike, relpath: str) -> Path:
    """``root / relpath``, after checking it stays inside ``root`` (links resolved); else InterestError."""
    root = Path(root).resolve()
    target = (root / relpath).resolve()
    if target == root or root not in target.parents:
        raise InterestError(f"{relpath}: not inside the collection {root}; refusing to write there")
    return target


# ---------------------------------------------------------------- tables


def table_path(root: str | os.PathLike, name: str) -> Path:
    """Path of contract table ``name`` in collection ``root``."""
    return Path(root) / TABLES[name].file


def has_table(root: str | os.PathLike, name: str) -> bool:
    """Whether collection ``root`` has table ``name``."""
    return table_path(root, name).is_file()


def read_table(
    root: str | os.PathLike,
    name: str,
    columns: list[str] | None = None,
    required: list[str] | None = None,
) -> pd.DataFrame:
    """Read contract table ``name``, checking that it and its columns exist.

    ``required`` defaults to the table's key columns plus ``columns``. Raises
    :class:`InterestError` naming the file and column when one is missing.
    """
    path = table_path(root, name)
    if not path.is_file():
        raise InterestError(
            f"{path}: missing table '{name}'; is {root} a collection directory? "
            "(run `interest collect`, `interest import` or `interest label` first)"
        )
    return read_parquet_checked(path, columns, required or [*TABLES[name].key, *(columns or [])])


def unusable_photos(root: str | os.PathLike) -> int:
    """How many photos of collection ``root`` are not usable: a ``status`` other than ok (see ``status_reason``)."""
    status = read_table(root, "photos", columns=["status"])["status"]
    return int((status.astype("string").fillna("ok") != "ok").sum())


def read_parquet_checked(
    path: str | os.PathLike, columns: list[str] | None = None, required: list[str] | None = None
) -> pd.DataFrame:
    """Read a Parquet file, naming the file when it is unreadable or lacks a column."""
    schema = check_parquet(path, required)
    wanted = None if columns is None else [c for c in columns if c in schema.names]
    return pq.read_table(path, columns=wanted).to_pandas()


def check_parquet(path: str | os.PathLike, required: list[str] | None = None) -> pa.Schema:
    """The schema of a Parquet file, after checking it is readable and has ``required`` columns."""
    path = Path(path)
    if not path.is_file():
        raise InterestError(f"{path}: file not found")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InterestError(f"{path}: not a readable Parquet file ({exc}); rewrite or remove it") from None
    for col in required or []:
        if col not in schema.names:
            raise InterestError(f"{path}: missing column '{col}'; it is required here")
    return schema


def write_table(root: str | os.PathLike, name: str, df: pd.DataFrame, **manifest_info: object) -> Path:
    """Write contract table ``name`` atomically, coercing the contract columns' types.

    Missing contract columns are added as nulls; extra columns are kept. Key
    duplicates are an error. ``manifest_info`` is recorded in ``manifest.json``.
    """
    spec = TABLES[name]
    df = coerce_columns(df, spec.columns)
    if df.duplicated(list(spec.key)).any():
        dup = df[df.duplicated(list(spec.key), keep=False)].iloc[0]
        key = ", ".join(f"{k}={dup[k]}" for k in spec.key)
        raise InterestError(f"{name}: duplicate key ({key}); keys must be unique")
    path = table_path(root, name)
    write_parquet_atomic(path, df)
    update_manifest(root, name, rows=len(df), **manifest_info)
    return path


def coerce_columns(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Return ``df`` with ``columns`` present (nulls when absent) and of the given dtypes."""
    df = df.copy()
    for col, dtype in columns.items():
        if col not in df.columns:
            df[col] = pd.Series(pd.NA, index=df.index, dtype=_null_dtype(dtype))
        elif dtype.startswith("datetime64"):
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce").astype(dtype)
        else:
            df[col] = df[col].astype(dtype)
    order = list(columns) + [c for c in df.columns if c not in columns]
    return df[order].reset_index(drop=True)


def _null_dtype(dtype: str) -> str:
    return {"int64": "Int64", "float64": "Float64"}.get(dtype, dtype)


def write_parquet_atomic(path: str | os.PathLike, df: pd.DataFrame | pa.Table) -> None:
    """Write a DataFrame or Arrow table to Parquet atomically."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# ---------------------------------------------------------------- embeddings


def embeddings_path(root: str | os.PathLike, backbone_id: str) -> Path:
    """Path of the embeddings table for ``backbone_id`` in collection ``root``."""
    return Path(root) / "features" / backbone_id / "embeddings.parquet"


def embeddings_file_backbone(path: str | os.PathLike) -> str | None:
    """The backbone id a file at ``<collection>/features/<backbone-id>/embeddings.parquet`` names; None elsewhere."""
    path = Path(path)
    parts = path.resolve().parts
    if path.name != "embeddings.parquet" or "features" not in parts:
        return None
    start = len(parts) - 1 - parts[::-1].index("features")
    return "/".join(parts[start + 1 : -1]) or None


def list_backbones(root: str | os.PathLike) -> list[str]:
    """Backbone ids that have an embeddings table in collection ``root``."""
    features = Path(root) / "features"
    if not features.is_dir():
        return []
    return sorted(str(p.parent.relative_to(features)) for p in features.rglob("embeddings.parquet"))


def resolve_backbone(root: str | os.PathLike, backbone_id: str | None = None) -> str:
    """The backbone to use: ``backbone_id`` if given and present, else the only one present."""
    present = list_backbones(root)
    if backbone_id is not None:
        if backbone_id not in present:
            have = ", ".join(present) or "none"
            raise InterestError(
                f"{embeddings_path(root, backbone_id)}: no embeddings for backbone '{backbone_id}' "
                f"(present: {have}); run `interest embed` or pick one with --backbone"
            )
        return backbone_id
    if not present:
        raise InterestError(
            f"{Path(root) / 'features'}: no embeddings in this collection; run `interest embed {root}` first"
        )
    if len(present) > 1:
        raise InterestError(
            f"{root}: several backbones have embeddings ({', '.join(present)}); choose one with --backbone"
        )
    return present[0]


def embeddings_to_arrow(
    photo_ids: list[str] | np.ndarray, embeddings: np.ndarray, norms: np.ndarray | None = None
) -> pa.Table:
    """An Arrow table (photo_id, embedding: fixed-size list of float32[, norm: float32, null where NaN]).

    ``norms`` are the rows' L2 norms before normalisation, for heads trained
    on raw features (raw = embedding * norm).
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError("embeddings must be a 2-D array")
    values = pa.array(emb.reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(values, emb.shape[1])
    columns = {"photo_id": pa.array([str(p) for p in photo_ids], pa.string()), "embedding": column}
    if norms is not None:
        norms = np.asarray(norms, dtype=np.float32)
        columns["norm"] = pa.array(norms, pa.float32(), mask=~np.isfinite(norms))
    return pa.table(columns)


def read_embedding_norms(path: str | os.PathLike) -> np.ndarray | None:
    """The ``norm`` column of an embeddings file as float32 (NaN where null), or None when it has none."""
    path = Path(path)
    if "norm" not in pq.read_schema(path).names:
        return None
    return np.asarray(pq.read_table(path, columns=["norm"]).column("norm").to_pandas(), dtype=np.float32)


def write_embeddings(
    root: str | os.PathLike,
    backbone_id: str,
    photo_ids: list[str] | np.ndarray,
    embeddings: np.ndarray,
    *,
    raw: bool = False,
    **manifest_info: object,
) -> Path:
    """Write ``features/<backbone_id>/embeddings.parquet`` atomically, L2-normalising rows.

    ``raw=True``: the rows are features before normalisation (e.g. CLIP's
    ``encode_image`` output) and their norms go to the ``norm`` column, so
    heads trained on raw features can use the table. Without it no ``norm``
    is written: the rows' scale may already be lost.
    """
    raw_rows = np.asarray(embeddings, dtype=np.float32)
    emb = l2_normalize(raw_rows)
    norms = row_norms(raw_rows) if raw else None
    path = embeddings_path(root, backbone_id)
    write_parquet_atomic(path, embeddings_to_arrow(photo_ids, emb, norms=norms))
    update_manifest(root, f"features/{backbone_id}", rows=len(emb), dim=int(emb.shape[1]), **manifest_info)
    return path


def read_embeddings_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a (photo_id, embedding) Parquet file into (ids, float32 matrix).

    Accepts fixed-size and variable-size list columns (as other programs write
    them); rows must all have one length and no NaN. Rows are L2-normalised.
    """
    path = Path(path)
    check_parquet(path, ["photo_id", "embedding"])
    # Row group by row group into one preallocated matrix: a whole-table read
    # peaks at about 2.5 times the matrix (500k x 512: 2.6 GB for 1 GB).
    parquet = pq.ParquetFile(path)
    n = parquet.metadata.num_rows
    if n == 0:
        raise InterestError(f"{path}: no embeddings in this file")
    ids, emb, start = [], None, 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=["photo_id", "embedding"])
        if table.num_rows == 0:
            continue
        part_ids = np.asarray(table.column("photo_id").to_pylist(), dtype=object).astype(str)
        block = _embedding_block(path, part_ids, table.column("embedding").combine_chunks())
        if emb is None:
            emb = np.empty((n, block.shape[1]), dtype=np.float32)
        elif block.shape[1] != emb.shape[1]:
            raise InterestError(
                f"{path}: column 'embedding' has rows of different lengths (photo_id {part_ids[0]})"
            )
        emb[start : start + len(block)] = block
        ids.append(part_ids)
        start += len(block)
    return np.concatenate(ids), l2_normalize(emb, in_place=True)


def _embedding_block(path: Path, ids: np.ndarray, col: pa.Array) -> np.ndarray:
    """One row group's embedding column as a float32 matrix, checked."""
    if col.null_count:
        bad = ids[np.asarray(col.is_null())][0]
        raise InterestError(f"{path}: photo_id {bad} has no embedding; re-run `interest embed`")
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = np.asarray(col.value_lengths())
        if (lengths != lengths[0]).any():
            bad = ids[np.argmax(lengths != lengths[0])]
            raise InterestError(f"{path}: column 'embedding' has rows of different lengths (photo_id {bad})")
        dim = int(lengths[0])
    else:
        raise InterestError(f"{path}: column 'embedding' must be a list of floats, not {col.type}")
    emb = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(ids), dim)
    if not np.isfinite(emb).all():
        bad = ids[~np.isfinite(emb).all(axis=1)][0]
        raise InterestError(f"{path}: photo_id {bad} has a NaN or infinite embedding; re-embed it")
    return emb


def read_embeddings(root: str | os.PathLike, backbone_id: str | None = None) -> tuple[str, np.ndarray, np.ndarray]:
    """Read a collection's embeddings: (backbone_id, photo_ids, float32 matrix)."""
    backbone_id = resolve_backbone(root, backbone_id)
    ids, emb = read_embeddings_file(embeddings_path(root, backbone_id))
    return backbone_id, ids, emb


# ---------------------------------------------------------------- manifest


def read_manifest(root: str | os.PathLike) -> dict:
    """The collection's manifest.json (empty skeleton when absent)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return {"schema_version": SCHEMA_VERSION, "tables": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InterestError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); fix or delete it") from None


def update_manifest(root: str | os.PathLike, entry: str, **info: object) -> None:
    """Record how ``entry`` (a table or features folder) was produced."""
    manifest = read_manifest(root)
    manifest["schema_version"] = SCHEMA_VERSION
    manifest.setdefault("tables", {})[entry] = {
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
    }
    write_json_atomic(Path(root) / "manifest.json", manifest)
