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
from scipy import stats as sps

from interest.collection import TREND_GROUPS, read_parquet_checked

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
            rows.append(("CI score: Spearman", float(sps.spearmanr(d["ci_score"], d["published_ci_score"])[0]), len(d)))
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
