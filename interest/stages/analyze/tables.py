"""The study's tables per trend group, with intervals and tests.

Every table compares the three trend groups (common, interplay, subjective)
and has a ``delta`` column, common − subjective, as in the study; each delta
comes with a bootstrap interval (``delta_lo``, ``delta_hi``) that resamples
whole partitions, a test, an effect size and ``real``: whether the difference
survives both the Holm-adjusted test and the interval (see
:mod:`interest.stages.analyze.stats`).

All tables are plain DataFrames indexed by the row label, so a notebook can
show them as they are and the report can write them as CSV.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from interest.stages.analyze import stats
from interest.core.collection import has_table, read_table
from interest.core.vocabulary import TREND_GROUPS
from interest.core.errors import InterestError
from interest.models.metadata import metadata_features

GROUPS = list(TREND_GROUPS)  # column order of every table
COMMON, SUBJECTIVE = GROUPS[0], GROUPS[-1]
ALPHA = 0.05  # significance level for `real`, after Holm's correction

# Columns of the photo table that are bookkeeping, not characteristics.
_NOT_CHARACTERISTICS = {"photo_id", "main_style", "main_emotion"}


def photo_table(root: str | os.PathLike, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per labelled photo: labels, raw metadata, metadata features, characteristics.

    The labels are the collection's labels.parquet, or ``labels`` when given
    (the same columns; e.g. the study's published ones, see
    :func:`interest.stages.analyze.compare.published_labels`).

    Indexed by photo_id; ``group`` is the trend group's name. ``main_style``
    and ``main_emotion`` are taken from characteristics.parquet, or derived as
    the highest-scoring ``style_*`` / ``emotion_*`` column when only the scores
    are there. ``owner_is_photographer`` follows the study: "photographer" in
    the owner's occupation; an empty occupation counts as not a photographer
    (it stays unknown only when the collection has no occupations at all).
    """
    if labels is None:
        labels = read_table(root, "labels", required=["photo_id", "partition", "ci_score", "trend_group"])
    labels = labels.dropna(subset=["trend_group"])
    if labels.empty:
        raise InterestError(f"{Path(root) / 'labels.parquet'}: no labelled photos; run `interest label {root}`")
    frame = labels.set_index(labels["photo_id"].astype(str)).drop(columns="photo_id")
    frame.index.name = "photo_id"
    frame["trend_group"] = frame["trend_group"].astype(int)
    bad = frame.loc[~frame["trend_group"].isin(range(len(GROUPS)))]
    if len(bad):
        raise InterestError(
            f"{Path(root) / 'labels.parquet'}: photo_id {bad.index[0]} has trend_group {bad['trend_group'].iloc[0]}; "
            "expected 0, 1 or 2 (re-run `interest label`)"
        )
    frame["partition"] = frame["partition"].astype(str)
    frame["group"] = pd.Categorical.from_codes(frame["trend_group"].to_numpy(), GROUPS)

    photos = read_table(root, "photos")
    photos = photos.assign(photo_id=photos["photo_id"].astype(str)).set_index("photo_id", drop=False)
    raw = ["path", "views", "faves", "comments", "upload_date", "owner_ispro", "owner_occupation"]
    frame = frame.join(photos[[c for c in raw if c in photos]], how="left")
    features = metadata_features(photos.reset_index(drop=True))
    frame = frame.join(features.drop(columns=[c for c in features if c in frame]), how="left")
    if "owner_occupation" in frame and frame["owner_occupation"].notna().any():
        frame["owner_is_photographer"] = frame["owner_is_photographer"].fillna(0.0)

    if has_table(root, "characteristics"):
        chars = read_table(root, "characteristics")
        chars = chars.assign(photo_id=chars["photo_id"].astype(str)).set_index("photo_id")
        frame = frame.join(chars.drop(columns=[c for c in chars if c in frame]), how="left")
    for kind in ("style", "emotion"):
        main = f"main_{kind}"
        scores = [c for c in frame if c.startswith(f"{kind}_")]
        if main not in frame and scores:
            best = frame[scores].astype(float).idxmax(axis=1, skipna=True)
            frame[main] = best.str.removeprefix(f"{kind}_")
        if main in frame:
            frame[main] = frame[main].astype("string")
    return frame


def aesthetic_column(frame: pd.DataFrame) -> str | None:
    """The aesthetic column present: a learned ``aesthetic_score``, else ``aesthetic_proxy``."""
    for col in ("aesthetic_score", "aesthetic_proxy"):
        if col in frame and frame[col].notna().any():
            return col
    return None


def characteristic_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric characteristics in the photo table (perceptual, aesthetic, style/emotion scores)."""
    skip = set(_NOT_CHARACTERISTICS)
    skip |= {"set", "cluster_label", "partition", "ci_score", "trend_group", "group", "path"}
    skip |= {c for c in frame if c.startswith("ci_") or c.startswith("published_")}
    skip |= {"views", "faves", "comments", "upload_date", "owner_ispro", "owner_occupation", *metadata_features(frame.iloc[:0].reset_index()).columns}
    # a constant column (e.g. no clipped highlights anywhere) separates nothing
    return [c for c in frame if c not in skip and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].nunique() > 1]


# ---------------------------------------------------------------- tables


def group_summary(frame: pd.DataFrame, partitions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Size of each trend group: photos, share of photos, partitions and CI range."""
    rows = {}
    for g, name in enumerate(GROUPS):
        part = frame[frame["trend_group"] == g]
        row = {
            "photos": len(part),
            "share_%": 100.0 * len(part) / len(frame),
            "partitions": part["partition"].nunique(),
            "ci_min": part["ci_score"].min(),
            "ci_median": part["ci_score"].median(),
            "ci_max": part["ci_score"].max(),
        }
        if partitions is not None and "distinct_users" in partitions:
            users = partitions.loc[partitions["trend_group"] == g, "distinct_users"]
            row["distinct_users_median"] = users.median()
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index").astype({"photos": int, "partitions": int})
    out.index.name = "trend_group"
    return out


def share_table(
    frame: pd.DataFrame,
    column: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    cluster: str | None = "partition",
) -> pd.DataFrame:
    """Share (percent) of each group's photos whose ``column`` is each category.

    Photos with no value are left out of the denominators. Rows are sorted by
    delta, largest first, as the study prints them. Test: two-proportion z
    (common vs subjective) with Cohen's h.
    """
    data = frame.dropna(subset=[column])
    values = data[column].astype(str)
    rows = {
        cat: _share_row(data, (values == cat).to_numpy(dtype=float), table=column, row=cat, n_boot=n_boot, seed=seed, level=level, cluster=cluster)
        for cat in sorted(values.unique())
    }
    out = _finish(rows, effect="cohens_h")
    out.index.name = column
    return out.sort_values("delta", ascending=False, kind="stable")


def binary_table(
    frame: pd.DataFrame,
    columns: dict[str, str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    cluster: str | None = "partition",
) -> pd.DataFrame:
    """Share (percent) of each group's photos for which a 0/1 column is 1.

    ``columns`` maps a row label to its column; columns absent or all empty
    are skipped. Same statistics as :func:`share_table`.
    """
    rows = {}
    for label, col in columns.items():
        if col not in frame or frame[col].notna().sum() == 0:
            continue
        data = frame.dropna(subset=[col])
        flag = data[col].astype(float).to_numpy()
        rows[label] = _share_row(data, flag, table="binary", row=label, n_boot=n_boot, seed=seed, level=level, cluster=cluster)
    out = _finish(rows, effect="cohens_h")
    out.index.name = "share of photos"
    return out


def quantile_table(
    frame: pd.DataFrame,
    column: str,
    *,
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75),
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    cluster: str | None = "partition",
) -> pd.DataFrame:
    """Quantiles of ``column`` per group (the study's aesthetic table), with delta intervals.

    The test of the whole distribution is in :func:`continuous_table`; rows
    here carry intervals only.
    """
    data = frame.dropna(subset=[column])
    rows = {}
    for q in quantiles:
        label = _quantile_name(q)
        rows[label] = _compare(data, data[column].to_numpy(dtype=float), "quantile", q, table=column, row=label, n_boot=n_boot, seed=seed, level=level, cluster=cluster)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["real"] = (out["delta_lo"] > 0) | (out["delta_hi"] < 0)
    out.index.name = column
    return out


def continuous_table(
    frame: pd.DataFrame,
    columns: list[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    cluster: str | None = "partition",
) -> pd.DataFrame:
    """Median of each column per group, delta of medians with interval, Mann-Whitney test.

    Effect size: rank-biserial r of common vs subjective. Rows are sorted by
    |r|, largest first, so the characteristics that separate the groups most
    come first.
    """
    rows = {}
    for col in columns:
        data = frame.dropna(subset=[col])
        if data.empty:
            continue
        values = data[col].to_numpy(dtype=float)
        rows[col] = _compare(data, values, "quantile", 0.5, table="median", row=col, n_boot=n_boot, seed=seed, level=level, cluster=cluster)
        groups = data["trend_group"].to_numpy()
        rows[col]["rank_biserial"], rows[col]["p"] = stats.mann_whitney(values[groups == 0], values[groups == len(GROUPS) - 1])
    out = _finish(rows, effect="rank_biserial")
    out.index.name = "median of"
    if len(out):
        out = out.iloc[np.argsort(-out["rank_biserial"].abs().fillna(-1).to_numpy(), kind="stable")]
    return out


def omnibus_tests(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One chi-square test per categorical column: does the category mix differ across the three groups?"""
    rows = {}
    for col in columns:
        if col not in frame or frame[col].notna().sum() == 0:
            continue
        counts = pd.crosstab(frame[col].astype(str), frame["trend_group"]).reindex(columns=range(len(GROUPS)), fill_value=0)
        chi2, p, v = stats.chi_square(counts.to_numpy())
        rows[col] = {"test": "chi-square, categories x 3 groups", "statistic": chi2, "p": p, "effect": v, "effect_name": "Cramer's V"}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["test", "statistic", "p", "effect", "effect_name"])
    out.index.name = "column"
    return out


# ---------------------------------------------------------------- helpers


def _share_row(data: pd.DataFrame, hit: np.ndarray, *, table: str, row: str, **options) -> dict:
    """Percent of each group with ``hit`` = 1, delta interval, z-test and Cohen's h."""
    row_stats = _compare(data, hit, "mean", 0.5, scale=100.0, table=table, row=row, **options)
    groups = data["trend_group"].to_numpy()
    common, subjective = hit[groups == 0], hit[groups == len(GROUPS) - 1]
    if len(common) and len(subjective):
        row_stats["cohens_h"] = stats.cohens_h(common.mean(), subjective.mean())
    else:
        row_stats["cohens_h"] = np.nan
    row_stats["z"], row_stats["p"] = stats.two_proportion_test(
        int(common.sum()), len(common), int(subjective.sum()), len(subjective)
    )
    return row_stats


def _compare(
    data: pd.DataFrame,
    values: np.ndarray,
    stat: str,
    q: float,
    *,
    table: str,
    row: str,
    n_boot: int,
    seed: int,
    level: float,
    cluster: str | None,
    scale: float = 1.0,
) -> dict:
    """Per-group statistic of ``values`` and the common − subjective delta with its interval."""
    groups = data["trend_group"].to_numpy()
    clusters = data[cluster].to_numpy() if cluster else None
    point, reps = {}, {}
    for g, name in enumerate(GROUPS):
        mask = groups == g
        x = values[mask]
        if len(x) == 0:
            point[name] = np.nan
            continue
        point[name] = scale * (float(x.mean()) if stat == "mean" else float(np.quantile(x, q)))
        if name in (COMMON, SUBJECTIVE) and n_boot > 0:
            rng = stats.rng_for(seed, table, row, name)
            reps[name] = scale * stats.bootstrap_stat(
                x, stat=stat, q=q, clusters=None if clusters is None else clusters[mask], n_boot=n_boot, rng=rng
            )
    delta = point[COMMON] - point[SUBJECTIVE]
    if len(reps) == 2:
        lo, hi = stats.percentile_interval(reps[COMMON] - reps[SUBJECTIVE], level)
    else:
        lo = hi = np.nan
    return {**point, "delta": delta, "delta_lo": lo, "delta_hi": hi}


def _finish(rows: dict, effect: str) -> pd.DataFrame:
    """Add Holm-adjusted p-values and the `real` verdict to a table of compared rows."""
    columns = [*GROUPS, "delta", "delta_lo", "delta_hi", effect, "z", "p", "p_holm", "real"]
    out = pd.DataFrame.from_dict(rows, orient="index")
    if out.empty:
        return pd.DataFrame(columns=columns)
    out["p_holm"] = stats.holm(out["p"].to_numpy())
    excludes_zero = (out["delta_lo"] > 0) | (out["delta_hi"] < 0)
    out["real"] = (out["p_holm"] < ALPHA) & excludes_zero
    return out[[c for c in columns if c in out] + [c for c in out if c not in columns]]


def _quantile_name(q: float) -> str:
    return "median" if q == 0.5 else f"{round(q * 100):d}th percentile"
