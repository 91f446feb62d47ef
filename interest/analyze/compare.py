"""This package's CI and trend groups against the study's published ones.

A collection imported from the published FlickrUser CSVs keeps the study's
own ``ci_score``, ``trend_group`` and ``partition`` in ``reference.parquet``
(photo_id + ``published_*`` columns; see docs/collect.md). Comparing ours
with theirs says how faithfully the method was reproduced: a rank
correlation for the score (the normalisation may differ, the order should
not), agreement and Cohen's kappa for the groups, the adjusted Rand index
for the partitions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from interest.collection import read_parquet_checked
from interest.numeric import spearman
from interest.vocabulary import TREND_GROUPS

REFERENCE_FILE = "reference.parquet"
# The study's own characteristics in the published CSVs, and the column each stands in for
# when the collection has none of its own (an imported collection before `interest characterize`).
PUBLISHED_CHARACTERISTICS = {
    "main_style": "published_VILA_main_feature",
    "main_emotion": "published_CLIP_emotion_main_category",
    "aesthetic_score": "published_VILA_aesthetic_score",
}


def read_reference(root: str | os.PathLike) -> pd.DataFrame | None:
    """The published labels of an imported collection (index photo_id), or None when there are none."""
    path = Path(root) / REFERENCE_FILE
    if not path.is_file():
        return None
    ref = read_parquet_checked(path, required=["photo_id"])
    ref = ref.set_index(ref["photo_id"].astype(str)).drop(columns="photo_id")
    ref.index.name = "photo_id"
    return ref if any(c in ref for c in ("published_ci_score", "published_trend_group")) else None


def fill_from_published(frame: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """Fill main style, main emotion and aesthetic score from the published columns where ``frame`` lacks them.

    Modifies ``frame`` in place; returns the columns filled, so the caller can say so.
    """
    filled = []
    for column, source in PUBLISHED_CHARACTERISTICS.items():
        have = column in frame and frame[column].notna().any()
        if have or source not in reference or reference[source].notna().sum() == 0:
            continue
        values = reference[source].reindex(frame.index)
        frame[column] = values.astype("string") if column.startswith("main_") else pd.to_numeric(values, errors="coerce")
        filled.append(column)
    return filled


def compare_published(frame: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, group confusion) of our labels in ``frame`` vs the published ones in ``reference``.

    Only photos present in both count. The confusion table has our groups as
    rows and the published ones as columns (photo counts).
    """
    from sklearn.metrics import adjusted_rand_score, cohen_kappa_score

    published = [c for c in ("published_ci_score", "published_trend_group", "published_partition") if c in reference]
    both = frame.join(reference[published], how="inner")
    rows = []
    if "published_ci_score" in both:
        d = both[["ci_score", "published_ci_score"]].astype(float).dropna()
        if len(d) > 2:
            rows.append(("CI score: Spearman", spearman(d["ci_score"], d["published_ci_score"]), len(d)))
            rows.append(("CI score: Pearson", float(np.corrcoef(d["ci_score"], d["published_ci_score"])[0, 1]), len(d)))
    confusion = pd.DataFrame()
    if "published_trend_group" in both:
        d = both[["trend_group", "published_trend_group"]].dropna().astype(int)
        if len(d):
            ours, theirs = d["trend_group"].to_numpy(), d["published_trend_group"].to_numpy()
            rows.append(("trend group: agreement %", 100 * float((ours == theirs).mean()), len(d)))
            rows.append(("trend group: Cohen's kappa", float(cohen_kappa_score(ours, theirs, labels=[0, 1, 2])), len(d)))
            rows.append(
                ("trend group: linear-weighted kappa", float(cohen_kappa_score(ours, theirs, labels=[0, 1, 2], weights="linear")), len(d))
            )
            counts = np.zeros((len(TREND_GROUPS), len(TREND_GROUPS)), dtype=np.int64)
            np.add.at(counts, (ours, theirs), 1)
            confusion = pd.DataFrame(
                counts, index=pd.Index(TREND_GROUPS, name="ours"), columns=pd.Index(TREND_GROUPS, name="published")
            )
    if "published_partition" in both:
        d = both[["partition", "published_partition"]].dropna().astype(str)
        if len(d):
            rows.append(("partitions: adjusted Rand index", float(adjusted_rand_score(d["published_partition"], d["partition"])), len(d)))
    metrics = pd.DataFrame(rows, columns=["measure", "value", "photos"]).set_index("measure")
    return metrics, confusion


# ---------------------------------------------------------------- the study's notebook, on the published CSVs

# The study's notebook builds its Tables 1 and 3 straight from FlickrUser_definition.csv: one row per
# favourite, grouped by the published trend_group. These are those columns, as the importer names them.
STUDY_GROUP = "published_trend_group"
STUDY_SHARES = {"study_main_style": "published_VILA_main_feature", "study_main_emotion": "published_CLIP_emotion_main_category"}
STUDY_AESTHETIC = "published_VILA_aesthetic_score"
STUDY_ROWS = (
    "rows = favourites (one per user and photo, as the CSV's rows) of the definition photos that have a "
    "published trend_group; CSV rows the importer skipped (no photo id in the URL) are not among them"
)


def published_groups(reference: pd.DataFrame) -> pd.Series:
    """The published trend group of each photo as 0/1/2 (nullable Int64), from numbers or names."""
    if STUDY_GROUP not in reference:
        return pd.Series(pd.NA, index=reference.index, dtype="Int64")
    raw = reference[STUDY_GROUP]
    names = {name: i for i, name in enumerate(TREND_GROUPS)}
    by_name = raw.astype("string").str.strip().str.lower().map(names)
    groups = pd.to_numeric(raw, errors="coerce").fillna(pd.to_numeric(by_name, errors="coerce"))
    return groups.where(groups.isin(range(len(TREND_GROUPS)))).astype("Int64")


def published_labels(reference: pd.DataFrame) -> pd.DataFrame:
    """A labels table (photo_id, set, partition, cluster_label, ci_score, trend_group) from the published columns.

    For an imported collection that has no labels of its own yet: the
    analysis then runs on the study's labels. Photos without a published
    trend group (the additional set) are left out.
    """
    labels = pd.DataFrame(index=reference.index)
    labels["set"] = reference["set"] if "set" in reference else pd.NA
    labels["partition"] = reference["published_partition"].astype("string") if "published_partition" in reference else "?"
    if "published_cluster_label" in reference:
        labels["cluster_label"] = pd.to_numeric(reference["published_cluster_label"], errors="coerce")
    labels["ci_score"] = pd.to_numeric(reference["published_ci_score"], errors="coerce") if "published_ci_score" in reference else np.nan
    labels["trend_group"] = published_groups(reference)
    labels = labels.dropna(subset=["trend_group"])
    return labels.rename_axis("photo_id").reset_index()


def study_rows(favorites: pd.DataFrame, reference: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows the study's notebook computes over: favourites of photos with a published trend group.

    Columns: user_id, photo_id, ``published`` (the published group, 0/1/2),
    the published characteristics and, with our ``labels`` (indexed by
    photo_id), ``ours`` (this package's group of the same photo, or NA).
    """
    ref = reference.assign(published=published_groups(reference))
    ref = ref[ref["published"].notna()]
    keep = ["published", *[c for c in (*STUDY_SHARES.values(), STUDY_AESTHETIC) if c in ref]]
    rows = favorites[["user_id", "photo_id"]].astype({"photo_id": str}).join(ref[keep], on="photo_id", how="inner")
    if labels is not None:
        rows["ours"] = labels["trend_group"].reindex(rows["photo_id"]).astype("Int64").to_numpy()
    return rows.reset_index(drop=True)


def study_tables(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Tables 1 and 3 as the study's notebook computes them, over :func:`study_rows`.

    ``study_main_style`` / ``study_main_emotion``: per published group,
    ``value_counts(normalize=True) * 100`` of the main style / emotion
    (favourites with no value left out), Δ = common − subjective, sorted by
    Δ; ``study_aesthetic_quartiles``: the 25th, 50th and 75th percentile of
    the VILA aesthetic score × 100 (pandas' linear interpolation). With an
    ``ours`` column, the same computed over our trend groups beside them
    (``ours_*`` columns; same rows, those our labels cover). ``study_rows``
    says how many favourites, photos and users each group has.
    """
    kinds = [("published", "")] + ([("ours", "ours_")] if "ours" in rows and rows["ours"].notna().any() else [])
    out: dict[str, pd.DataFrame] = {}
    for name, column in STUDY_SHARES.items():
        if column not in rows or rows[column].notna().sum() == 0:
            continue
        parts = []
        for by, prefix in kinds:
            shares = {g: rows.loc[rows[by] == i, column].value_counts(normalize=True) * 100 for i, g in enumerate(TREND_GROUPS)}
            part = pd.DataFrame(shares)
            for i, g in enumerate(TREND_GROUPS):  # a category a group never shows is 0 %, a group with no rows NaN
                if (rows[by] == i).any():
                    part[g] = part[g].fillna(0.0)
            part["delta"] = part[TREND_GROUPS[0]] - part[TREND_GROUPS[-1]]
            parts.append(part.add_prefix(prefix))
        table = pd.concat(parts, axis=1).sort_values("delta", ascending=False, kind="stable")
        table.index = table.index.astype(str)
        table.index.name = column.removeprefix("published_")
        out[name] = table
    if STUDY_AESTHETIC in rows and rows[STUDY_AESTHETIC].notna().any():
        values = pd.to_numeric(rows[STUDY_AESTHETIC], errors="coerce")
        parts = []
        for by, prefix in kinds:
            quartiles = {
                g: values[rows[by] == i].quantile([0.25, 0.5, 0.75]).to_numpy() * 100 for i, g in enumerate(TREND_GROUPS)
            }
            part = pd.DataFrame(quartiles, index=["25th percentile", "median", "75th percentile"])
            part["delta"] = part[TREND_GROUPS[0]] - part[TREND_GROUPS[-1]]
            parts.append(part.add_prefix(prefix))
        table = pd.concat(parts, axis=1)
        table.index.name = "VILA_aesthetic_score x 100"
        out["study_aesthetic_quartiles"] = table
    if out:
        counts = {}
        for by, prefix in kinds:
            for i, g in enumerate(TREND_GROUPS):
                part = rows[rows[by] == i]
                counts[f"{prefix}{g}"] = {"favourites": len(part), "photos": part["photo_id"].nunique(), "users": part["user_id"].nunique()}
        table = pd.DataFrame(counts)
        table.index.name = "rows"
        out["study_rows"] = table
    return out
