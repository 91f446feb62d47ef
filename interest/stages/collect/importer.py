"""Import the published FlickrUser CSV files into a collection.

Two published schemas are read (the schema is told by the columns, the set by
the file):

* current: ``FlickrUser_definition.csv`` (set ``train``: the images that define
  the CI score) and ``FlickrUser_additional.csv`` (set ``test``), with
  ``user_id, user_gender, user_country, user_timezone_label, user_timezone_id,
  favimg_url, favimg_num_views, favimg_num_favorites, favimg_num_comments,
  favimg_upload_date, favimg_owner_ispro, favimg_owner_occupation`` and the
  published scores;
* older single file ``FlickrUser.csv``: ``user, img_id, img_url, views,
  favorites, comments, upload_date, ..., set, ci_score, cluster_label,
  partition, group``.

Each row is one favourite (a user and an image); ``favorites.parquet`` says
in ``source`` which published file it came from: ``definition`` or
``additional`` (for the older file, its ``train`` and ``test`` rows), as the
study's notebook computes its tables on the definition rows alone. A user and
photo in both files is a definition favourite, and a photo in both files a
definition photo. ``photo_id`` is the Flickr
photo id: ``img_id`` when the file has it, else the id in the static image URL
(``.../{server}/{id}_{secret}[_{size}].jpg``); rows whose URL carries no id are
skipped and counted. The CSVs have no owner ids or favourite dates: those
columns stay null.

The published scores are kept, unchanged, in ``reference.parquet`` (keyed by
photo_id) with a ``published_`` prefix: ``published_ci_score``,
``published_trend_group`` (the older file's ``group``), ``published_partition``,
``published_cluster_label``, ``published_ci_r_score``, ``published_VILA_*``,
``published_CLIP_emotion_*`` (the older file's ``main_feature``,
``quality_score`` and ``emotion_category`` under the current names), plus
``set`` (train/test). ``set`` is also a
column of ``photos.parquet``. Only the analysis reads them (the study's
tables, the comparison with this package's labels): no pipeline stage does.

Every file is read and checked before anything is written: counts that are
not numbers in 0..10**12 (``1e400``, a 23-digit number, a negative count) and
dates outside 1970..2100 (upload_date ``99999999999``) become nulls, and the
summary names each one by file, line and column. Image file names never come
from the ids as they are (:func:`interest.core.collection.image_relpath`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from interest.stages.collect.client import FlickrClient
from interest.stages.collect.answers import MAX_COUNT, MAX_TIMESTAMP
from interest.stages.collect.download import download_images, remove_temporaries
from interest.stages.collect.state import CrawlLock, CrawlState
from interest.stages.collect.tables import add_image_status
from interest.core.collection import (
    REFERENCE_FILE,
    TABLES,
    coerce_columns,
    read_manifest,
    update_manifest,
    write_json_atomic,
    write_parquet_atomic,
    write_table,
)
from interest.core.errors import InterestError, one_line

_PHOTO_ID_IN_URL = re.compile(r"/(\d+)_[0-9a-zA-Z]+(?:_[0-9a-zA-Z]{1,2})?\.(?:jpe?g|png|gif)(?:\?.*)?$", re.IGNORECASE)

#: contract column -> the columns that may hold it, current schema first
_ALIASES = {
    "user_id": ("user_id", "user"),
    "photo_id": ("img_id",),
    "url": ("favimg_url", "img_url"),
    "gender": ("user_gender", "gender"),
    "country": ("user_country", "country"),
    "timezone_label": ("user_timezone_label", "timezone_label"),
    "timezone_id": ("user_timezone_id", "timezone_id"),
    "views": ("favimg_num_views", "views"),
    "faves": ("favimg_num_favorites", "favorites"),
    "comments": ("favimg_num_comments", "comments"),
    "upload_date": ("favimg_upload_date", "upload_date"),
    "owner_ispro": ("favimg_owner_ispro", "owner_ispro", "img_owner_ispro", "ispro"),
    "owner_occupation": ("favimg_owner_occupation", "owner_occupation", "img_owner_occupation", "occupation"),
}
_REFERENCE = {"ci_score": "ci_score", "trend_group": "trend_group", "group": "trend_group", "partition": "partition",
              "cluster_label": "cluster_label", "ci_r_score": "ci_r_score"}
# The older single file names the study's characteristics without their model's prefix.
_OLDER_CHARACTERISTICS = {"main_feature": "VILA_main_feature", "quality_score": "VILA_aesthetic_score",
                          "emotion_category": "CLIP_emotion_main_category"}
#: the published file a favourite came from, by the set of its CSV row (the older file's train rows are its
#: definition set: the study's notebook computes on them as on FlickrUser_definition.csv)
SOURCES = {"train": "definition", "test": "additional"}
_TRUE = {"1", "true", "yes", "t", "1.0"}
_FALSE = {"0", "false", "no", "f", "0.0"}


def photo_id_from_url(url: str | None) -> str | None:
    """The Flickr photo id in a static image URL, or None."""
    if not isinstance(url, str):
        return None
    m = _PHOTO_ID_IN_URL.search(url.strip())
    return m.group(1) if m else None


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    for alias in _ALIASES[name]:
        if alias in df.columns:
            return df[alias]
    return pd.Series(pd.NA, index=df.index, dtype="string")


def _set_of(path: Path, df: pd.DataFrame) -> pd.Series:
    if "set" in df.columns:
        return df["set"].str.strip().str.lower()
    name = path.name.lower()
    if "additional" in name or ("ci_r_score" in df.columns and "ci_score" not in df.columns):
        return pd.Series("test", index=df.index, dtype="string")
    return pd.Series("train", index=df.index, dtype="string")


def read_flickruser_csv(path: str | os.PathLike) -> tuple[pd.DataFrame, int]:
    """One FlickrUser CSV as rows of contract columns + ``set`` + reference columns; and rows skipped."""
    path = Path(path)
    if not path.is_file():
        raise InterestError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InterestError(f"{path}: not a readable CSV ({one_line(exc)})") from None
    df.columns = [c.strip() for c in df.columns]
    older = "img_url" in df.columns or ("user" in df.columns and "user_id" not in df.columns)
    required = ("user", "img_url") if older else ("user_id", "favimg_url")
    for col in required:
        if col not in df.columns:
            raise InterestError(
                f"{path}: missing column '{col}'; a FlickrUser CSV needs user_id and favimg_url "
                "(FlickrUser_definition/additional.csv) or user and img_url (the older FlickrUser.csv)"
            )
    rows = pd.DataFrame({name: _column(df, name) for name in _ALIASES})
    from_url = rows["url"].map(photo_id_from_url)
    rows["photo_id"] = rows["photo_id"].str.strip().str.replace(r"\.0$", "", regex=True).fillna(from_url) if "img_id" in df else from_url
    rows["set"] = _set_of(path, df).to_numpy()
    rows["source"] = rows["set"].map(SOURCES).astype("string")
    for col, ref in _REFERENCE.items():
        if col in df.columns:
            rows[f"published_{ref}"] = df[col]
    for col in df.columns:
        if col.startswith(("VILA_", "CLIP_emotion_")):
            rows[f"published_{col}"] = df[col]
    for col, name in _OLDER_CHARACTERISTICS.items():
        if col in df.columns and name not in df.columns:
            rows[f"published_{name}"] = df[col]
    rows["_where"] = [f"{path.name}:{i + 2}" for i in range(len(df))]  # line numbers: the header is line 1
    keep = rows["photo_id"].notna() & rows["user_id"].notna()
    return rows[keep], int((~keep).sum())


def _as_bool(col: pd.Series) -> pd.Series:
    text = col.astype("string").str.strip().str.lower()
    return pd.Series(pd.NA, index=col.index, dtype="boolean").mask(text.isin(_TRUE), True).mask(text.isin(_FALSE), False)


def _as_date(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(dates, which given values were out of range or unreadable) of a date column."""
    text = col.astype("string").str.strip()
    is_number = text.str.fullmatch(r"\d+(\.\d+)?", na=False)
    numeric = pd.to_numeric(text.where(is_number), errors="coerce")
    numeric_ok = numeric.between(0, MAX_TIMESTAMP)
    dates = pd.to_datetime(text.where(~is_number), utc=True, errors="coerce", format="mixed")
    low, high = pd.Timestamp(0, unit="s", tz="UTC"), pd.Timestamp(MAX_TIMESTAMP, unit="s", tz="UTC")
    dates = dates.where((dates >= low) & (dates <= high))
    seconds = pd.to_datetime(numeric.where(numeric_ok), unit="s", utc=True)
    out = dates.fillna(seconds)
    return out, text.notna() & (text != "") & out.isna()


def _as_int(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(counts as Int64, which given values were out of range or not numbers) of a count column."""
    given = col.notna() & (col.astype("string").str.strip() != "")
    numeric = pd.to_numeric(col, errors="coerce").astype("float64")
    ok = np.isfinite(numeric) & (numeric >= 0) & (numeric <= MAX_COUNT)
    return numeric.where(ok).round().astype("Int64"), given & ~ok


def _published(col: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(col, errors="coerce")
    # a column that is all numbers (or empty) is kept as numbers, a label column as text
    return numeric if numeric.notna().sum() == col.notna().sum() else col.astype("string")


def import_flickruser(
    csv_paths: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    download: bool = False,
    image_host: str | None = None,
    threads: int = 8,
    retries: int = 3,
    timeout: float = 30.0,
    progress: bool = True,
    retry_failed: bool = False,
    **download_options: object,
) -> dict:
    """Import FlickrUser CSVs into collection ``out``; with ``download``, fetch the images too.

    Writes ``users``, ``photos``, ``favorites`` and ``reference.parquet``, only
    after every file has been read and checked; returns a summary (rows per
    table, rows skipped, values out of range by column, images by status).
    ``image_host`` replaces the static host of the URLs (a mirror or a local
    server); ``retries`` bounds the tries of an image on transient failures.
    Downloads resume where an earlier import stopped;
    ``retry_failed`` first puts back those that failed for a transient reason.
    ``download_options`` go to :func:`interest.stages.collect.download.download_images`.
    """
    paths = [Path(p) for p in csv_paths]
    if not paths:
        raise InterestError("no CSV files given: pass FlickrUser_definition.csv / FlickrUser_additional.csv or FlickrUser.csv")
    parts, skipped = [], 0
    for path in paths:
        rows, n_skipped = read_flickruser_csv(path)
        parts.append(rows)
        skipped += n_skipped
    rows = pd.concat(parts, ignore_index=True)
    # Definition rows first, whatever the order of the files: a photo in both files is a definition photo
    # (set train, its published trend group), and a user and photo in both is a favourite from the definition.
    rows = rows.iloc[np.argsort(~rows["source"].eq("definition").fillna(False).to_numpy(bool), kind="stable")]
    out = Path(out)

    users = rows.drop_duplicates("user_id")[["user_id", "gender", "timezone_label", "timezone_id", "country"]]
    photos = rows.drop_duplicates("photo_id")
    checked, out_of_range = {}, {}
    for col in ("views", "faves", "comments", "upload_date"):
        checked[col], bad = (_as_date if col == "upload_date" else _as_int)(photos[col])
        if bad.any():
            out_of_range[col] = photos.loc[bad, "_where"].tolist()
    photos = pd.DataFrame(
        {
            "photo_id": photos["photo_id"],
            "owner_id": pd.NA,
            "url": photos["url"],
            **checked,
            "owner_ispro": _as_bool(photos["owner_ispro"]),
            "owner_occupation": photos["owner_occupation"],
            "set": photos["set"],
        }
    ).sort_values("photo_id")
    favorites = rows.drop_duplicates(["user_id", "photo_id"])[["user_id", "photo_id", "source"]].assign(fave_date=pd.NaT)
    ref_cols = [c for c in rows.columns if c.startswith("published_")]
    # per photo, each published column's first value (definition rows first): a photo in both files keeps
    # the definition's scores and the additional file's ci_r_score
    reference = rows.groupby("photo_id", sort=True)[["set", *ref_cols]].first().reset_index()
    for col in ref_cols:
        reference[col] = _published(reference[col])

    # the same coercion write_table does, for every table, before anything is written
    for name, table in (("users", users), ("photos", photos), ("favorites", favorites)):
        coerce_columns(table, TABLES[name].columns)

    if retry_failed and not download:
        raise InterestError("--retry-failed retries failed downloads: add --download")
    out.mkdir(parents=True, exist_ok=True)
    with CrawlLock(out, "interest import flickruser"):
        images, retried = {}, None
        if download:
            remove_temporaries(out)
            state = CrawlState(CrawlState.for_output(out))
            client = FlickrClient("", image_host=image_host, retries=retries, timeout=timeout, threads=threads)
            try:
                if retry_failed:
                    state.retry_transient_failures(calls=False)
                download_images(
                    out, zip(photos["photo_id"], photos["url"]), client, state, threads=threads, progress=progress,
                    retries=retries, **download_options,
                )
                images = state.image_rows()
                retried = state.retried_outcome() if retry_failed else None
            except BaseException:
                client.stop()
                raise
            finally:
                state.close()
        summary = _write_import(out, paths, users, photos, favorites, reference, ref_cols, images, skipped, out_of_range)
    if retried is not None:
        summary["retry_failed"] = retried
    return summary


def _write_import(
    out: Path, paths: list[Path], users: pd.DataFrame, photos: pd.DataFrame, favorites: pd.DataFrame,
    reference: pd.DataFrame, ref_cols: list[str], images: dict, skipped: int, out_of_range: dict[str, list[str]],
) -> dict:
    add_image_status(photos, images)

    info = {"source": "FlickrUser CSV import", "files": [p.name for p in paths]}
    write_table(out, "users", users.sort_values("user_id"), **info)
    write_table(out, "photos", photos, **info)
    write_table(out, "favorites", favorites.sort_values(["user_id", "photo_id"]), **info)
    write_parquet_atomic(out / REFERENCE_FILE, reference.reset_index(drop=True))
    update_manifest(out, "reference", rows=len(reference), columns=ref_cols, **info)
    summary = {
        "users": len(users),
        "photos": len(photos),
        "favorites": len(favorites),
        "rows_skipped": skipped,
        "sets": {k: int(v) for k, v in photos["set"].value_counts().items()},
        "images": {k: int(v) for k, v in photos["status"].value_counts().items()},
        "out_of_range": out_of_range,
    }
    manifest = read_manifest(out)
    manifest["import"] = summary
    write_json_atomic(out / "manifest.json", manifest)
    return summary
