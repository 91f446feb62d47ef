"""Metadata features of a photo, from the Flickr fields in photos.parquet.

Counts on Flickr are heavy-tailed (images of the same appeal differ by orders
of magnitude in views), so they enter as log1p. A photo scored inside a photo
app has none of these: every feature is then NaN, which the LightGBM model
handles natively and the embedding-only model never sees.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METADATA_FEATURES = (
    "log_views",
    "log_faves",
    "log_comments",
    "faves_per_view",
    "photo_age_days",
    "owner_ispro",
    "owner_is_photographer",
)


def metadata_features(photos: pd.DataFrame, as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Metadata features indexed by photo_id, one float column per METADATA_FEATURES.

    ``as_of`` is the date photo age is measured from; it defaults to the
    newest upload date in ``photos`` so that the same table always gives the
    same features (never today's date).
    """
    index = pd.Index(photos["photo_id"].astype(str), name="photo_id")
    views = _numeric(photos, "views")
    faves = _numeric(photos, "faves")
    with np.errstate(divide="ignore", invalid="ignore"):
        faves_per_view = np.where(views > 0, faves / views, np.nan)
    upload = (
        pd.to_datetime(photos["upload_date"], utc=True, errors="coerce")
        if "upload_date" in photos
        else pd.Series(pd.NaT, index=photos.index, dtype="datetime64[ns, UTC]")
    )
    age = np.full(len(photos), np.nan)
    if upload.notna().any():
        ref = pd.Timestamp(as_of) if as_of is not None else upload.max()
        ref = ref.tz_localize("UTC") if ref.tzinfo is None else ref
        age = ((ref - upload).dt.total_seconds() / 86400.0).to_numpy(dtype=float, na_value=np.nan)
    occupation = (
        photos["owner_occupation"].astype("string")
        if "owner_occupation" in photos
        else pd.Series(pd.NA, index=photos.index, dtype="string")
    )
    is_photographer = occupation.str.contains("photographer", case=False).astype("Float64")
    return pd.DataFrame(
        {
            "log_views": np.log1p(np.clip(views, 0, None)),
            "log_faves": np.log1p(np.clip(faves, 0, None)),
            "log_comments": np.log1p(np.clip(_numeric(photos, "comments"), 0, None)),
            "faves_per_view": faves_per_view,
            "photo_age_days": age,
            "owner_ispro": _numeric(photos, "owner_ispro"),
            "owner_is_photographer": is_photographer.to_numpy(dtype=float, na_value=np.nan),
        },
        index=index,
    )


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    """Column ``col`` as float with NaN for nulls (all NaN when the column is absent)."""
    if col not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col].astype("Float64"), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
