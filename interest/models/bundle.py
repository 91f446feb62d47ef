"""The model bundle: a directory with model.json and its parts, in formats that never run code.

Layout::

    model.json            schema version, backbone, features, label settings,
                          thresholds, training config, data fingerprint,
                          metrics, each estimator's class and parameters,
                          and the sha256 of every part
    common.npz            PCA (mean, components), ridge (coef, intercept), prototypes (centroids, CI),
                          the booster's app score line (offset, scale; when it is the image-level model's)
    common_app.lgb.txt    LightGBM text model, embedding only
    common_full.lgb.txt   LightGBM text model with metadata (when trained with it)
    groups.npz            trend-group classifier (cuts, sigma, group frequencies, novelty scale)
    user_heads.npz        user ids (fixed-width unicode), head weights, anchors, background stats

Every part comes from the estimators' own state (:class:`interest.models.common.Estimator`:
parameters, arrays, LightGBM boosters); this module only loops over them (:data:`ESTIMATORS`).

No pickle and no joblib: npz files are read with ``allow_pickle=False`` and
LightGBM models are parsed from text. Each part's bytes are read once, checked
against model.json's sha256, and parsed from those same bytes, so a part
edited by hand (or half-copied) is refused rather than half-used. The sha256
only says the bundle is the one model.json describes, not that it is benign:
every part then goes through :mod:`interest.models.safe_io` (bounded JSON,
npz headers checked before reading, every LightGBM tree checked before
LightGBM sees it) and every model.json value is type-checked, so a hostile
bundle is one InterestError line, never a crash, hang or traceback.

Saving replaces the whole directory in one atomic switch under a lock shared
by every process (:mod:`interest.models.storage`); loading reads one version
throughout and tries again if a save switched versions under it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from interest.errors import InterestError, not_a_model_bundle, one_line
from interest.models import safe_io
from interest.models.storage import BundleDir, bundle_lock, read_consistently, switch_in

if TYPE_CHECKING:
    from interest.models.model import InterestModel

SCHEMA_VERSION = 1
MODEL_JSON = "model.json"
REQUIRED_PARTS = ("common.npz", "common_app.lgb.txt", "groups.npz", "user_heads.npz")
FULL_PART = "common_full.lgb.txt"
# The estimators of a full model (models.common.Estimator): the model's attribute, the npz part holding its
# arrays and their prefix there, and the classes a bundle may name for it (model.json "estimators": class and
# parameters; the first is what bundles written before the parameters were kept hold).
ESTIMATORS = (
    ("pca", "common.npz", "pca_", ("PCA",)),
    ("ridge", "common.npz", "ridge_", ("Ridge", "ZeroTruncatedPoisson")),
    ("prototypes", "common.npz", "prototype_", ("Prototypes",)),
    ("booster", "common.npz", "booster_", ("StackedBooster",)),
    ("groups", "groups.npz", "", ("TrendGroupClassifier",)),
    ("heads", "user_heads.npz", "", ("UserHeads",)),
)
# The LightGBM text part of each (estimator, booster) an estimator names in its LIGHTGBM
LIGHTGBM_PARTS = {("booster", "app_booster"): "common_app.lgb.txt", ("booster", "full_booster"): FULL_PART}
# The model class of each kind of bundle: interest.models.model registers "full" and interest.models.study
# "linear" when imported (the package imports both), so this module imports neither of them.
MODEL_KINDS: dict[str, type] = {}


def _estimator_classes() -> dict[str, type]:
    """The classes a bundle may name, by name (imported here, on first load: ``import interest`` stays light)."""
    from interest.models.common import PCA, Prototypes, Ridge, StackedBooster, ZeroTruncatedPoisson
    from interest.models.groups import TrendGroupClassifier
    from interest.models.user_heads import UserHeads

    return {cls.__name__: cls for cls in (PCA, Ridge, ZeroTruncatedPoisson, Prototypes, StackedBooster,
                                          TrendGroupClassifier, UserHeads)}


# A string that names a place on some disk: /..., ~..., C:\... or \\server\...
_LOCAL_PATH = re.compile(r"(/|~|[A-Za-z]:[\\/]|\\\\)[^\n]*[\\/][^\n]*")


def without_local_paths(meta: dict) -> dict:
    """model.json as it may leave the machine: every local path in it replaced by its last part, the folder's name.

    A collection is named by its folder's name beside the data fingerprint
    (``data.collection``, ``data.fingerprint``), never by where it lay on the
    trainer's disk. Bundles written before kept the absolute path there (and
    the study import in ``provenance.group_cuts_from.collection``): this is
    what GET /model, ``export-hub`` and every save give of them.
    """

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and _LOCAL_PATH.fullmatch(value):
            return re.split(r"[\\/]", value.rstrip("/\\"))[-1]
        return value

    return clean(meta)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def part_bytes(model: "InterestModel") -> tuple[dict[str, bytes], dict]:
    """Every part file of a full ``model`` as bytes, keyed by file name, and what model.json says of its estimators."""
    arrays_by_part: dict[str, dict[str, np.ndarray]] = {}
    parts, estimators = {}, {}
    for attr, part, prefix, _ in ESTIMATORS:
        estimator = getattr(model, attr)
        params, arrays = estimator.to_state()
        arrays_by_part.setdefault(part, {}).update({prefix + name: value for name, value in arrays.items()})
        estimators[attr] = {"class": type(estimator).__name__, "params": params}
        for name, booster in estimator.lightgbm_state().items():
            if booster is not None:
                parts[LIGHTGBM_PARTS[attr, name]] = booster.model_to_string().encode("utf-8")
    parts.update({part: _npz_bytes(arrays) for part, arrays in arrays_by_part.items()})
    return parts, {"estimators": estimators}


def save_bundle(model: "InterestModel", path: str | os.PathLike) -> dict:
    """Write ``model`` as a bundle directory at ``path``, replacing an earlier bundle there.

    Everything is written into a temporary directory beside ``path`` and then
    switched in atomically (on systems without an atomic exchange, a crash
    between the two renames leaves the earlier bundle in ``.NAME.*.old/bundle``),
    so a crash never leaves a half-written bundle and a reader never sees one.
    The save holds the bundle's cross-process lock (see
    :func:`interest.models.storage.bundle_lock`; hold it yourself around a
    load-modify-save). A non-empty directory that is not a bundle is never
    overwritten. Returns the model.json written (the model itself is left as it was).
    """
    path = Path(path)
    if path.exists() and not (path / MODEL_JSON).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise InterestError(f"{path}: exists and is not a model bundle (no {MODEL_JSON}); choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    parts, described = model.bundle_parts()
    meta = without_local_paths(model.metadata)  # a bundle is meant to be shared: no path of this disk in it
    meta.update(
        described,
        schema_version=SCHEMA_VERSION,
        saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        parts={name: sha256_bytes(data) for name, data in sorted(parts.items())},
    )
    with bundle_lock(path):
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes the folder private; a model bundle is meant to be shared
            for name, data in parts.items():
                (tmp / name).write_bytes(data)
            # the whole folder is switched in below, so plain writes inside it are atomic enough
            (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
            switch_in(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return meta


def load_bundle(path: str | os.PathLike) -> "InterestModel":
    """Load the bundle at ``path`` as an :class:`~interest.models.model.InterestModel`.

    Refuses, with an InterestError naming the file: a missing bundle or
    model.json, invalid or unbounded JSON, a value of the wrong type, a schema
    newer than this interest, a missing part, a part whose sha256 differs from
    model.json, and any part that fails the checks of
    :mod:`interest.models.safe_io`. Safe to call while another process saves
    the bundle: it reads one version throughout.
    """
    path = Path(path)
    return read_consistently(path, lambda bundle: _load(path, bundle))


def _load(path: Path, bundle: BundleDir) -> "InterestModel":
    meta_path = path / MODEL_JSON
    raw = bundle.read(MODEL_JSON, safe_io.MAX_JSON_BYTES)
    if raw is None:
        raise not_a_model_bundle(path)
    meta = safe_io.read_json(raw, str(meta_path))
    if not isinstance(meta, dict) or type(meta.get("schema_version")) is not int:
        raise InterestError(f"{meta_path}: no integer schema_version; this is not an interest model.json")
    if meta["schema_version"] > SCHEMA_VERSION:
        raise InterestError(
            f"{meta_path}: written by a newer interest (schema_version {meta['schema_version']}, this one reads "
            f"up to {SCHEMA_VERSION}); upgrade interest"
        )
    parts = meta.get("parts")
    if not isinstance(parts, dict):
        raise InterestError(f"{meta_path}: no 'parts' table of part checksums; restore the bundle or retrain")
    _check_meta(meta, str(meta_path))
    if meta.get("kind") == "linear":  # only a common head (interest.models.study)
        data = {name: _read_part(path, name, digest, bundle) for name, digest in parts.items()}
        return MODEL_KINDS["linear"].from_bundle(path, meta, data)
    for name in REQUIRED_PARTS:
        if name not in parts:
            raise InterestError(f"{meta_path}: part '{name}' is not listed; restore the bundle or retrain")
    for key in ("backbone", "features"):
        if not isinstance(meta.get(key), dict):
            raise InterestError(f"{meta_path}: missing '{key}' section; restore the bundle or retrain")
    for key in ("features.pca_components", "features.head_components"):
        safe_io.field(meta, key, "int", str(meta_path), lo=1, hi=100_000)
    safe_io.field(meta, "features.app", "list", str(meta_path), items="str", hi=100_000)
    safe_io.field(meta, "features.full", "list", str(meta_path), items="str", hi=100_000, default=[])

    data = {name: _read_part(path, name, digest, bundle) for name, digest in parts.items()}
    classes = _estimator_classes()
    npz = {part: _npz(path, part, data) for part in dict.fromkeys(part for _, part, _, _ in ESTIMATORS)}
    fitted = {}
    for attr, part, prefix, names in ESTIMATORS:
        cls, params = _estimator(meta, attr, names, classes, str(meta_path))
        arrays = {key[len(prefix):]: value for key, value in npz[part].items() if key.startswith(prefix)}
        for name in cls.STATE:
            if name not in arrays:
                raise InterestError(f"{path / part}: array '{prefix + name}' is missing; restore it or retrain")
        lightgbm = {name: _lightgbm(path, LIGHTGBM_PARTS[attr, name], data) for name in cls.LIGHTGBM
                    if LIGHTGBM_PARTS[attr, name] in data}
        params, arrays = _before_kept(attr, params, arrays, meta, str(meta_path))
        fitted[attr] = _build(path, part, lambda: cls.from_state(params, arrays, lightgbm))  # noqa: B023 (called at once)
    try:
        model = MODEL_KINDS["full"](**fitted, metadata=meta, name=str(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise InterestError(f"{meta_path}: incomplete model description ({one_line(exc)}); restore the bundle or retrain") from None
    _check_shapes(model, path)
    return model


# Parameters that act when a loaded model scores (the rest only matter to a fit): bounded tighter.
_PARAM_BOUNDS = {"num_threads": (1, 4096)}


def _before_kept(attr: str, params: dict, arrays: dict, meta: dict, where: str) -> tuple[dict, dict]:
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


def _estimator(meta: dict, attr: str, names: tuple[str, ...], classes: dict[str, type], where: str) -> tuple[type, dict]:
    """The class (one of ``names``, from ``classes``) and checked parameters model.json names for estimator ``attr``.

    Bundles from before the parameters were kept name none: the first class, its defaults.
    """
    import inspect

    spec = safe_io.field(meta, f"estimators.{attr}", "dict", where, default={})
    name = safe_io.field(spec, "class", "str", where, default=names[0])
    if name not in names:
        raise InterestError(f"{where}: 'estimators.{attr}.class' is {safe_io.short_text(name)}, not one of "
                            f"{', '.join(names)}; restore the bundle or retrain")
    cls = classes[name]
    given = safe_io.field(spec, "params", "dict", where, default={})
    defaults = inspect.signature(cls.__init__).parameters
    params = {}
    for key in given:
        if key not in cls.PARAMS:
            raise InterestError(f"{where}: 'estimators.{attr}.params' has an unknown parameter "
                                f"'{safe_io.short_text(str(key))}'; restore the bundle or retrain")
        default = defaults[key].default
        if isinstance(default, str):  # a choice, such as the heads' method
            params[key] = safe_io.field(meta, f"estimators.{attr}.params.{key}", "str", where)
            continue
        kind = "list" if isinstance(default, tuple) else "int" if isinstance(default, int) else "float"
        lo, hi = (0, 10_000) if kind == "list" else _PARAM_BOUNDS.get(key, (-2**53, 2**53))
        value = safe_io.field(meta, f"estimators.{attr}.params.{key}", kind, where, optional=default is None,
                              items="float" if kind == "list" else None, lo=lo, hi=hi)
        params[key] = tuple(value) if kind == "list" else value
    return cls, params


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


def _check_meta(meta: dict, where: str) -> None:
    """The model.json values every loader reads, checked for type and range: one InterestError line each."""
    field = safe_io.field
    for key in ("backbone", "features", "training", "data", "label_settings", "thresholds", "personalized",
                "metrics", "common", "common_score", "user_heads", "estimators"):
        field(meta, key, "dict", where, default=None)
    field(meta, "kind", "str", where, default=None)
    field(meta, "backbone.id", "str", where)
    field(meta, "backbone.dim", "int", where, lo=1, hi=2**20)
    field(meta, "backbone.preprocessing", "dict", where, default=None, optional=True)
    field(meta, "training.num_threads", "int", where, default=2, lo=1, hi=4096)
    for key in ("label_settings.group_cuts", "thresholds.group_cuts"):
        field(meta, key, "list", where, default=None, optional=True, items="float", lo=2, hi=2)
    field(meta, "thresholds.rating_cuts", "list", where, default=None, optional=True, items="float", lo=4, hi=4)
    as_of = field(meta, "data.metadata_as_of", "str", where, default=None, optional=True)
    if as_of is not None:
        import pandas as pd

        try:
            pd.Timestamp(as_of)
        except (ValueError, TypeError, OverflowError):
            raise InterestError(f"{where}: 'data.metadata_as_of' is not a date ({safe_io.short_text(as_of)}); restore the bundle or retrain") from None
    for name, digest in meta["parts"].items():
        if not isinstance(digest, str):
            raise InterestError(f"{where}: the checksum of part '{safe_io.short_text(name)}' is not a string; restore the bundle")


def _read_part(path: Path, name: str, digest: str, bundle: BundleDir | None = None) -> bytes:
    file = path / name
    # a part name must not point outside the bundle (nor at the bundle itself)
    if Path(name).name != name or name in (".", "..") or "\\" in name or "\0" in name:
        raise InterestError(f"{path / MODEL_JSON}: part name '{safe_io.short_text(name)}' is not a plain file name; restore the bundle")
    data = (bundle or BundleDir(path)).read(name)
    if data is None:
        raise InterestError(f"{file}: part missing from the bundle; restore it or retrain the model")
    if sha256_bytes(data) != digest:
        raise InterestError(
            f"{file}: sha256 differs from the one in model.json (edited by hand or damaged); restore it or retrain"
        )
    return data


# What the loaders expect of the arrays they read: key -> (dtype kinds, ndim); "?" marks an optional key.
# Any other part, and any other array, still gets safe_io's size, dtype and header checks.
_ARRAY_SPECS: dict[str, dict[str, tuple[str, int | None]]] = {
    "common.npz": {
        "pca_mean": ("f", 1), "pca_components": ("f", 2), "pca_explained_variance": ("f", 1),
        "ridge_coef": ("f", 1), "ridge_intercept": ("fi", 0), "ridge_alpha": ("fi", 0),
        "prototype_centroids": ("f", 2), "prototype_ci": ("f", 1),
        "booster_app_linear": ("?f", 1),  # (offset, scale); bundles from before it keep them in model.json
    },
    "groups.npz": {"cuts": ("f", 1), "sigma": ("fi", 0), "prior": ("f", 1), "novelty_scale": ("fi", 0),
                   "far_width": ("fi", 0)},
    "user_heads.npz": {
        "users": ("U", 1), "n_favourites": ("iu", 1), "weights": ("f", 2), "anchors": ("f", 2), "tau": ("fi", 0),
        "d0": ("fi", 0), "background": ("f", 1), "templates": ("f", 2), "regime_settings": ("f", 2),
        "shot_settings": ("f", 2), "clip": ("fi", 0),
        # joint heads (bundles from before them have none of these)
        "factors": ("?f", 2), "item_weights": ("?f", 1), "fold_in_negatives": ("?f", 2), "fold_in_common": ("?f", 1),
        "common_centre": ("?fi", 0), "common_unit": ("?fi", 0), "common_weight_prior": ("?fi", 0),
        "deviation_bound": ("?fi", 0), "theta_mean": ("?f", 1), "theta_precision": ("?f", 2),
    },
}


def _npz(path: Path, name: str, data: dict[str, bytes]) -> dict[str, np.ndarray]:
    arrays = safe_io.read_npz(data[name], str(path / name))
    safe_io.check_arrays(arrays, _ARRAY_SPECS.get(name, {}), str(path / name))
    return arrays


def _build(path: Path, name: str, make):
    """``make()`` (an estimator's ``from_state``), its complaints about arrays that do not fit together made one line naming the part."""
    try:
        return make()
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InterestError(f"{path / name}: arrays that do not fit together ({one_line(exc)}); restore it or retrain") from None


def _lightgbm(path: Path, name: str, data: dict[str, bytes]):
    return safe_io.read_lgb(data[name], str(path / name))


def _check_shapes(model, path: Path) -> None:
    """The parts must agree with each other and with model.json (dims, feature counts)."""
    features, heads = model.metadata["features"], model.heads
    d, k, h = model.dim, int(features["pca_components"]), int(features["head_components"])
    n_pca, n_extra = model.pca.components_.shape[0], len(features.get("full", [])) - len(features["app"])
    checks = [
        ("common.npz", model.pca.components_.shape[1] == d and model.ridge.coef_.shape == (d,)),
        ("common.npz", n_pca >= max(k, h)),
        ("common.npz", model.prototypes.centroids_.shape == (len(model.prototypes.ci_), n_pca)),
        ("common_app.lgb.txt", model.booster.app_booster_.num_feature() == k + 2),
        ("groups.npz", len(model.groups.cuts_) == 2 and model.groups.cuts_[0] <= model.groups.cuts_[1]
         and model.groups.prior_.shape == (3,) and model.groups.sigma_ > 0 and model.groups.novelty_scale_ > 0
         and model.groups.far_width > 0),
        ("common.npz", model.pca.mean_.shape == (d,) and model.pca.explained_variance_.shape == (n_pca,)),
        (FULL_PART, model.booster.full_booster_ is None
         or model.booster.full_booster_.num_feature() == k + 2 + n_extra),
        # the boosters name their inputs themselves; the model reads model.json's names
        ("common_app.lgb.txt", model.booster.app_features_ == list(features["app"])),
        (FULL_PART, model.booster.full_booster_ is None or model.booster.full_features_ == list(features.get("full", []))),
        ("user_heads.npz", heads.weights_.shape == (len(heads.users_), len(heads.anchors_))),
        ("user_heads.npz", heads.anchors_.shape[1:] == (h,)
         and heads.templates_.shape[1:] == heads.background_.shape == (len(heads.anchors_),)),
    ]
    for name, ok in checks:
        if not ok:
            raise InterestError(f"{path / name}: shapes disagree with model.json; restore the bundle or retrain")
