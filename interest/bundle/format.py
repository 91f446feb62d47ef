"""The bundle format, of both kinds of bundle, in one place: which part file holds what, and what it must look like.

A **full** bundle (``interest train``) holds the six fitted estimators of the
common model, the trend groups and the user heads; a **linear** bundle
(``model.json`` says ``kind: linear``: the study's imported head) holds one
common linear head and its direction heads. For each kind this module says
which part file holds which arrays under which names (:data:`ESTIMATORS`,
:data:`LINEAR_PARTS`), the dtype and rank each array must have, the old
formats' fixes (:func:`before_kept`) and how the parts must agree with each
other and with model.json (:func:`check_shapes`, :func:`check_linear_shapes`).
Adding an array to a part is one edit of its row here (the estimator's own
``STATE`` names what it writes; its row here says what a reader demands).
:mod:`interest.bundle.io` reads and writes the files by these tables.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np

from interest.bundle import safe_io
from interest.core.errors import InterestError
from interest.learn.base import Estimator

SCHEMA_VERSION = 1
MODEL_JSON = "model.json"
FULL_KIND, LINEAR_KIND = "full", "linear"
REQUIRED_PARTS = ("common.npz", "common_app.lgb.txt", "groups.npz", "user_heads.npz")
FULL_PART = "common_full.lgb.txt"

# An array's expected dtype kinds and rank; a leading "?" marks an array bundles from before it lack.
ArraySpec = dict[str, tuple[str, int | None]]


class EstimatorPart(NamedTuple):
    """Where one estimator of a full model lives: its npz part, the prefix of its arrays there, the classes a
    bundle may name for it (model.json ``estimators``: the first is what bundles from before that kept), and
    what its arrays must look like."""

    part: str
    prefix: str
    classes: tuple[str, ...]
    arrays: ArraySpec


# The estimators of a full model, by the model's attribute (interest.learn.base.Estimator). Any array not
# named here still gets safe_io's size, dtype and header checks.
ESTIMATORS: dict[str, EstimatorPart] = {
    "pca": EstimatorPart("common.npz", "pca_", ("PCA",), {
        "mean": ("f", 1), "components": ("f", 2), "explained_variance": ("f", 1)}),
    "ridge": EstimatorPart("common.npz", "ridge_", ("Ridge", "ZeroTruncatedPoisson"), {
        "coef": ("f", 1), "intercept": ("fi", 0), "alpha": ("fi", 0)}),
    "prototypes": EstimatorPart("common.npz", "prototype_", ("Prototypes",), {"centroids": ("f", 2), "ci": ("f", 1)}),
    "booster": EstimatorPart("common.npz", "booster_", ("StackedBooster",), {
        "app_linear": ("?f", 1)}),  # (offset, scale); bundles from before it keep them in model.json
    "groups": EstimatorPart("groups.npz", "", ("TrendGroupClassifier",), {
        "cuts": ("f", 1), "sigma": ("fi", 0), "prior": ("f", 1), "novelty_scale": ("fi", 0), "far_width": ("fi", 0)}),
    "heads": EstimatorPart("user_heads.npz", "", ("UserHeads",), {
        "users": ("U", 1), "n_favourites": ("iu", 1), "weights": ("f", 2), "anchors": ("f", 2), "tau": ("fi", 0),
        "d0": ("fi", 0), "background": ("f", 1), "templates": ("f", 2), "regime_settings": ("f", 2),
        "shot_settings": ("f", 2), "clip": ("fi", 0),
        # joint heads (bundles from before them have none of these)
        "factors": ("?f", 2), "item_weights": ("?f", 1), "fold_in_negatives": ("?f", 2), "fold_in_common": ("?f", 1),
        "common_centre": ("?fi", 0), "common_unit": ("?fi", 0), "common_weight_prior": ("?fi", 0),
        "deviation_bound": ("?fi", 0), "theta_mean": ("?f", 1), "theta_precision": ("?f", 2),
        # joint heads kept by auto that fold new users in as templates heads for some few-shot sizes
        "fold_in_by_templates": ("?iu", 1), "fold_in_templates": ("?f", 2), "fold_in_background": ("?f", 1),
        "fold_in_settings": ("?f", 2)}),
}
# The LightGBM text part of each (estimator, booster) an estimator names in its LIGHTGBM
LIGHTGBM_PARTS = {("booster", "app_booster"): "common_app.lgb.txt", ("booster", "full_booster"): FULL_PART}

# A linear bundle: the common head, and the direction heads (their parameters stored beside their arrays).
LINEAR_PART = "linear_head.npz"
HEADS_PART = "direction_heads.npz"  # not user_heads.npz: that name is the trained (anchor) heads' format
LINEAR_PARTS: dict[str, ArraySpec] = {
    LINEAR_PART: {"weight": ("f", 1), "bias": ("fi", 0)},
    HEADS_PART: {"users": ("U", 1), "n_favourites": ("iu", 1), "mean": ("f", 1), "precision": ("f", 2),
                 "weights": ("f", 2), "offsets": ("f", 1), "kappa": ("fi", 0), "scale": ("fi", 0),
                 "min_favourites": ("iu", 0)},
}
HEADS_PARAMS = {"kappa": float, "min_favourites": int}  # the direction heads' parameters, kept in their npz


def estimator_classes() -> dict[str, type[Estimator]]:
    """The classes a full bundle may name, by name (imported on first load: ``import interest`` stays light)."""
    from interest.learn.boosting import StackedBooster
    from interest.learn.decomposition import PCA
    from interest.learn.groups import TrendGroupClassifier
    from interest.learn.linear import Ridge, ZeroTruncatedPoisson
    from interest.learn.prototypes import Prototypes
    from interest.learn.heads import UserHeads

    return {cls.__name__: cls for cls in (PCA, Ridge, ZeroTruncatedPoisson, Prototypes, StackedBooster,
                                          TrendGroupClassifier, UserHeads)}


def part_specs(part: str) -> ArraySpec:
    """What the arrays of npz ``part`` of a full bundle must look like, keyed by their names in the file."""
    return {row.prefix + name: spec for row in ESTIMATORS.values() if row.part == part
            for name, spec in row.arrays.items()}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of an .npz file (no pickled objects)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def full_parts(estimators: dict[str, Estimator]) -> tuple[dict[str, bytes], dict]:
    """Every part file of a full model's ``estimators`` (by attribute) as bytes by file name, and what
    model.json says of them (``estimators``: class and parameters)."""
    arrays_by_part: dict[str, dict[str, np.ndarray]] = {}
    parts, described = {}, {}
    for attr, row in ESTIMATORS.items():
        estimator = estimators[attr]
        params, arrays = estimator.to_state()
        arrays_by_part.setdefault(row.part, {}).update({row.prefix + name: value for name, value in arrays.items()})
        described[attr] = {"class": type(estimator).__name__, "params": params}
        for name, booster in estimator.lightgbm_state().items():
            if booster is not None:
                parts[LIGHTGBM_PARTS[attr, name]] = booster.model_to_string().encode("utf-8")
    parts.update({part: npz_bytes(arrays) for part, arrays in arrays_by_part.items()})
    return parts, {"estimators": described}


def linear_parts(weight: np.ndarray, bias: float, heads: Estimator) -> dict[str, bytes]:
    """The part files of a linear bundle (common head ``weight``, ``bias``; direction ``heads``) by file name."""
    params, arrays = heads.to_state()
    heads_arrays = {**arrays, "kappa": np.float64(params["kappa"]), "min_favourites": np.int64(params["min_favourites"])}
    return {
        LINEAR_PART: npz_bytes({"weight": np.asarray(weight).astype(np.float32), "bias": np.float64(bias)}),
        HEADS_PART: npz_bytes(heads_arrays),
    }


def before_kept(attr: str, params: dict, arrays: dict, meta: dict, where: str) -> tuple[dict, dict]:
    """What bundles written before an estimator kept its own state hold elsewhere, filled in (else as given)."""
    params, arrays = dict(params), dict(arrays)
    if attr == "pca" and "n_components" not in params and "components" in arrays:
        params["n_components"] = int(arrays["components"].shape[0])
    if attr == "booster":
        params.setdefault("num_threads", meta.get("training", {}).get("num_threads", 2))
        linear = _app_linear(meta, where)  # model.json's common_score, before the booster kept it
        if "app_linear" not in arrays and linear is not None:
            arrays["app_linear"] = np.asarray(linear, dtype=np.float64)
    return params, arrays


def _app_linear(meta: dict, where: str) -> tuple[float, float] | None:
    """The (offset, scale) of the app score when it is the image-level model's (bundles before it: None)."""
    kind = safe_io.field(meta, "common_score.app", "str", where, default="booster")
    if kind == "booster":
        return None
    if kind != "image":
        raise InterestError(f"{where}: 'common_score.app' must be image or booster, not {safe_io.short_text(kind)}; restore the bundle or retrain")
    offset = safe_io.field(meta, "common_score.offset", "float", where, lo=-1e6, hi=1e6)
    scale = safe_io.field(meta, "common_score.scale", "float", where, lo=0, hi=1e6)
    if not scale > 0:
        raise InterestError(f"{where}: 'common_score.scale' must be positive; restore the bundle or retrain")
    return float(offset), float(scale)


def check_shapes(fitted: dict[str, Estimator], meta: dict, path: Path) -> None:
    """The fitted estimators of a full bundle must agree with each other and with model.json (dims, feature counts)."""
    features = meta["features"]
    pca, ridge, prototypes, booster, groups, heads = (fitted[attr] for attr in ESTIMATORS)
    d, k, h = int(meta["backbone"]["dim"]), int(features["pca_components"]), int(features["head_components"])
    n_pca, n_extra = pca.components_.shape[0], len(features.get("full", [])) - len(features["app"])
    checks = [
        ("common.npz", pca.components_.shape[1] == d and ridge.coef_.shape == (d,)),
        ("common.npz", n_pca >= max(k, h)),
        ("common.npz", prototypes.centroids_.shape == (len(prototypes.ci_), n_pca)),
        ("common_app.lgb.txt", booster.app_booster_.num_feature() == k + 2),
        ("groups.npz", len(groups.cuts_) == 2 and groups.cuts_[0] <= groups.cuts_[1]
         and groups.prior_.shape == (3,) and groups.sigma_ > 0 and groups.novelty_scale_ > 0
         and groups.far_width > 0),
        ("common.npz", pca.mean_.shape == (d,) and pca.explained_variance_.shape == (n_pca,)),
        (FULL_PART, booster.full_booster_ is None or booster.full_booster_.num_feature() == k + 2 + n_extra),
        # the boosters name their inputs themselves; the model reads model.json's names
        ("common_app.lgb.txt", booster.app_features_ == list(features["app"])),
        (FULL_PART, booster.full_booster_ is None or booster.full_features_ == list(features.get("full", []))),
        ("user_heads.npz", heads.weights_.shape == (len(heads.users_), len(heads.anchors_))),
        ("user_heads.npz", heads.anchors_.shape[1:] == (h,)
         and heads.templates_.shape[1:] == heads.background_.shape == (len(heads.anchors_),)),
    ]
    for name, ok in checks:
        if not ok:
            raise InterestError(f"{path / name}: shapes disagree with model.json; restore the bundle or retrain")


def check_linear_shapes(weight: np.ndarray, heads: Estimator, meta: dict, path: Path) -> None:
    """A linear bundle's head and direction heads must agree with model.json's dim."""
    d = int(meta["backbone"]["dim"])
    if weight.shape != (d,):
        raise InterestError(f"{path / LINEAR_PART}: weight of shape {weight.shape}, model.json says dim {d}")
    n = len(heads.users_)
    if (heads.weights_.shape != (n, d) or heads.precision_.shape != (d, d) or heads.mean_.shape != (d,)
            or heads.offsets_.shape != (n,) or heads.n_favourites_.shape != (n,)):
        raise InterestError(f"{path / HEADS_PART}: shapes disagree with model.json; restore the bundle")
