"""Labels: the CI score (image-level by default, or the paper's clusters -> partitions -> distinct users) and trend groups."""

from __future__ import annotations

import os

import pandas as pd

from interest.core.collection import check_parquet, read_manifest, read_table, table_path
from interest.stages.labels.ci import (
    COMMONALITIES,
    METHODS,
    SETTINGS_KEY,
    Commonality,
    label_collection,
    partition_commonality,
    partitions_path,
    read_user_split,
)
from interest.stages.labels.groups import DEFAULT_GROUP_QUANTILES, quantile_cuts
from interest.learn.groups import COMMON, INTERPLAY, SUBJECTIVE, assign_trend_groups

__all__ = [
    "COMMON",
    "COMMONALITIES",
    "METHODS",
    "DEFAULT_GROUP_QUANTILES",
    "INTERPLAY",
    "SUBJECTIVE",
    "Commonality",
    "assign_trend_groups",
    "label_collection",
    "label_settings",
    "partition_commonality",
    "partitions_path",
    "read_user_split",
    "quantile_cuts",
    "read_labels",
]


def read_labels(root: str | os.PathLike) -> pd.DataFrame:
    """labels.parquet of collection ``root``, with its settings in ``.attrs["interest.labels"]``."""
    labels = read_table(root, "labels", required=["photo_id", "set", "partition", "ci_score", "trend_group"])
    labels.attrs[SETTINGS_KEY] = label_settings(root)
    return labels


def label_settings(root: str | os.PathLike) -> dict:
    """How labels.parquet was made: commonality, group cuts, clusters, seed, backbone, ...

    Read from the table's own metadata (it travels with the file), falling
    back to ``manifest.json``; empty for a labels table written by another
    program that recorded neither.
    """
    schema = check_parquet(table_path(root, "labels"))
    settings = (schema.pandas_metadata or {}).get("attributes", {}).get(SETTINGS_KEY)
    if settings is None:
        settings = read_manifest(root).get("tables", {}).get("labels", {})
    return dict(settings)
