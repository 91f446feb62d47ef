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

from interest.core.collection import REFERENCE_FILE, read_parquet_checked
from interest.core.numeric import spearman
from interest.core.vocabulary import TREND_GROUPS

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

# The study's notebook computes its Tables 1 and 3 and the photographers' share straight from
# FlickrUser_definition.csv (df_definition): one row per favourite, split by the published trend_group,
# every share `value_counts(normalize=True).round(4) * 100`, every quartile `describe()[...].round(4) * 100`,
# each Delta = Common - Subjective of those rounded numbers. These are its columns, as the importer names them.
STUDY_GROUP = "published_trend_group"
STUDY_STYLE = "published_VILA_main_feature"
STUDY_EMOTION = "published_CLIP_emotion_main_category"
STUDY_AESTHETIC = "published_VILA_aesthetic_score"
#: favorites.parquet ``source`` of the notebook's rows (the importer's name for FlickrUser_definition.csv)
STUDY_SOURCE = "definition"
#: Table 3's two blocks as the notebook builds them: its categories, their labels, the sum row's label
EMOTION_BLOCKS = (
    ("Sum Positive", ("excitement", "awe", "contentment", "amusement")),
    ("Sum Negative", ("sadness", "disgust", "anger", "fear")),
)
QUARTILES = {"25%": "25th percentile", "50%": "median", "75%": "75th percentile"}
PHOTOGRAPHERS = "owner is a photographer"
STUDY_ROWS = (
    "rows = the favourites from FlickrUser_definition.csv (favorites.parquet source 'definition'; the older "
    "FlickrUser.csv's train rows) whose photo has a published trend_group, one per user and photo; shares and "
    "quartiles rounded as the notebook rounds them (round(4) * 100)"
)
ALL_FAVOURITES = (
    "but favorites.parquet has no source column (imported before it was recorded): rows = every favourite of a "
    "photo with a published trend_group, the additional file's too; run `interest import flickruser` again for "
    "the notebook's rows"
)


def published_groups(reference: pd.DataFrame) -> pd.Series:
    """The published trend group of each photo as 0/1/2 (nullable Int64), from numbers or names."""
    if STUDY_GROUP not in reference:
        return pd.Series(pd.NA, index=reference.index, dtype="Int64")
    raw = reference[STUDY_GROUP]
    names = {name: i for i, name in enumerate(TREND_GROUPS)}
    by_name = raw.astype("string").str.strip().str.lower().map(names)
    groups = pd.to_numeric(raw, errors="coerce").astype("float64").fillna(pd.to_numeric(by_name, errors="coerce").astype("float64"))
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


def has_sources(favorites: pd.DataFrame) -> bool:
    """Whether ``favorites`` says which published file each favourite came from (imports since the column exists)."""
    return "source" in favorites and bool(favorites["source"].notna().any())


def study_rows(
    favorites: pd.DataFrame,
    reference: pd.DataFrame,
    labels: pd.DataFrame | None = None,
    occupations: pd.Series | None = None,
) -> pd.DataFrame:
    """The rows the study's notebook computes over: its df_definition, one row per user and photo.

    ``favorites`` with a ``source`` column keeps only the favourites from the
    definition file (with none, every favourite counts: a collection
    imported before the column existed); of those, the photos with a
    published trend group. Columns: user_id, photo_id, ``published`` (the
    published group, 0/1/2), the published characteristics; with our
    ``labels`` (indexed by photo_id) ``ours`` (this package's group of the
    same photo, or NA); with the owners' ``occupations`` (indexed by
    photo_id) ``is_photographer``, 1 when "photographer" is in the
    occupation as the notebook tests it (``str(occupation).lower()``), else 0.
    """
    ref = reference.assign(published=published_groups(reference))
    ref = ref[ref["published"].notna()]
    keep = ["published", *[c for c in (STUDY_STYLE, STUDY_EMOTION, STUDY_AESTHETIC) if c in ref]]
    favs = favorites
    if has_sources(favs):
        favs = favs[favs["source"].eq(STUDY_SOURCE).fillna(False).to_numpy(bool)]
    rows = favs[["user_id", "photo_id"]].astype({"photo_id": str}).join(ref[keep], on="photo_id", how="inner")
    if labels is not None:
        rows["ours"] = labels["trend_group"].reindex(rows["photo_id"]).astype("Int64").to_numpy()
    if occupations is not None and occupations.notna().any():
        text = occupations.reindex(rows["photo_id"]).astype(object).map(str).str.lower()  # NaN -> "nan", as str() does
        rows["is_photographer"] = text.str.contains("photographer", regex=False).astype(int).to_numpy()
    return rows.reset_index(drop=True)


def _group(rows: pd.DataFrame, by: str, group: int) -> pd.DataFrame:
    """The rows of one trend group (the notebook's df_common, df_interplay, df_subjective)."""
    return rows[rows[by].eq(group).fillna(False).to_numpy(bool)]


def _with_delta(parts: list[pd.Series]) -> pd.DataFrame:
    """The three groups' columns side by side (the notebook's pd.concat), and Delta = common - subjective."""
    table = pd.concat(parts, axis=1)
    table.columns = list(TREND_GROUPS)
    table["delta"] = table[TREND_GROUPS[0]] - table[TREND_GROUPS[-1]]
    return table


def notebook_shares(rows: pd.DataFrame, by: str, column: str) -> pd.DataFrame:
    """Per group, the share in % of each value of ``column`` as the notebook computes it, with Delta.

    ``df.value_counts(subset=[column], normalize=True).round(4) * 100`` per
    group (rows without a value left out); a value a group never shows is
    NaN, as the notebook's ``pd.concat`` leaves it. Not sorted.
    """
    parts = [_group(rows, by, g).value_counts(subset=[column], normalize=True).round(4) * 100 for g in range(len(TREND_GROUPS))]
    table = _with_delta(parts)
    table.index = table.index.get_level_values(0).astype(str)  # value_counts(subset=[...]) keys are 1-tuples
    return table


def notebook_quartiles(rows: pd.DataFrame, by: str, column: str) -> pd.DataFrame:
    """Per group, ``describe()[['25%', '50%', '75%']].round(4) * 100`` of ``column``, with Delta."""
    values = rows.assign(**{column: pd.to_numeric(rows[column], errors="coerce").astype("float64")})
    parts = [_group(values, by, g)[column].describe()[list(QUARTILES)].round(4) * 100 for g in range(len(TREND_GROUPS))]
    return _with_delta(parts).rename(index=QUARTILES)


def notebook_emotions(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """Table 3 as the notebook builds it: a positive and a negative block, each sorted by Delta, each with its sum.

    The categories are matched without regard to case (the current CSV
    writes ``excitement``, the older file ``Excitement``) and labelled as the
    notebook labels them; the notebook would stop on a category a group
    lacks, this shows NaN (and leaves it out of the sum, as pandas' ``sum``
    does). Categories outside the eight (the notebook has none) follow, sorted
    by Delta, without a sum.
    """
    lowered = rows.assign(**{STUDY_EMOTION: rows[STUDY_EMOTION].astype("string").str.strip().str.lower()})
    shares = notebook_shares(lowered, by, STUDY_EMOTION)
    blocks, known = [], set()
    for total, categories in EMOTION_BLOCKS:
        known.update(categories)
        if not shares.index.isin(categories).any():
            continue
        block = shares.reindex(list(categories))
        block.index = [c.capitalize() for c in categories]
        block = block.sort_values("delta", ascending=False)
        block.loc[total] = block.sum()
        blocks.append(block)
    others = shares[~shares.index.isin(sorted(known))].sort_values("delta", ascending=False)
    return pd.concat([*blocks, others]) if blocks else others


def notebook_photographers(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """The share of rows whose photo's owner is a photographer, per group, as the notebook computes it.

    ``df.value_counts(subset=['is_photographer'], normalize=True).round(4) * 100``
    at 1, per row (a photo favourited by ten users counts ten times); 0 for
    a group without photographers (where the notebook stops), NaN for a
    group without rows.
    """
    parts = []
    for g in range(len(TREND_GROUPS)):
        part = _group(rows, by, g)
        share = part.value_counts(subset=["is_photographer"], normalize=True).round(4) * 100
        share.index = share.index.get_level_values(0)
        parts.append(pd.Series({PHOTOGRAPHERS: share.get(1, 0.0) if len(part) else np.nan}))
    return _with_delta(parts)


def study_tables(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Tables 1 and 3 and the photographers' share as the study's notebook computes them, over :func:`study_rows`.

    ``study_main_style``: the VILA main feature's shares per published group
    and Delta, sorted by Delta as the notebook sorts (a category a group
    never shows is NaN and sorts last); ``study_aesthetic_quartiles``: the
    VILA aesthetic score's quartiles × 100; ``study_main_emotion``: Table 3
    (:func:`notebook_emotions`); ``study_photographers``: the owners who are
    photographers, % of rows. Every number rounded as the notebook rounds
    (``round(4) * 100``), every Delta from the rounded numbers. With an
    ``ours`` column, the same computed over our trend groups beside them
    (``ours_*`` columns; same rows, those our labels cover). ``study_rows``
    says how many favourites, photos and users each group has.
    """
    kinds = [("published", "")] + ([("ours", "ours_")] if "ours" in rows and rows["ours"].notna().any() else [])
    builders = {}
    if STUDY_STYLE in rows and rows[STUDY_STYLE].notna().any():
        builders["study_main_style"] = (lambda by: notebook_shares(rows, by, STUDY_STYLE), "VILA_main_feature", True)
    if STUDY_AESTHETIC in rows and pd.to_numeric(rows[STUDY_AESTHETIC], errors="coerce").notna().any():
        builders["study_aesthetic_quartiles"] = (lambda by: notebook_quartiles(rows, by, STUDY_AESTHETIC), "VILA_aesthetic_score x 100", False)
    if STUDY_EMOTION in rows and rows[STUDY_EMOTION].notna().any():
        builders["study_main_emotion"] = (lambda by: notebook_emotions(rows, by), "CLIP_emotion_main_category", False)
    if "is_photographer" in rows:
        builders["study_photographers"] = (lambda by: notebook_photographers(rows, by), "% of rows", False)
    out: dict[str, pd.DataFrame] = {}
    for name, (build, index_name, sort) in builders.items():
        table = build("published")
        for by, prefix in kinds[1:]:  # ours beside, in the published table's rows and order
            table = table.join(build(by).add_prefix(prefix), how="left")
        if sort:
            table = table.sort_values("delta", ascending=False)
        table.index.name = index_name
        out[name] = table
    if out:
        counts = {}
        for by, prefix in kinds:
            for i, g in enumerate(TREND_GROUPS):
                part = _group(rows, by, i)
                counts[f"{prefix}{g}"] = {"favourites": len(part), "photos": part["photo_id"].nunique(), "users": part["user_id"].nunique()}
        table = pd.DataFrame(counts)
        table.index.name = "rows"
        out["study_rows"] = table
    return out
