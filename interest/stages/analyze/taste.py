"""Personal taste: where each user head departs from the common model.

A head's *deviation* is how much a user's personal score moves away from the
common CI score for a photo (user_score − ci_score, in CI units). Over a
sample of the collection's photos, each user's deviation is rank-correlated
with every characteristic (which kinds of photo this user likes more than
everyone does) and averaged per partition (which topics). The spread of the
deviations across photos measures how far a user departs from the common
taste at all: a head shrunk to nothing (few favourites) has spread ~0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps


def sample_photos(photo_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions of at most ``n`` photos drawn without replacement (seeded), in sorted order."""
    if len(photo_ids) <= n:
        return np.arange(len(photo_ids))
    return np.sort(np.random.default_rng(seed).choice(len(photo_ids), n, replace=False))


def deviations(model, users: list[str], emb: np.ndarray, *, batch: int = 256, progress: bool = False) -> np.ndarray:
    """The (photos, users) matrix of each user's deviation from the common score."""
    from interest.core.progress import progress_bar

    out = np.empty((len(emb), len(users)), dtype=np.float32)
    for start in progress_bar(range(0, len(users), batch), desc="user heads", unit="batch", enabled=progress, leave=False):
        out[:, start : start + batch] = model.user_deviations(users[start : start + batch], emb)
    return out


def characteristic_correlations(dev: np.ndarray, users: list[str], chars: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of each user's deviation with each characteristic: (users x characteristics).

    ``chars`` has one row per row of ``dev``; photos missing a value are left
    out of that characteristic's correlations. NaN where a user's deviation is
    constant (a head shrunk to zero).
    """
    rank_dev = sps.rankdata(dev, axis=0)
    out = {}
    for col in chars:
        x = pd.to_numeric(chars[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x)
        if ok.sum() < 3 or np.ptp(x[ok]) == 0:
            continue
        rx = sps.rankdata(x[ok])
        rd = rank_dev[ok] if ok.all() else sps.rankdata(dev[ok], axis=0)
        out[col] = _pearson_columns(rd, rx)
    table = pd.DataFrame(out, index=pd.Index(users, name="user_id"))
    return table


def partition_means(dev: np.ndarray, users: list[str], partitions: np.ndarray) -> pd.DataFrame:
    """Each user's mean deviation per partition: (users x partitions), in CI units."""
    codes, labels = pd.factorize(pd.Series(partitions, dtype="string"), sort=True)
    counts = np.bincount(codes, minlength=len(labels)).astype(float)
    sums = np.zeros((len(labels), dev.shape[1]))
    np.add.at(sums, codes, dev)
    means = sums / counts[:, None]
    return pd.DataFrame(means.T, index=pd.Index(users, name="user_id"), columns=pd.Index(labels.astype(str), name="partition"))


def user_summary(
    dev: np.ndarray,
    users: list[str],
    favourites: pd.Series,
    char_corr: pd.DataFrame,
    part_means: pd.DataFrame,
) -> pd.DataFrame:
    """One row per user: how far they depart from the common taste, and on what.

    Columns: favourites (in the collection), deviation_sd and deviation_p95
    (of |deviation|, CI units), the characteristics with the most positive and
    most negative correlation, the partitions with the highest and lowest mean
    deviation. Sorted by deviation_sd, most personal first.
    """
    out = pd.DataFrame(index=pd.Index(users, name="user_id"))
    out["favourites"] = favourites.reindex(out.index).fillna(0).astype(int).to_numpy()
    out["deviation_sd"] = dev.std(axis=0)
    out["deviation_p95"] = np.quantile(np.abs(dev), 0.95, axis=0)
    if char_corr.shape[1]:
        filled = char_corr.fillna(0.0)
        out["likes_more"] = filled.idxmax(axis=1).where(filled.max(axis=1) > 0)
        out["likes_more_r"] = char_corr.max(axis=1)
        out["likes_less"] = filled.idxmin(axis=1).where(filled.min(axis=1) < 0)
        out["likes_less_r"] = char_corr.min(axis=1)
    if part_means.shape[1]:
        out["top_partition"] = part_means.idxmax(axis=1)
        out["top_partition_deviation"] = part_means.max(axis=1)
        out["bottom_partition"] = part_means.idxmin(axis=1)
        out["bottom_partition_deviation"] = part_means.min(axis=1)
    return out.sort_values("deviation_sd", ascending=False, kind="stable")


def spread_summary(summary: pd.DataFrame, char_corr: pd.DataFrame) -> pd.DataFrame:
    """How users spread: per characteristic, the mean and SD of the users' correlations and the share positive.

    A characteristic users agree on (mean far from 0, small SD) is part of the
    common taste the head did not need; one with a large SD splits users.
    The first row, ``(deviation SD)``, summarises how far users depart at all.
    """
    rows = {
        "(deviation SD)": {
            "mean": summary["deviation_sd"].mean(),
            "sd": summary["deviation_sd"].std(ddof=0),
            "p10": summary["deviation_sd"].quantile(0.1),
            "median": summary["deviation_sd"].median(),
            "p90": summary["deviation_sd"].quantile(0.9),
            "share_positive_%": np.nan,
        }
    }
    for col in char_corr:
        r = char_corr[col].dropna()
        if r.empty:
            continue
        rows[col] = {
            "mean": r.mean(),
            "sd": r.std(ddof=0),
            "p10": r.quantile(0.1),
            "median": r.median(),
            "p90": r.quantile(0.9),
            "share_positive_%": 100 * (r > 0).mean(),
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "measure"
    return out


def _pearson_columns(Y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``Y`` with ``x`` (NaN for a constant column)."""
    xc = x - x.mean()
    Yc = Y - Y.mean(axis=0)
    denom = np.sqrt((Yc**2).sum(axis=0) * (xc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (xc @ Yc) / denom, np.nan)
