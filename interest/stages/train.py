"""Training: a labelled collection in, a model bundle out.

Reads the collection through the contract (embeddings, labels.parquet,
favorites.parquet, photos.parquet and, when present,
features/characteristics.parquet), fits on every labelled photo and every
user's favourites (the app bundle) or on the label split's training photos
and users only (an evaluation bundle), and writes the bundle. Steps: PCA ->
ridge (CI_R) and cluster prototypes, both with out-of-fold predictions ->
stacked LightGBM (app and full) -> trend-group classifier -> user heads.
Every step is seeded; the same collection and config give the same bundle
parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from interest.core.collection import (
    has_table,
    read_embeddings,
    read_manifest,
    read_table,
    table_path,
)
from interest.core.config import config_to_dict
from interest.core.errors import InterestError
from interest.stages.labels.groups import quantile_cuts
from interest.learn.boosting import StackedBooster
from interest.learn.decomposition import PCA
from interest.learn.groups import TrendGroupClassifier, centred_sq, novelty
from interest.learn.linear import Ridge, ZeroTruncatedPoisson
from interest.learn.prototypes import Prototypes
from interest.models.model import InterestModel
from interest.learn.heads import UserHeads
from interest.core.numeric import spearman, unique_pairs
from interest.core.progress import progress_bar

# Counts that grow with the owner's audience (views, and the faves and comments views bring) say more
# about the owner's popularity than about the photo; the full model keeps the per-view rate
# (faves_per_view) and the owner's own fields instead (see docs/models.md).
OWNER_AUDIENCE_FEATURES = ("log_views", "log_faves", "log_comments")

# The estimators TrainConfig hands parameters to, by key prefix: key ``<prefix><parameter>`` is that
# estimator's parameter (checked against its get_params names when a config is made), and ``seed`` and
# ``num_threads`` go to each estimator that takes them. _TRAIN_KEYS are the train step's own keys under
# those prefixes, _KEY_PARAMS keys that keep an older name for their parameter.
ESTIMATOR_KEYS = {"lgb_": StackedBooster, "head_": UserHeads, "groups_": TrendGroupClassifier}
# the PCA components a user head lives in (the heads only see them), and whether its anchors are the prototypes
_TRAIN_KEYS = ("head_components", "head_on_prototypes")
_KEY_PARAMS = {"head_anchors": "n_anchors"}


@dataclass
class TrainConfig:
    """Hyperparameters of ``interest train`` (configs/train.yaml documents each key)."""

    seed: int = 0
    num_threads: int = 2
    pca_components: int = 32
    head_components: int = 64
    pca_max_samples: int = 100_000
    ridge_alpha: float | None = None
    ridge_folds: int = 5
    # first-level linear model: "image" = zero-truncated Poisson on each photo's distinct users
    # (image-level signal, chosen on the world family); "label" = ridge on the label (the study's CI_R)
    common_signal: str = "image"
    # app ci_score: "image" = the image-level model's own score (when common_signal is image; chosen on the
    # world family: the trees cannot extrapolate to photos the collection never held); "booster" = LightGBM
    common_score: str = "image"
    # blend the image-level model with a ridge to each training photo's log faves per view (Flickr's own
    # counts, the owner's audience divided out), weighted by its out-of-fold fit to the collection's counts
    faves_prior: bool = True
    lgb_num_boost_round: int = 150
    lgb_learning_rate: float = 0.1
    lgb_num_leaves: int = 31
    lgb_min_data_in_leaf: int = 40
    lgb_feature_fraction: float = 0.9
    lgb_bagging_fraction: float = 0.5
    lgb_max_bin: int = 63
    lgb_lambda_l2: float = 1.0
    lgb_early_stopping_rounds: int = 30
    lgb_validation_fraction: float = 0.1
    use_metadata: bool = True
    use_characteristics: bool = True
    groups_far_width: float = 0.5
    head_method: str = "auto"
    head_factors: int = 16
    # the heads' anchors are the prototypes (scoring reads a head's memberships from the prototype search);
    # False: head_anchors k-means centroids of the training photos
    head_on_prototypes: bool = True
    head_anchors: int | None = None
    head_bandwidth: float = 0.12
    head_pseudo_counts: list = field(default_factory=lambda: [1.0, 3.0, 10.0, 30.0])
    head_sharing: list = field(default_factory=lambda: [0.0, 0.3, 1.0])
    head_clip: float = 3.0
    head_template_min_favourites: int = 20
    head_validation_fraction: float = 0.2
    head_negatives: int = 300
    head_max_validation_per_user: int = 20
    head_auto_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.common_signal not in ("image", "label"):
            raise InterestError(f"train config: 'common_signal' must be image or label, got {self.common_signal!r}")
        if self.common_score not in ("image", "booster"):
            raise InterestError(f"train config: 'common_score' must be image or booster, got {self.common_score!r}")
        for name in ("pca_components", "head_components", "ridge_folds", "lgb_num_boost_round", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise InterestError(f"train config: '{name}' must be at least 1, got {getattr(self, name)!r}")
        if self.ridge_folds < 2:
            raise InterestError(f"train config: 'ridge_folds' must be at least 2, got {self.ridge_folds!r}")
        for name, low in (("head_pseudo_counts", 0), ("head_sharing", -1e-300)):
            values = getattr(self, name)
            if not values or any(not isinstance(v, (int, float)) or v <= low for v in values):
                what = "positive" if low == 0 else "non-negative"
                raise InterestError(f"train config: '{name}' must be a list of {what} numbers, got {values!r}")
        if not self.groups_far_width > 0:
            raise InterestError(f"train config: 'groups_far_width' must be positive, got {self.groups_far_width!r}")
        if self.head_method not in ("auto", "joint", "templates"):
            raise InterestError(f"train config: 'head_method' must be auto, joint or templates, got {self.head_method!r}")
        if int(self.head_factors) < 1:
            raise InterestError(f"train config: 'head_factors' must be at least 1, got {self.head_factors!r}")
        if self.head_anchors is not None and int(self.head_anchors) < 1:
            raise InterestError(f"train config: 'head_anchors' must be at least 1 (or null), got {self.head_anchors!r}")
        for cls in ESTIMATOR_KEYS.values():
            self.estimator_params(cls)

    def estimator_params(self, cls: type) -> dict:
        """The parameters this config gives estimator class ``cls`` (one of :data:`ESTIMATOR_KEYS`): ``cls(**params)``.

        Lists (the candidate grids) are handed over as tuples of floats.
        """
        prefix = next(p for p, c in ESTIMATOR_KEYS.items() if c is cls)
        names = cls.param_names()
        params = {}
        for f in dataclasses.fields(self):
            if not f.name.startswith(prefix) or f.name in _TRAIN_KEYS:
                continue
            name = _KEY_PARAMS.get(f.name, f.name[len(prefix) :])
            if name not in names:
                raise InterestError(f"train config: '{f.name}' names no parameter of {cls.__name__} "
                                    f"(those are {', '.join(names)}); rename or remove the key")
            value = getattr(self, f.name)
            params[name] = tuple(float(v) for v in value) if isinstance(value, list) else value
        params.update({name: getattr(self, name) for name in ("seed", "num_threads") if name in names})
        return params


def train_model(
    root: str | os.PathLike,
    out: str | os.PathLike | None,
    *,
    backbone: str | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    evaluation_only: bool = False,
) -> InterestModel:
    """Train the common model, trend-group classifier and user heads on collection ``root``.

    Saves the bundle to ``out`` (skipped when ``out`` is None) and returns the
    :class:`~interest.models.model.InterestModel`. Needs labels.parquet from
    ``interest label`` made on the same backbone's embeddings.

    The bundle an app loads learns from the whole collection: the common
    model and the trend groups from every labelled photo (the held-out
    photos' labels included) with every user's favourites (the users
    ``label`` held out whole included), the user heads from every favourite
    of every user on those photos, so every user with a favourite has a head
    (users with 1-4 favourites a head of zeros: the common score; too few
    favourites for any share of a few-shot head to do no harm on the family
    of worlds). ``evaluation_only`` fits everything on the
    label split's training photos and users only: the bundle ``interest
    evaluate`` measures on the held-out photos and users (it refits one so
    when given an app bundle).
    """
    config = config or TrainConfig()
    steps = ["reading", "pca", "ridge", "prototypes", "booster", "groups", "heads", "saving"]
    bar = progress_bar(total=len(steps), desc="train", unit="step", enabled=progress, leave=False)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[steps[len(timings)]] = round(now - clock, 3)
        clock = now
        bar.update()
        bar.set_postfix_str(name)

    bar.set_postfix_str("reading")
    data = read_training_data(root, backbone, config, everyone=not evaluation_only)
    X, y, g = data["emb"], data["ci"], data["groups"]
    step("pca")

    pca = PCA(max(config.pca_components, config.head_components), config.pca_max_samples, config.seed).fit(X)
    Z = pca.transform(X)
    k, h = min(config.pca_components, Z.shape[1]), min(config.head_components, Z.shape[1])
    step("ridge")

    if config.common_signal == "image":
        prior = faves_prior(X, data["log_faves_per_view"], config)
        # its linear predictor is the log share of users expected to favourite the photo
        ridge = ZeroTruncatedPoisson(folds=config.ridge_folds, seed=config.seed).fit(
            X, data["distinct_users"], groups=data["clusters"], prior=prior
        ).share_of(data["n_label_users"])
        # the prototypes carry each cluster's shrunk effect, added to the linear predictor by the booster
        effect = dict(zip(ridge.groups_, ridge.group_effect_))
        prototype_target = np.array([effect[c] for c in data["clusters"]], dtype=np.float64)
    else:
        ridge = Ridge(alpha=config.ridge_alpha, folds=config.ridge_folds, seed=config.seed).fit(X, y)
        prototype_target = y
    step("prototypes")

    prototypes = Prototypes(folds=config.ridge_folds, seed=config.seed).fit(Z, data["clusters"], prototype_target)
    oof = np.column_stack([ridge.oof_prediction_, prototypes.oof_prediction_])
    step("booster")

    booster = StackedBooster(**config.estimator_params(StackedBooster)).fit(Z[:, :k], oof, y, data["extra"])
    # only on image-level labels: on the study's labels (--method paper) the app score follows that label
    if config.common_score == "image" and config.common_signal == "image" and data["label_settings"].get("method") == "image":
        booster.use_image_score(oof, y)
    common_score = {"app": "booster"} if booster.app_linear_ is None else {
        "app": "image", "offset": booster.app_linear_[0], "scale": booster.app_linear_[1]}
    step("groups")

    dist_sq = centred_sq(X, pca.mean_)
    # calibrated where the booster did not fit (its early-stopping rows, first-level inputs out of fold)
    calib = booster.validation_rows_ if len(booster.validation_rows_) >= 30 else np.arange(len(y))
    cuts = data["label_settings"].get("group_cuts") or quantile_cuts(y)
    spread = 0.0
    if booster.app_linear_ is not None:
        spread = user_sampling_sd(
            X, data["fav_users"], data["fav_rows"], data["clusters"], ridge.alpha_, booster.app_linear_[1], config.seed
        )
    groups = TrendGroupClassifier(**config.estimator_params(TrendGroupClassifier)).fit(
        booster.predict(Z[calib, :k], oof[calib]), g[calib], cuts,
        novelty(dist_sq, Z, prototypes.centroids_), g, user_sampling_sd=spread,
    )
    step("heads")

    # the heads learn from the same photos and favourites as the common model: everyone's for the app bundle,
    # the split's training users and photos for an evaluation bundle (interest evaluate refits one itself)
    heads, head_base = fit_user_heads(
        config, pca, ridge, prototypes, booster, [X], data["fav_users"], data["fav_rows"], projections=[Z]
    )
    step("saving")

    metadata = {
        "timings_s": timings,
        "backbone": {"id": data["backbone_id"], "dim": int(X.shape[1]), "preprocessing": data["preprocessing"]},
        "features": {
            "pca_components": int(k),
            "head_components": int(h),
            "app": booster.app_features_,
            "full": booster.full_features_,
            "metadata": data["metadata_columns"],
            "characteristics": data["characteristic_columns"],
        },
        "label_settings": data["label_settings"],
        "common_score": common_score,
        "thresholds": {
            "group_cuts": data["label_settings"].get("group_cuts"),
            "trend_group": "the band of ci_score between group_cuts (probabilities: interest.learn.groups)",
            "head_settings": "metrics.heads.regimes and metrics.heads.few_shot (scale; templates heads: sharing, pseudo_count)",
            "head_max_deviation": heads.validation_.get("max_deviation", 0.0),
            # the app model's score on the training photos at its quintiles: the cuts between 1-5 stars in
            # XMP sidecars (interest.apps.xmp), the same for every folder a person scores
            "rating_cuts": [
                float(c) for c in np.quantile(head_base, (0.2, 0.4, 0.6, 0.8))
            ],
        },
        "training": config_to_dict(config),
        "data": {
            "collection": Path(root).resolve().name,  # its name beside the fingerprint: no path of this disk leaves it
            "fingerprint": data["fingerprint"],
            # the label split's training photos, labels and embeddings: what `interest evaluate` refits an app
            # bundle on, and checks it refits on the collection the bundle learned from
            "split_fingerprint": data["split_fingerprint"],
            "n_train_photos": int(len(y)),
            "n_favourites": int(len(data["fav_rows"])),
            "n_users_with_heads": int(len(heads.users_)),
            # what the common model and the heads learned from: "all" (every user and labelled photo, the app
            # bundle) or "split" (the label split's training users and photos, an evaluation bundle)
            "common_data": "split" if evaluation_only else "all",
            "heads_data": "split" if evaluation_only else "all",
            "n_head_photos": int(len(X)),
            "n_head_favourites": int(len(data["fav_rows"])),
            "metadata_as_of": data["metadata_as_of"],
        },
        "metrics": {
            "ridge": {"alpha": ridge.alpha_, "model": type(ridge).__name__,
                      "faves_blend": getattr(ridge, "blend_", None),
                      "cv_loss": float(getattr(ridge, "cv_mse_", getattr(ridge, "cv_deviance_", np.nan)).min()),
                      "oof_spearman": spearman(ridge.oof_prediction_, y)},
            "prototypes": {"n": int(len(prototypes.ci_)), "oof_spearman": spearman(prototypes.oof_prediction_, y)},
            "common": booster.validation_,
            "groups": groups.validation_,
            "heads": heads.validation_,
            "pca_explained_variance": float(pca.explained_variance_.sum()),
        },
    }
    from interest import __version__

    metadata["interest_version"] = __version__
    from interest.scoring import ScoringModel  # a trained model scores images as a loaded one does

    model = ScoringModel(
        pca=pca, ridge=ridge, prototypes=prototypes, booster=booster, groups=groups, heads=heads, metadata=metadata
    )
    if out is not None:
        model.save(out)
    bar.update()
    bar.close()
    return model


def fit_user_heads(
    config: TrainConfig, pca, ridge, prototypes, booster, blocks: list[np.ndarray], fav_users: np.ndarray,
    fav_rows: np.ndarray, projections: list[np.ndarray] | None = None,
) -> tuple[UserHeads, np.ndarray]:
    """User heads from the favourites (``fav_users``, ``fav_rows``) on photos given as ``blocks`` of embeddings
    (the rows of all blocks in order; blocks, so that no copy of a big collection's embeddings is made).

    The heads are judged against the common score they will be added to (the
    app model's, from the fitted ``pca``, ``ridge``, ``prototypes`` and
    ``booster``). Users with 1-4 favourites have a head of zeros: scoring them
    with ``--user`` gives the common score. The few-shot head ``personalize``
    would fit from their favourites lowered that bucket's AUC on test photos in
    five of twelve worlds (by up to 0.021), and any share of it still lowered
    one family world (BENCHMARKS.md): casual users mostly follow the common
    taste. ``train_model`` and ``interest evaluate`` (which
    refits an app bundle's heads on the split) both come here, so the two agree.
    ``projections``: ``pca.transform`` of each block where the caller has it already.
    Returns the heads and the common score of every row of ``blocks`` (train's XMP star cuts read it).
    """
    F, base = [], []
    for i, X in enumerate(blocks):
        Z = pca.transform(X) if projections is None else projections[i]
        h = min(config.head_components, Z.shape[1])
        base.append(app_score(config, ridge, prototypes, booster, X, Z))
        F.append(np.column_stack([Z[:, :h], centred_sq(X, pca.mean_)]))
    F, base = np.concatenate(F), np.concatenate(base)
    anchors = prototypes.centroids_[:, : F.shape[1] - 1] if config.head_on_prototypes else None
    heads = UserHeads(**config.estimator_params(UserHeads)).fit(F, fav_users, fav_rows, base, anchors=anchors)
    return heads, base


def app_score(config: TrainConfig, ridge, prototypes, booster, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """The app model's common score of embeddings ``X`` (``Z``: their PCA coordinates): what heads are judged
    against and what the XMP star cuts are taken from."""
    k = min(config.pca_components, Z.shape[1])
    return booster.predict(Z[:, :k], np.column_stack([ridge.predict(X), prototypes.predict(Z)]))


def faves_prior(
    X: np.ndarray, log_fpv: np.ndarray | None, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A ridge from the embedding to each training photo's log faves per view: the image-level model's prior.

    Flickr's faves count the whole platform's favourites, not only the
    collection's one or two, and dividing by views takes out most of the
    owner's audience. Returns (out-of-fold values on every row, coef,
    intercept), or None without ``log_fpv`` (the prior is off) or when fewer
    than 50 photos (or under half of them) have views and faves (``log_fpv``
    NaN where not).
    """
    if log_fpv is None:
        return None
    known = np.flatnonzero(np.isfinite(log_fpv))
    if len(known) < max(50, len(X) // 2):
        return None
    # a copy of the embeddings only when some photos lack the counts (at paper scale X is gigabytes)
    ridge = Ridge(folds=config.ridge_folds, seed=config.seed).fit(X if len(known) == len(X) else X[known], log_fpv[known])
    values = np.empty(len(X))
    values[known] = ridge.oof_prediction_
    unknown = np.setdiff1d(np.arange(len(X)), known)
    values[unknown] = ridge.predict(X[unknown])
    coef, intercept = ridge.linear_form()
    return values, coef, intercept


def user_sampling_sd(
    X: np.ndarray, fav_users: np.ndarray, fav_rows: np.ndarray, clusters: np.ndarray, alpha: float, scale: float, seed: int
) -> float:
    """How far the image-level app score moves with the users the collection happened to hold (CI scale).

    The training users are split into two seeded halves; each half gives every
    training photo its own count of distinct users, and the image-level model
    (the full fit's penalty, cluster effects, two folds out of fold) predicts
    each half's share of users. The whole collection's prediction varies half
    as much as the difference of two independent halves, so the answer is
    ``std(scale * (share_a - share_b)) / 2`` (``scale``: the app score's slope).
    """
    users, user_code = np.unique(np.asarray(fav_users).astype(str), return_inverse=True)
    if len(users) < 4:
        return 0.0
    in_a = np.zeros(len(users), dtype=bool)
    in_a[np.random.default_rng([seed, 0x5A17]).permutation(len(users))[: len(users) // 2]] = True
    pairs = unique_pairs(user_code, fav_rows)
    shares = []
    for half in (in_a, ~in_a):
        rows = pairs[half[pairs[:, 0]], 1]
        counts = np.bincount(rows, minlength=len(X)).astype(np.float64)
        if (counts > 0).sum() < 10:
            return 0.0
        # 20,000 rows a fit (against the full fit's 50,000) keep this to seconds at paper scale; the halves'
        # fits are then a little noisier than the full one, so the spread errs on the wide side
        model = ZeroTruncatedPoisson(folds=2, seed=seed, alpha=alpha, max_samples=20_000).fit(X, counts, groups=clusters)
        eta = model.oof_prediction_.astype(np.float64) + model.oof_group_effect_
        shares.append(np.exp(np.clip(eta, -30.0, 30.0)) / int(half.sum()))
    return float(np.std(scale * (shares[0] - shares[1])) / 2.0)


def read_training_data(
    root: str | os.PathLike, backbone: str | None, config: TrainConfig, everyone: bool = False
) -> dict:
    """The training photos' embeddings, labels, favourites and extra features, checked.

    The training photos are the label split's (``set == "train"``) with the
    favourites of the users ``label`` did not hold out whole, or with
    ``everyone`` every labelled photo with every user's favourites (the app
    bundle). The held-out photos' labels are the labeller's predictions from
    the definition photos (their own favourites never enter them), so they
    are targets like any other; each photo's count of distinct users is then
    counted over every user (labels.parquet's ``distinct_users`` leaves the
    held-out users out).
    """
    from interest.models.metadata import METADATA_FEATURES, metadata_features
    from interest.stages.labels import read_labels

    if not has_table(root, "labels"):
        raise InterestError(f"{table_path(root, 'labels')}: no labels in this collection; run `interest label {root}` first")
    backbone_id, ids, emb = read_embeddings(root, backbone)
    labels = read_labels(root)
    settings = dict(labels.attrs.get("interest.labels", {}))
    if settings.get("backbone") and settings["backbone"] != backbone_id:
        raise InterestError(
            f"{table_path(root, 'labels')}: labelled on backbone '{settings['backbone']}', not '{backbone_id}'; "
            f"re-run `interest label {root} --backbone {backbone_id}` or train with --backbone {settings['backbone']}"
        )
    in_split = labels["set"].astype(str) == "train"
    if not in_split.any():
        raise InterestError(f"{table_path(root, 'labels')}: no photo has set == 'train'; re-run `interest label`")
    train = labels if everyone else labels[in_split]
    train = train[train["ci_score"].notna()].sort_values("photo_id", kind="stable")
    photo_ids = train["photo_id"].astype(str).to_numpy()
    row_of = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
    rows = row_of.reindex(photo_ids)
    if rows.isna().any():
        missing = photo_ids[rows.isna().to_numpy()][0]
        raise InterestError(
            f"{table_path(root, 'labels')}: photo_id {missing} has no embedding for backbone '{backbone_id}'; "
            "re-run `interest embed`, then `interest label`"
        )
    X = emb[rows.to_numpy(dtype=np.int64)]
    y = train["ci_score"].to_numpy(dtype=np.float64)
    g = train["trend_group"].to_numpy(dtype=np.int64)
    if len(np.unique(g)) < 2:
        raise InterestError(
            f"{table_path(root, 'labels')}: all training photos are in trend group {g[0]}; "
            "re-run `interest label` with other --group cuts or more photos"
        )
    # the prototypes are the labels' clusters (partitions when a labeller left clusters out)
    clusters = train["cluster_label"] if train["cluster_label"].notna().all() else train["partition"]
    if clusters.isna().any():
        raise InterestError(
            f"{table_path(root, 'labels')}: training photos without cluster_label or partition; re-run `interest label`"
        )
    if len(y) < 20:
        raise InterestError(f"{table_path(root, 'labels')}: only {len(y)} training photos; training needs at least 20")

    favs = read_table(root, "favorites", ["user_id", "photo_id"])
    from interest.stages.labels import read_user_split

    split = read_user_split(root)
    if split is not None and not everyone:
        # users held out whole by `interest label` stay unseen by an evaluation bundle: no counts, no heads
        held_out = split.loc[split["set"] == "test", "user_id"]
        favs = favs[~favs["user_id"].astype(str).isin(held_out)]
    position = pd.Series(np.arange(len(photo_ids)), index=pd.Index(photo_ids))
    fav_rows = position.reindex(favs["photo_id"].astype(str).to_numpy())
    on_train = fav_rows.notna().to_numpy()
    if not on_train.any():
        raise InterestError(
            f"{table_path(root, 'favorites')}: no favourite falls on a training photo; user heads need some "
            "(collect favourites or re-run `interest label`)"
        )

    extra_parts, metadata_columns, characteristic_columns, as_of = [], [], [], None
    wants_prior = config.faves_prior and config.common_signal == "image"
    photos = read_table(root, "photos") if (config.use_metadata or wants_prior) and has_table(root, "photos") else None
    if config.use_metadata and photos is not None:
        upload = pd.to_datetime(photos.get("upload_date"), utc=True, errors="coerce") if "upload_date" in photos else None
        as_of = upload.max() if upload is not None and upload.notna().any() else None
        meta = metadata_features(photos, as_of=as_of).reindex(photo_ids)
        metadata_columns = [c for c in METADATA_FEATURES if c not in OWNER_AUDIENCE_FEATURES]
        extra_parts.append(meta[metadata_columns])
    if config.use_characteristics and has_table(root, "characteristics"):
        chars = read_table(root, "characteristics")
        chars = chars.assign(photo_id=chars["photo_id"].astype(str)).drop_duplicates("photo_id").set_index("photo_id")
        numeric = [c for c in chars.columns if pd.api.types.is_numeric_dtype(chars[c]) and not pd.api.types.is_bool_dtype(chars[c])]
        characteristic_columns = [str(c) for c in numeric if str(c) not in metadata_columns]
        extra_parts.append(chars[characteristic_columns].reindex(photo_ids).astype(np.float64))
    extra = pd.concat(extra_parts, axis=1) if extra_parts else None
    if extra is not None:
        extra.columns = [str(c) for c in extra.columns]

    manifest = read_manifest(root).get("tables", {})
    preprocessing = (manifest.get(f"features/{backbone_id}") or {}).get("preprocessing")
    digest = fingerprint(photo_ids, y, g, X)
    if everyone:
        # the share's denominator: every user with a favourite on a labelled photo
        n_label_users = len(np.unique(favs["user_id"].astype(str).to_numpy()[on_train]))
        split_digest = fingerprint(photo_ids, y, g, X, rows=np.flatnonzero(train["set"].astype(str).to_numpy() == "train"))
    else:
        n_label_users, split_digest = int(settings.get("users_train") or favs["user_id"].nunique()), digest
    return {
        "backbone_id": backbone_id,
        "preprocessing": preprocessing,
        "emb": X,
        "ci": y,
        # labels.parquet counts the definition users only: the app bundle counts every user's favourites
        "distinct_users": _distinct_users(train, favs, photo_ids, from_labels=not everyone),
        "log_faves_per_view": _log_faves_per_view(photos, photo_ids) if wants_prior else None,
        "n_label_users": max(n_label_users, 1),
        "groups": g,
        "clusters": clusters.astype(str).to_numpy(),
        "photo_ids": photo_ids,
        "fav_users": favs["user_id"].astype(str).to_numpy()[on_train],
        "fav_rows": fav_rows.to_numpy()[on_train].astype(np.int64),
        "extra": extra,
        "metadata_columns": metadata_columns,
        "characteristic_columns": characteristic_columns,
        "metadata_as_of": None if as_of is None else as_of.isoformat(),
        "label_settings": _jsonable_settings(settings),
        "fingerprint": digest,
        "split_fingerprint": split_digest,
    }


def fingerprint(
    photo_ids: np.ndarray, ci: np.ndarray, groups: np.ndarray, emb: np.ndarray, rows: np.ndarray | None = None
) -> str:
    """sha256 over the training photo ids, their labels and their embeddings (in that order); of ``rows``
    only when given (the same digest as of those rows' own arrays, without copying the embeddings)."""
    if rows is None:
        rows = np.arange(len(photo_ids))
    digest = hashlib.sha256()
    digest.update("\n".join(map(str, np.asarray(photo_ids)[rows])).encode("utf-8"))
    digest.update(np.ascontiguousarray(np.asarray(ci)[rows], dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(np.asarray(groups)[rows], dtype="<i8").tobytes())
    for start in range(0, len(rows), 65_536):  # chunked: the embeddings may be gigabytes
        digest.update(np.ascontiguousarray(emb[rows[start : start + 65_536]], dtype="<f4").tobytes())
    return "sha256:" + digest.hexdigest()


def _jsonable_settings(settings: dict) -> dict:
    import json

    return json.loads(json.dumps(settings, default=str))


def _log_faves_per_view(photos: pd.DataFrame | None, photo_ids: np.ndarray) -> np.ndarray:
    """Each training photo's ``log((faves + 0.5) / views)`` from photos.parquet; NaN where either is unknown.

    All NaN when the table has no real counts: every crawled photo was
    favourited by somebody, so on Flickr its faves are at least 1, and a table
    where most are 0 holds an importer's placeholders (from which -log(views)
    alone would teach only the owner's audience).
    """
    out = np.full(len(photo_ids), np.nan)
    if photos is None or not {"views", "faves"} <= set(photos.columns):
        return out
    counts = photos.assign(photo_id=photos["photo_id"].astype(str)).drop_duplicates("photo_id").set_index("photo_id")
    views = pd.to_numeric(counts["views"], errors="coerce").reindex(photo_ids).to_numpy(dtype=np.float64)
    faves = pd.to_numeric(counts["faves"], errors="coerce").reindex(photo_ids).to_numpy(dtype=np.float64)
    known = (views > 0) & (faves >= 0)
    if not known.any() or (faves[known] >= 1).mean() < 0.5:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        # +0.5: many photos have only a handful of faves
        return np.where(known, np.log((faves + 0.5) / views), np.nan)


def _distinct_users(train: pd.DataFrame, favs: pd.DataFrame, photo_ids: np.ndarray, from_labels: bool = True) -> np.ndarray:
    """Each training photo's count of distinct users among ``favs``.

    From labels.parquet's ``distinct_users`` (the definition users') when the
    labeller wrote it and ``from_labels``, else counted from ``favs`` (labels
    made by another program, or every user's favourites for the app bundle).
    """
    if from_labels and "distinct_users" in train and train["distinct_users"].notna().all():
        return train["distinct_users"].to_numpy(dtype=np.float64)
    counts = favs.drop_duplicates(["user_id", "photo_id"])["photo_id"].astype(str).value_counts()
    return counts.reindex(photo_ids).fillna(0).to_numpy(dtype=np.float64)
