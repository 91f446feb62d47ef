"""The evaluation's measures: rankings (AUC, NDCG), photo-level commonality, split-half reliability, agreement, groups."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from threadpoolctl import threadpool_limits

from interest.stages.labels import partition_commonality
from interest.core.numeric import f1_per_class, macro_f1, spearman, unique_pairs
from interest.core.progress import progress_bar
from interest.core.vocabulary import ACTIVITY_BUCKETS, TREND_GROUPS, bucket_name

if TYPE_CHECKING:
    from interest.models.base import EmbeddingModel

NDCG_AT = 10


def new_user_ranking(
    scores: dict[str, np.ndarray],
    fav_user: np.ndarray,
    fav_photo: np.ndarray,
    n_test: int,
    *,
    negatives: int = 1000,
    seed: int = 0,
) -> dict:
    """Mean AUC and NDCG@10 over new users of their test favourites among other test photos, per score.

    ``scores`` maps a name to a score per test photo; ``fav_user``/``fav_photo``
    are the new users' favourites on test photos (ids, indices). Every score
    ranks the same positives and the same seeded negatives.
    """
    rng = np.random.default_rng([seed, 0xA0C])
    users, codes = np.unique(np.asarray(fav_user), return_inverse=True)
    per_score = {name: {"auc": [], "ndcg": []} for name in scores}
    for u in range(len(users)):
        pos = np.unique(np.asarray(fav_photo)[codes == u])
        if n_test - len(pos) < 1:
            continue
        draw = rng.choice(n_test, size=min(n_test, negatives + len(pos)), replace=False)
        neg = draw[~np.isin(draw, pos)][:negatives]
        idx = np.concatenate([pos, neg])
        is_pos = np.zeros(len(idx), dtype=bool)
        is_pos[: len(pos)] = True
        for name, score in scores.items():
            per_score[name]["auc"].append(auc(score[idx], is_pos))
            per_score[name]["ndcg"].append(ndcg_at(score[idx], is_pos))
    out = {"n_users": int(len(users)), "negatives": int(negatives), "ndcg_at": NDCG_AT}
    for name, values in per_score.items():
        aucs = [v for v in values["auc"] if v is not None]
        ndcgs = [v for v in values["ndcg"] if v is not None]
        out[name] = {
            "auc": float(np.mean(aucs)) if aucs else None,
            "ndcg": float(np.mean(ndcgs)) if ndcgs else None,
        }
    return out


def photo_level_commonality(scores: dict[str, np.ndarray], fav_user: np.ndarray, fav_photo: np.ndarray, n_test: int) -> dict:
    """Per score: Spearman with each test photo's distinct new users, and the Poisson deviance explained.

    The deviance treats ``scale × score`` as the expected count (one scale
    fitted, ``sum(count) / sum(score)``; scores clipped at 0), against the
    null of every photo at the mean count: 1 - D/D0, 0 for no better than
    the mean, negative for worse.
    """
    pairs = unique_pairs(pd.factorize(np.asarray(fav_user))[0], fav_photo)
    count = np.bincount(pairs[:, 1], minlength=n_test).astype(float) if len(pairs) else np.zeros(n_test)
    out = {"n_photos": int(n_test), "n_favourites": int(len(pairs)), "mean_count": float(count.mean()) if n_test else None}
    null = _poisson_deviance(count, np.full(n_test, count.mean()))
    for name, score in scores.items():
        mu = np.clip(np.asarray(score, dtype=float), 0, None)
        mu = mu * (count.sum() / mu.sum()) if mu.sum() > 0 else np.full(n_test, count.mean())
        dev = _poisson_deviance(count, np.maximum(mu, 1e-9))
        out[name] = {"spearman": spearman_or_none(score, count), "deviance_explained": 1 - dev / null if null > 0 else None}
    return out


def _poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(2 * np.sum(term - (y - mu)))


def split_half_reliability(
    photo_partition: np.ndarray,
    n_partitions: int,
    fav_user: np.ndarray,
    fav_photo: np.ndarray,
    kind: str,
    splits: int = 10,
    seed: int = 0,
) -> dict:
    """Agreement of the held-out commonality computed from two disjoint halves of the users.

    ``photo_partition`` is each test photo's partition index; ``fav_user``
    (ids) and ``fav_photo`` (indices into ``photo_partition``) are the test
    favourites. Returns the mean and SD of the per-split Spearman over test
    photos, its Spearman-Brown correction (the reliability of the full user
    set) and ``full_ceiling`` = sqrt(Spearman-Brown), the highest correlation
    even a perfect predictor can reach with the full set's held-out CI.
    """
    users, codes = np.unique(np.asarray(fav_user), return_inverse=True)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(splits if len(users) >= 2 else 0):
        in_a = np.zeros(len(users), dtype=bool)
        in_a[rng.permutation(len(users))[: len(users) // 2]] = True
        half_scores = []
        for half in (in_a, ~in_a):
            sel = half[codes]
            c = partition_commonality(photo_partition, n_partitions, codes[sel], fav_photo[sel])
            half_scores.append(c.score(kind)[photo_partition])
        values.append(spearman_or_none(*half_scores))
    values = [v for v in values if v is not None]
    r = float(np.mean(values)) if values else None
    brown = 2 * r / (1 + r) if r is not None and r > -1 else None
    return {
        "split_half_spearman": r,
        "split_half_spearman_sd": float(np.std(values)) if values else None,
        "spearman_brown": brown,
        "full_ceiling": math.sqrt(brown) if brown is not None and brown > 0 else None,
        "splits": len(values),
        "n_users": int(len(users)),
    }


def group_metrics(true: np.ndarray, pred: np.ndarray) -> dict:
    """Macro-F1, accuracy and confusion matrix (rows true, columns predicted) of trend groups."""
    k = len(TREND_GROUPS)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(true), np.asarray(pred)), 1)
    f1 = f1_per_class(true, pred, k)
    return {
        "macro_f1": none_if_nan(macro_f1(true, pred, k)),
        "accuracy": float(np.trace(confusion) / confusion.sum()) if confusion.sum() else None,
        "f1": {name: none_if_nan(float(v)) for name, v in zip(TREND_GROUPS, f1)},
        "confusion": confusion.tolist(),
        "groups": list(TREND_GROUPS),
    }


def user_ranking(
    model: EmbeddingModel,
    test_emb: np.ndarray,
    pred_ci: np.ndarray,
    fav_user: np.ndarray,
    fav_photo: np.ndarray,
    train_faves: pd.Series,
    *,
    negatives: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Per-user AUC and NDCG@10 of held-out favourites, common-only vs common + head, by activity bucket.

    ``fav_user``/``fav_photo`` are the test favourites (ids, indices into the
    test photos); ``train_faves`` maps user id -> number of train favourites.
    """
    order = np.lexsort((fav_photo, fav_user))
    fav_user, fav_photo = np.asarray(fav_user)[order], np.asarray(fav_photo)[order]
    users, starts = np.unique(fav_user, return_index=True)
    ends = np.append(starts[1:], len(fav_user))
    heads = set(model.users)
    rng = np.random.default_rng(seed)
    records = []
    # Each user's matrix is small: BLAS threads only contend (10x slower on a busy machine).
    with threadpool_limits(limits=1, user_api="blas"):
        for user, start, end in progress_bar(
            zip(users, starts, ends), total=len(users), desc="users", unit="user", enabled=progress, leave=False
        ):
            pos = np.unique(fav_photo[start:end])
            records.append(_rank_one(model, user, pos, heads, test_emb, pred_ci, train_faves, negatives, rng))
    records = [r for r in records if r is not None]
    table = pd.DataFrame(
        records, columns=["train_faves", "has_head", "auc_common", "auc_head", "ndcg_common", "ndcg_head"]
    )
    buckets = []
    for lo, hi in ACTIVITY_BUCKETS:
        sel = (table["train_faves"] >= lo) & (table["train_faves"] < (hi if hi is not None else np.inf))
        if lo == 0 and not sel.any():
            continue  # the no-train-favourites bucket only appears when such users exist
        buckets.append({"bucket": bucket_name(lo, hi), **_bucket_means(table[sel])})
    return {
        "negatives": int(negatives),
        "ndcg_at": NDCG_AT,
        "all": _bucket_means(table),
        "20+": _bucket_means(table[table["train_faves"] >= 20]),
        "buckets": buckets,
    }


def _rank_one(model, user, pos, heads, test_emb, pred_ci, train_faves, negatives, rng) -> tuple | None:
    """One user's (train favourites, has head, AUC and NDCG common-only and common + head)."""
    n_test = len(pred_ci)
    if n_test - len(pos) < 1:
        return None
    # Drawing len(pos) extra leaves enough non-favourites after dropping the favourites.
    draw = rng.choice(n_test, size=min(n_test, negatives + len(pos)), replace=False)
    neg = draw[~np.isin(draw, pos)][:negatives]
    idx = np.concatenate([pos, neg])
    is_pos = np.zeros(len(idx), dtype=bool)
    is_pos[: len(pos)] = True
    common = pred_ci[idx]
    has_head = user in heads
    personal = common + np.asarray(model.user_deviation(user, test_emb[idx]), dtype=float) if has_head else common
    return (
        int(train_faves.get(user, 0)),
        has_head,
        auc(common, is_pos),
        auc(personal, is_pos),
        ndcg_at(common, is_pos),
        ndcg_at(personal, is_pos),
    )


def auc(scores: np.ndarray, is_pos: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` separating ``is_pos`` from the rest; ties count half."""
    scores = np.asarray(scores, dtype=float)
    pos, neg = scores[is_pos], np.sort(scores[~is_pos])
    if len(pos) == 0 or len(neg) == 0:
        return None
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def ndcg_at(scores: np.ndarray, is_pos: np.ndarray, k: int = NDCG_AT) -> float | None:
    """NDCG@k with binary relevance; among tied scores negatives rank first."""
    n_pos = int(np.sum(is_pos))
    if n_pos == 0:
        return None
    top = np.lexsort((is_pos, -np.asarray(scores, dtype=float)))[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(np.sum(np.asarray(is_pos)[top] * discounts[: len(top)]))
    return dcg / float(discounts[: min(n_pos, k)].sum())


def agreement(pred: np.ndarray, target: np.ndarray) -> dict:
    """Spearman, Pearson and MAE of ``pred`` against ``target`` where both are finite."""
    ok = np.isfinite(pred) & np.isfinite(target)
    p, t = pred[ok], target[ok]
    pearson = None
    if len(p) >= 2 and np.ptp(p) > 0 and np.ptp(t) > 0:
        pearson = float(pearsonr(p, t)[0])
    return {
        "spearman": spearman_or_none(p, t),
        "pearson": pearson,
        "mae": float(np.mean(np.abs(p - t))) if len(p) else None,
        "n_photos": int(ok.sum()),
    }


def spearman_or_none(a: np.ndarray, b: np.ndarray) -> float | None:
    """:func:`interest.core.numeric.spearman` as the report writes it: None where undefined."""
    return none_if_nan(spearman(a, b))


def none_if_nan(value: float) -> float | None:
    """``value``, or None where it is NaN (undefined in the report)."""
    return None if np.isnan(value) else value


def _bucket_means(table: pd.DataFrame) -> dict:
    def mean(col: str) -> float | None:
        values = table[col].dropna()
        return float(values.mean()) if len(values) else None

    auc_common, auc_head = mean("auc_common"), mean("auc_head")
    ndcg_common, ndcg_head = mean("ndcg_common"), mean("ndcg_head")
    return {
        "n_users": int(len(table)),
        "n_with_head": int(table["has_head"].sum()),
        "auc_common": auc_common,
        "auc_head": auc_head,
        "auc_diff": _mean_diff(table, "auc_head", "auc_common"),
        "ndcg_common": ndcg_common,
        "ndcg_head": ndcg_head,
        "ndcg_diff": _mean_diff(table, "ndcg_head", "ndcg_common"),
    }


def _mean_diff(table: pd.DataFrame, a: str, b: str) -> float | None:
    """Mean over users of ``a - b`` (users where both are defined)."""
    diff = (table[a] - table[b]).dropna()
    return float(diff.mean()) if len(diff) else None
