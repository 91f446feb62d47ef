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

The metrics are computed in :mod:`.metrics`, the baselines in
:mod:`.baselines`, the synthetic world's truth in :mod:`.ground_truth`;
:mod:`.formatting` prints them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interest.core.collection import embeddings_path, has_table, read_embeddings, read_table, table_path
from interest.core.errors import InterestError
from interest.stages.evaluate.baselines import baseline_scores
from interest.stages.evaluate.formatting import json_ready
from interest.stages.evaluate.ground_truth import ground_truth_metrics, truth_metrics
from interest.stages.evaluate.metrics import (
    agreement,
    group_metrics,
    new_user_ranking,
    photo_level_commonality,
    split_half_reliability,
    user_ranking,
)
from interest.stages.labels import partition_commonality, read_labels, read_user_split
from interest.stages.labels.ci import SETTINGS_KEY

if TYPE_CHECKING:
    from interest.models.base import EmbeddingModel

# Label settings that fix which photos are held out: a model is evaluated only on labels that agree on them.
SPLIT_KEYS = ("seed", "test_fraction", "n_train", "n_test")


def evaluate(
    model: EmbeddingModel,
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
    vs_heldout = agreement(pred_ci, heldout)
    ceiling = reliability["split_half_spearman"]
    full_ceiling = reliability["full_ceiling"]
    have = vs_heldout["spearman"] is not None
    vs_heldout["spearman_over_ceiling"] = vs_heldout["spearman"] / ceiling if have and ceiling else None
    vs_heldout["spearman_over_full_ceiling"] = vs_heldout["spearman"] / full_ceiling if have and full_ceiling else None
    metrics["ci"] = {"heldout": vs_heldout, "label": agreement(pred_ci, label_ci)}
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
    metrics["ground_truth"] = ground_truth_metrics(root, test["photo_id"], pred_ci, label_ci)

    # ---- the headline: new users, photo-level counts, truth; each beside its baselines
    baselines = baseline_scores(root, labels, favorites, backbone_id, test_emb, seed)
    scores = {"model": pred_ci, **{name: b["test"] for name, b in baselines.items()}}
    split = read_user_split(root)
    held_out = set() if split is None else set(split.loc[split["set"] == "test", "user_id"])
    is_new = np.isin(fav_user, list(held_out)) & is_test_fav
    metrics["new_users"] = new_user_ranking(
        scores, fav_user[is_new], fav_photo[is_new], len(test), negatives=negatives, seed=seed
    ) if held_out else None
    metrics["photo_level"] = photo_level_commonality(scores, fav_user[is_new], fav_photo[is_new], len(test)) if held_out else None
    app_bundle = app_bundle if refitted == "model" else None
    metrics["truth"] = truth_metrics(root, model, test["photo_id"], scores, baselines, backbone_id, app_bundle)
    return json_ready(metrics)


def split_model(model: EmbeddingModel, root: str | os.PathLike, *, progress: bool = False) -> tuple[Any, str | None]:
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
    from interest.core.config import config_from_dict
    from interest.stages.train import TrainConfig, fit_user_heads, read_training_data, train_model

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


def _check_same_split(model: EmbeddingModel, settings: dict, root: str | os.PathLike) -> None:
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
