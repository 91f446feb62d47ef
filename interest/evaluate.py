"""The evaluation protocol: how well a model predicts commonality on held-out photos and users.

Nothing the model saw in training is scored: only the labels' test photos
(``set == "test"``), and every target comes from test favourites alone. An
app bundle learned from the whole collection, the test photos and the users
held out whole included, so it is first refitted on the label split (the
same training, ``interest train --evaluation-only``; ``refitted``: "model")
and every figure is that fit's; the bundle itself is scored only on photos
the collection never held (``truth.never_held.app_bundle``).

The headline (printed first) cannot be reached by a model that knows nothing
of commonality, and every figure has baselines measured in the same run: a
seeded random score and the study's recipe done plainly (k-means 200 of the
definition photos, distinct users per cluster, no merge, ridge on the
embedding).

* **new_users** — users held out whole by ``interest label``
  (``label_users.parquet``; never in the labels or the training): each one's
  favourites among the test photos are ranked among up to ``negatives``
  seeded other test photos by the common score alone; mean AUC and NDCG@10
  over those users. That is what "commonly interesting" means: a stranger
  is likely to like it.
* **photo_level** — each test photo's number of distinct held-out users
  against the prediction: Spearman over photos, and the Poisson deviance
  explained (1 - D/D0) when the prediction, times one fitted scale, is the
  expected count (D0: every photo the mean count).
* **truth** — on a synthetic world, Spearman of the prediction against the
  true commonality (expected distinct users of the population) of the test
  photos and of the photos the collection never held
  (``ground_truth/heldout/``, when their embeddings match the model's).

Secondary, partition-level rows (the earlier protocol; a model that only
knows which partition a photo falls in scores well on them, whatever the
partitions' relation to common appeal):

* **reliability** — the users with a test favourite are split into two seeded
  random halves; each half's held-out commonality is computed per test photo
  (the label's commonality measure on that half's test favourites) and the
  two are rank-correlated. The mean over ``reliability_splits`` splits is the
  split-half ceiling; the Spearman-Brown value ``2r / (1 + r)`` estimates the
  reliability of the full user set.
* **ci** — Spearman, Pearson and MAE of the predicted ``ci_score`` against
  ``ci_heldout`` (test favourites only), and Spearman over the split-half
  ceiling; the same against the test photos' label ``ci_score`` (the paper's
  setup: the definition partitions' CI). The held-out CI uses all users, so
  it is more reliable than either half and a good model can exceed the
  split-half ceiling; ``spearman_over_full_ceiling`` divides by
  sqrt(Spearman-Brown) instead, the classical ceiling for the full set.
* **groups** — macro-F1, accuracy and the 3x3 confusion matrix (rows: label
  trend group, columns: predicted) of the test photos.
* **users** — for each user with a test favourite, their test favourites are
  ranked among up to ``negatives`` seeded test photos they did not favourite,
  by the common score alone and by common + the user's head; mean AUC and
  NDCG@10 per activity bucket (the user's *train* favourites). Ties count
  half in AUC and rank negatives first in NDCG (no credit for a tie). A user
  without a head is scored by the common score in both columns. A bundle
  whose heads alone learned from every favourite (written between the two
  changes) has only its heads refitted on the split (``refitted``: "heads").
* **ground_truth** — on a synthetic world (``ground_truth/photos.parquet``
  present): Spearman of the predicted and of the label CI against the true
  ``common_appeal`` of the test photos.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from threadpoolctl import threadpool_limits

from interest.collection import (
    embeddings_path,
    has_table,
    read_embeddings,
    read_parquet_checked,
    read_table,
    table_path,
)
from interest.errors import InterestError
from interest.labels import partition_commonality, read_labels
from interest.labels.ci import SETTINGS_KEY
from interest.numeric import f1_per_class, macro_f1, spearman
from interest.progress import progress_bar
from interest.vocabulary import ACTIVITY_BUCKETS, TREND_GROUPS, bucket_name

NDCG_AT = 10
# Label settings that fix which photos are held out: a model is evaluated only on labels that agree on them.
SPLIT_KEYS = ("seed", "test_fraction", "n_train", "n_test")


def evaluate(
    model: Any,
    root: str | os.PathLike,
    *,
    backbone: str | None = None,
    seed: int = 0,
    progress: bool = True,
    negatives: int = 1000,
    reliability_splits: int = 10,
    use_metadata: bool = False,
) -> dict:
    """Evaluate ``model`` (an InterestModel or a bundle path) on collection ``root``'s test photos.

    ``backbone`` defaults to the model's own; another one is an error.
    By default the model sees embeddings only (as in a photo app);
    ``use_metadata`` also passes the photos' Flickr metadata (the model needs
    a full model for it). Beware that a photo's fave count includes the test
    users' favourites, so metadata partly leaks the held-out target.
    Returns JSON-ready metrics (undefined values are None); see the module
    docstring for the protocol and :func:`format_metrics` to print them.
    """
    if isinstance(model, (str, os.PathLike)):
        import interest

        model = interest.load(model)
    if backbone is not None and backbone != model.backbone_id:
        raise InterestError(
            f"backbone '{backbone}' differs from the model's '{model.backbone_id}'; "
            "evaluate with the embeddings the model was trained on"
        )
    labels = read_labels(root)
    settings = labels.attrs[SETTINGS_KEY]
    _check_same_split(model, settings, root)
    # an app bundle saw the held-out photos and users: everything below measures its refit on the label split
    app_bundle = model
    model, refitted = split_model(model, root, progress=progress)
    test = labels[labels["set"] == "test"].reset_index(drop=True)
    if test.empty:
        raise InterestError(
            f"{table_path(root, 'labels')}: no held-out (test) photos; "
            "re-run `interest label` with a test fraction above 0"
        )
    backbone_id, emb_ids, emb = read_embeddings(root, model.backbone_id)
    rows = pd.Index(emb_ids).get_indexer(test["photo_id"].astype(str))
    if (rows < 0).any():
        bad = test["photo_id"].to_numpy()[rows < 0][0]
        raise InterestError(
            f"{embeddings_path(root, backbone_id)}: photo_id {bad} has no embedding; run `interest embed {root}`"
        )
    test_emb = emb[rows]
    del emb
    metadata = _test_metadata(root, test["photo_id"]) if use_metadata else None
    predicted = model.score_embeddings(test_emb, metadata=metadata)
    pred_ci = predicted["ci_score"].to_numpy(dtype=float)
    pred_group = predicted["trend_group"].to_numpy(dtype=np.int64)

    favorites = read_table(root, "favorites", ["user_id", "photo_id"])
    test_index = pd.Index(test["photo_id"].astype(str))
    fav_photo = test_index.get_indexer(favorites["photo_id"].astype(str))
    fav_user = favorites["user_id"].astype(str).to_numpy()
    is_test_fav = fav_photo >= 0
    train_ids = labels.loc[labels["set"] == "train", "photo_id"].astype(str)
    train_faves = pd.Series(fav_user[pd.Index(favorites["photo_id"].astype(str)).isin(train_ids)]).value_counts()

    parts, part_codes = np.unique(test["partition"].astype(str).to_numpy(), return_inverse=True)
    kind = "size_adjusted" if settings.get("commonality") == "size_adjusted" else "users"
    # The held-out target from test favourites (label's ci_heldout, recomputed so labels from other programs work).
    _, test_fav_user = np.unique(fav_user[is_test_fav], return_inverse=True)
    heldout = partition_commonality(part_codes, len(parts), test_fav_user, fav_photo[is_test_fav]).score(kind)
    heldout = heldout[part_codes]
    label_ci = test["ci_score"].to_numpy(dtype=float)

    metrics: dict[str, Any] = {
        "backbone": backbone_id,
        "n_test_photos": int(len(test)),
        "n_test_favourites": int(is_test_fav.sum()),
        "commonality": kind,
        "used_metadata": metadata is not None,
        "seed": int(seed),
        "refitted": refitted,
        "heads_refitted": refitted is not None,
    }
    reliability = split_half_reliability(
        part_codes, len(parts), fav_user[is_test_fav], fav_photo[is_test_fav], kind, reliability_splits, seed
    )
    metrics["reliability"] = reliability
    vs_heldout = _agreement(pred_ci, heldout)
    ceiling = reliability["split_half_spearman"]
    full_ceiling = reliability["full_ceiling"]
    have = vs_heldout["spearman"] is not None
    vs_heldout["spearman_over_ceiling"] = vs_heldout["spearman"] / ceiling if have and ceiling else None
    vs_heldout["spearman_over_full_ceiling"] = vs_heldout["spearman"] / full_ceiling if have and full_ceiling else None
    metrics["ci"] = {"heldout": vs_heldout, "label": _agreement(pred_ci, label_ci)}
    metrics["groups"] = group_metrics(test["trend_group"].to_numpy(dtype=np.int64), pred_group)
    metrics["users"] = user_ranking(
        model,
        test_emb,
        pred_ci,
        fav_user[is_test_fav],
        fav_photo[is_test_fav],
        train_faves,
        negatives=negatives,
        seed=seed,
        progress=progress,
    )
    metrics["ground_truth"] = _ground_truth(root, test["photo_id"], pred_ci, label_ci)

    # ---- the headline: new users, photo-level counts, truth; each beside its baselines
    baselines = _baselines(root, labels, favorites, backbone_id, test_emb, seed)
    scores = {"model": pred_ci, **{name: b["test"] for name, b in baselines.items()}}
    from interest.labels import read_user_split

    split = read_user_split(root)
    held_out = set() if split is None else set(split.loc[split["set"] == "test", "user_id"])
    is_new = np.isin(fav_user, list(held_out)) & is_test_fav
    metrics["new_users"] = new_user_ranking(
        scores, fav_user[is_new], fav_photo[is_new], len(test), negatives=negatives, seed=seed
    ) if held_out else None
    metrics["photo_level"] = photo_level_commonality(scores, fav_user[is_new], fav_photo[is_new], len(test)) if held_out else None
    app_bundle = app_bundle if refitted == "model" else None
    metrics["truth"] = _truth(root, model, test["photo_id"], scores, baselines, backbone_id, app_bundle)
    return _json_ready(metrics)


def split_model(model: Any, root: str | os.PathLike, *, progress: bool = False) -> tuple[Any, str | None]:
    """The model that evaluate measures on the held-out photos and users of collection ``root``.

    ``(model, None)`` for an evaluation bundle (model.json ``data.common_data``
    and ``heads_data`` "split", or absent: bundles written before). An app
    bundle (``common_data`` "all") learned from those photos and users, so
    ``(the same training refitted on the label split, "model")``: what
    ``interest train --evaluation-only`` writes, from the bundle's own
    training config; refused with one line when the split is not the one the
    bundle learned from (its ``split_fingerprint``). A bundle whose heads
    alone learned from everyone: ``(a copy with heads refitted on the split,
    "heads")``.
    """
    data_meta = (getattr(model, "metadata", None) or {}).get("data", {})
    if "all" not in (data_meta.get("common_data"), data_meta.get("heads_data")):
        return model, None
    from interest.config import config_from_dict
    from interest.models.train import TrainConfig, fit_user_heads, read_training_data, train_model

    known = {f for f in TrainConfig.__dataclass_fields__}
    config = config_from_dict(TrainConfig, {k: v for k, v in model.metadata.get("training", {}).items() if k in known})
    if data_meta.get("common_data") == "all":
        refit = train_model(root, None, backbone=model.backbone_id, config=config, progress=progress, evaluation_only=True)
        if data_meta.get("split_fingerprint") not in (None, refit.metadata["data"]["fingerprint"]):
            raise InterestError(
                f"{table_path(root, 'labels')}: model {getattr(model, 'name', '')} learned from another collection "
                "or other labels (its split's fingerprint differs); evaluate it on the collection and labels it was "
                f"trained on, or evaluate a bundle of `interest train {root} --evaluation-only`"
            )
        return refit, "model"
    data = read_training_data(root, model.backbone_id, config)
    heads, _ = fit_user_heads(
        config, model.pca, model.ridge, model.prototypes, model.booster, [data["emb"]], data["fav_users"], data["fav_rows"]
    )
    return model.with_heads(heads), "heads"


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
    pairs = np.unique(np.column_stack([pd.factorize(np.asarray(fav_user))[0], np.asarray(fav_photo)]), axis=0)
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


def _baselines(root, labels, favorites, backbone_id, test_emb, seed) -> dict:
    """Scores no better model should lose to, for the test photos and a scorer for other embeddings.

    * ``random`` — seeded uniform scores;
    * ``study_recipe`` — the study's recipe done plainly: k-means 200 (at most
      one cluster per 10) of the definition photos, each cluster's distinct
      definition users over all of them, no merge, a ridge from the embedding
      to that CI.
    """
    from interest.labels import read_user_split
    from interest.labels.ci import fit_clusters
    from interest.learn.linear import Ridge

    rng = np.random.default_rng([seed, 0xBA5E])
    train_ids = labels.loc[labels["set"] == "train", "photo_id"].astype(str).to_numpy()
    _, emb_ids, emb = read_embeddings(root, backbone_id)
    train_emb = emb[pd.Index(emb_ids).get_indexer(train_ids)]
    del emb
    split = read_user_split(root)
    favs = favorites
    if split is not None:
        favs = favs[~favs["user_id"].astype(str).isin(set(split.loc[split["set"] == "test", "user_id"]))]
    fav_photo = pd.Index(train_ids).get_indexer(favs["photo_id"].astype(str))
    on_train = fav_photo >= 0
    k = max(2, min(200, len(train_ids) // 10))
    cluster, _ = fit_clusters(train_emb, k, seed)
    users = pd.factorize(favs["user_id"].astype(str).to_numpy()[on_train])[0]
    c = partition_commonality(cluster, k, users, fav_photo[on_train])
    ridge = Ridge(seed=seed).fit(train_emb, c.ci_users[cluster])
    return {
        "study_recipe": {"test": ridge.predict(test_emb).astype(float), "score": ridge.predict},
        "random": {"test": rng.random(len(test_emb)), "score": lambda e: np.random.default_rng([seed, 0xBA5E, 1]).random(len(e))},
    }


def _truth(
    root, model, test_ids: pd.Series, scores: dict, baselines: dict, backbone_id: str, app_bundle: Any = None
) -> dict | None:
    """Spearman against the true commonality: test photos, and photos the collection never held (by
    ``app_bundle`` too, when given: the bundle learned from the whole collection, never from those)."""
    gt = Path(root) / "ground_truth"
    if not (gt / "photos.parquet").is_file():
        return None
    truth = read_parquet_checked(gt / "photos.parquet", ["photo_id", "true_commonality"])
    if "true_commonality" not in truth:
        return None
    target = truth.set_index(truth["photo_id"].astype(str))["true_commonality"].reindex(test_ids.astype(str)).to_numpy(float)
    known = np.isfinite(target)
    out = {"test": {name: spearman_or_none(score[known], target[known]) for name, score in scores.items()}, "never_held": None}
    heldout_emb = gt / "heldout" / "embeddings.parquet"
    if heldout_emb.is_file() and (gt / "heldout" / "photos.parquet").is_file():
        from interest.synthetic.family import heldout_photos

        photos, emb = heldout_photos(root)
        # the generator writes held-out embeddings only in its own synthetic space
        if backbone_id == f"synthetic/d{emb.shape[1]}":
            target = photos["true_commonality"].to_numpy(float)
            never = {"model": model.score_embeddings(emb)["ci_score"].to_numpy(float)}
            never.update({name: np.asarray(b["score"](emb), dtype=float) for name, b in baselines.items()})
            if app_bundle is not None:
                never["app_bundle"] = app_bundle.score_embeddings(emb)["ci_score"].to_numpy(float)
            out["never_held"] = {name: spearman_or_none(v, target) for name, v in never.items()}
            out["n_never_held"] = int(len(photos))
    out["n_test"] = int(known.sum())
    return out


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
        "macro_f1": _none_if_nan(macro_f1(true, pred, k)),
        "accuracy": float(np.trace(confusion) / confusion.sum()) if confusion.sum() else None,
        "f1": {name: _none_if_nan(float(v)) for name, v in zip(TREND_GROUPS, f1)},
        "confusion": confusion.tolist(),
        "groups": list(TREND_GROUPS),
    }


def user_ranking(
    model: Any,
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


def format_metrics(metrics: dict) -> str:
    """The metrics of :func:`evaluate` as a readable plain-text table, headline first."""
    f = _fmt
    corner = "true \\ predicted"
    rel, ci, groups, users = metrics["reliability"], metrics["ci"], metrics["groups"], metrics["users"]
    lines = [
        f"held-out photos {metrics['n_test_photos']}, held-out favourites {metrics['n_test_favourites']}, "
        f"backbone {metrics['backbone']}, commonality {metrics['commonality']}, "
        f"metadata {'used' if metrics['used_metadata'] else 'not used'}",
        *([
            "the bundle learned from every user and photo (an app bundle): the figures below are of the same "
            "training refitted on the label split (`interest train --evaluation-only`)"
        ] if metrics.get("refitted") == "model" else []),
        "",
        *_headline_lines(metrics),
        "secondary, partition-level (a model that only knows a photo's partition scores well here, "
        "whatever the partitions' relation to common appeal):",
        f"reliability (split-half, {rel['splits']} splits of {rel['n_users']} users): "
        f"spearman {f(rel['split_half_spearman'])} ± {f(rel['split_half_spearman_sd'])}, "
        f"spearman-brown {f(rel['spearman_brown'])}, full-set ceiling {f(rel['full_ceiling'])}",
        "",
        f"{'CI':<22}{'spearman':>10}{'pearson':>10}{'MAE':>10}{'/split-half':>13}{'/full-set':>11}",
        f"{'  vs held-out CI':<22}{f(ci['heldout']['spearman']):>10}{f(ci['heldout']['pearson']):>10}"
        f"{_sig(ci['heldout']['mae']):>10}{f(ci['heldout']['spearman_over_ceiling']):>13}"
        f"{f(ci['heldout']['spearman_over_full_ceiling']):>11}",
        f"{'  vs label CI':<22}{f(ci['label']['spearman']):>10}{f(ci['label']['pearson']):>10}"
        f"{_sig(ci['label']['mae']):>10}",
        "",
        f"trend groups: macro-F1 {f(groups['macro_f1'])}, accuracy {f(groups['accuracy'])}",
        f"  {corner:<18}" + "".join(f"{g:>12}" for g in groups["groups"]),
    ]
    for name, row in zip(groups["groups"], groups["confusion"]):
        lines.append(f"  {name:<18}" + "".join(f"{v:>12}" for v in row))
    lines += [
        "",
        f"users: held-out favourites ranked among up to {users['negatives']} non-favourites "
        f"(AUC, NDCG@{users['ndcg_at']}); common-only vs common + head"
        + (" (heads refitted on the label split: the bundle's learned from these favourites too)"
           if metrics.get("refitted") == "heads" else ""),
        f"  {'train faves':<12}{'users':>7}{'heads':>7}{'AUC com':>9}{'AUC head':>9}{'diff':>8}"
        f"{'NDCG com':>10}{'NDCG head':>10}{'diff':>8}",
    ]
    for b in [*users["buckets"], {"bucket": "20+", **users["20+"]}, {"bucket": "all", **users["all"]}]:
        lines.append(
            f"  {b['bucket']:<12}{b['n_users']:>7}{b['n_with_head']:>7}{f(b['auc_common']):>9}{f(b['auc_head']):>9}"
            f"{f(b['auc_diff'], signed=True):>8}{f(b['ndcg_common']):>10}{f(b['ndcg_head']):>10}"
            f"{f(b['ndcg_diff'], signed=True):>8}"
        )
    gt = metrics.get("ground_truth")
    if gt:
        lines += [
            "",
            f"ground truth (synthetic): spearman vs common_appeal: predicted CI {f(gt['spearman_predicted'])}, "
            f"label CI {f(gt['spearman_label'])}",
        ]
    return "\n".join(lines)


def _headline_lines(metrics: dict) -> list[str]:
    f = _fmt
    names = ("model", "study_recipe", "random")
    lines = []
    new, photo, truth = metrics.get("new_users"), metrics.get("photo_level"), metrics.get("truth")
    if new:
        lines += [
            f"new users ({new['n_users']} held out whole; their held-out favourites among up to {new['negatives']} "
            f"held-out photos, by the common score alone)",
            f"  {'score':<16}{'AUC':>8}{'NDCG@' + str(new['ndcg_at']):>10}",
        ]
        lines += [f"  {n:<16}{f(new[n]['auc']):>8}{f(new[n]['ndcg']):>10}" for n in names if n in new]
    else:
        lines.append("new users: none held out (re-run `interest label` with --user-test-fraction above 0)")
    if photo:
        lines += [
            "",
            f"photo-level held-out commonality (distinct new users per held-out photo, mean {f(photo['mean_count'])}): "
            "Spearman, Poisson deviance explained (one fitted scale)",
        ]
        lines += [
            f"  {n:<16}{f(photo[n]['spearman']):>8}{f(photo[n]['deviance_explained']):>10}" for n in names if n in photo
        ]
    if truth:
        never = truth.get("never_held") or {}
        lines += [
            "",
            f"ground truth (synthetic): Spearman vs true commonality; held-out photos ({truth['n_test']})"
            + (f", photos never held ({truth.get('n_never_held')})" if never else ""),
        ]
        lines += [
            f"  {n:<16}{f(truth['test'].get(n)):>8}" + (f"{f(never.get(n)):>10}" if never else "")
            for n in names if n in truth["test"]
        ]
        if "app_bundle" in never:
            lines.append(f"  {'app bundle':<16}{'-':>8}{f(never['app_bundle']):>10}  (every user and photo)")
    return [*lines, ""]


# ---------------------------------------------------------------- helpers


def _check_same_split(model: Any, settings: dict, root: str | os.PathLike) -> None:
    """Refuse labels split otherwise than the model's training labels: their test photos may be its training photos."""
    trained = getattr(model, "label_settings", None) or {}
    for key in SPLIT_KEYS:
        if key in trained and key in settings and trained[key] != settings[key]:
            raise InterestError(
                f"{table_path(root, 'labels')}: {key}={settings[key]!r}, but the model was trained on labels with "
                f"{key}={trained[key]!r}; its training photos may be among these test photos (evaluate on the "
                "labels it was trained on)"
            )


def _test_metadata(root: str | os.PathLike, photo_ids: pd.Series) -> pd.DataFrame | None:
    """The test photos' rows of photos.parquet, in test order (None without a photos table)."""
    if not has_table(root, "photos"):
        return None
    photos = read_table(root, "photos", required=["photo_id"])
    photos = photos.drop_duplicates("photo_id").set_index(photos["photo_id"].astype(str).to_numpy())
    return photos.reindex(photo_ids.astype(str).to_numpy()).reset_index(drop=True)


def _ground_truth(
    root: str | os.PathLike, photo_ids: pd.Series, pred_ci: np.ndarray, label_ci: np.ndarray
) -> dict | None:
    path = Path(root) / "ground_truth" / "photos.parquet"
    if not path.is_file():
        return None
    truth = read_parquet_checked(path, ["photo_id", "common_appeal"])
    appeal = (
        truth.set_index(truth["photo_id"].astype(str).to_numpy())["common_appeal"]
        .reindex(photo_ids.astype(str).to_numpy())
        .to_numpy(dtype=float)
    )
    known = np.isfinite(appeal)
    return {
        "spearman_predicted": spearman_or_none(pred_ci[known], appeal[known]),
        "spearman_label": spearman_or_none(label_ci[known], appeal[known]),
        "n_photos": int(known.sum()),
    }


def _agreement(pred: np.ndarray, target: np.ndarray) -> dict:
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
    """:func:`interest.numeric.spearman` as the report writes it: None where undefined."""
    return _none_if_nan(spearman(a, b))


def _none_if_nan(value: float) -> float | None:
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


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _sig(value: float | None) -> str:
    """Three significant digits: errors on the CI's own scale (an image-level label's is ~0.001-0.05)."""
    return "-" if value is None else f"{value:.3g}"


def _json_ready(obj: Any) -> Any:
    """Plain Python types only, NaN and inf as None."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
