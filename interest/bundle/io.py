"""Reading and writing model bundles: a directory with model.json and its parts, in formats that never run code.

Layout (which part holds what: :mod:`interest.bundle.format`)::

    model.json            schema version, backbone, features, label settings,
                          thresholds, training config, data fingerprint,
                          metrics, each estimator's class and parameters,
                          and the sha256 of every part
    common.npz            PCA, ridge, prototypes, the booster's app score line
    common_app.lgb.txt    LightGBM text model, embedding only
    common_full.lgb.txt   LightGBM text model with metadata (when trained with it)
    groups.npz            trend-group classifier
    user_heads.npz        user ids (fixed-width unicode), head weights, anchors, background stats

A linear bundle (``kind: linear``, the study's imported head) holds
``linear_head.npz`` and ``direction_heads.npz`` instead.

Every part comes from the estimators' own state (:class:`interest.learn.base.Estimator`:
parameters, arrays, LightGBM boosters); this module only loops over them (:data:`interest.bundle.format.ESTIMATORS`)
and hands back the fitted parts (:class:`Bundle`): the model classes build themselves from them.

No pickle and no joblib: npz files are read with ``allow_pickle=False`` and
LightGBM models are parsed from text. Each part's bytes are read once, checked
against model.json's sha256, and parsed from those same bytes, so a part
edited by hand (or half-copied) is refused rather than half-used. The sha256
only says the bundle is the one model.json describes, not that it is benign:
every part then goes through :mod:`interest.bundle.safe_io` (bounded JSON,
npz headers checked before reading, every LightGBM tree checked before
LightGBM sees it) and every model.json value is type-checked, so a hostile
bundle is one InterestError line, never a crash, hang or traceback.

Saving replaces the whole directory in one atomic switch under a lock shared
by every process (:mod:`interest.bundle.storage`); loading reads one version
throughout and tries again if a save switched versions under it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, TypeVar

import numpy as np

from interest.bundle import safe_io
from interest.bundle.format import (
    ESTIMATORS,
    FULL_KIND,
    HEADS_PARAMS,
    HEADS_PART,
    LIGHTGBM_PARTS,
    LINEAR_KIND,
    LINEAR_PARTS,
    MODEL_JSON,
    REQUIRED_PARTS,
    SCHEMA_VERSION,
    before_kept,
    check_shapes,
    estimator_classes,
    part_specs,
)
from interest.bundle.storage import BundleDir, bundle_lock, read_consistently, switch_in
from interest.core.errors import InterestError, not_a_model_bundle, one_line
from interest.learn.base import Estimator

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


class Saveable(Protocol):
    """What :func:`editing` edits: a model that saves itself as a bundle."""

    def save(self, path: str | os.PathLike) -> None: ...


M = TypeVar("M", bound=Saveable)


@dataclass(frozen=True)
class Bundle:
    """A bundle read and checked: its kind (``full`` or ``linear``), model.json, and its parts.

    A full bundle's ``parts`` are its fitted estimators by the model's attribute
    (:data:`interest.bundle.format.ESTIMATORS`), shapes already checked; a
    linear bundle's are ``weight`` and ``bias`` of its common head and the
    direction heads' ``heads_params`` and ``heads_arrays`` (:data:`~interest.bundle.format.LINEAR_PARTS`).
    """

    kind: str
    metadata: dict
    parts: dict[str, Any]
    path: Path


def write_bundle(path: str | os.PathLike, metadata: dict, parts: dict[str, bytes], described: dict | None = None) -> dict:
    """Write a bundle directory at ``path`` (model.json from ``metadata`` and ``described``, and the ``parts``
    files by name), replacing an earlier bundle there.

    Everything is written into a temporary directory beside ``path`` and then
    switched in atomically (on systems without an atomic exchange, a crash
    between the two renames leaves the earlier bundle in ``.NAME.*.old/bundle``),
    so a crash never leaves a half-written bundle and a reader never sees one.
    The save holds the bundle's cross-process lock (see
    :func:`interest.bundle.storage.bundle_lock`; :func:`editing` holds it around a
    load-modify-save). A non-empty directory that is not a bundle is never
    overwritten. Returns the model.json written.
    """
    path = Path(path)
    if path.exists() and not (path / MODEL_JSON).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise InterestError(f"{path}: exists and is not a model bundle (no {MODEL_JSON}); choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = without_local_paths(metadata)  # a bundle is meant to be shared: no path of this disk in it
    meta.update(
        described or {},
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


@contextmanager
def editing(path: str | os.PathLike, load: Callable[[], M], *, hold: AbstractContextManager | None = None,
            saved: Callable[[], None] | None = None) -> Iterator[M]:
    """``with editing(path, load) as model:`` edit a bundle in place: lock, ``load()``, yield, save atomically.

    The bundle's cross-process lock is held throughout, so a service or a
    command personalising the same bundle meanwhile loses no head; ``hold``
    (e.g. a thread lock of the caller's) is held inside it, and ``saved`` is
    called once the bundle is saved, both locks still held. The model is saved
    back to ``path`` when the block ends without an exception; an exception
    leaves the bundle on disk as it was.
    """
    with bundle_lock(path), (hold if hold is not None else nullcontext()):
        model = load()
        yield model
        model.save(path)
        if saved is not None:
            saved()


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read and check the bundle at ``path``: its kind, model.json and fitted parts (see :class:`Bundle`).

    Refuses, with an InterestError naming the file: a missing bundle or
    model.json, invalid or unbounded JSON, a value of the wrong type, a schema
    newer than this interest, a missing part, a part whose sha256 differs from
    model.json, and any part that fails the checks of
    :mod:`interest.bundle.safe_io`. Safe to call while another process saves
    the bundle: it reads one version throughout.
    """
    path = Path(path)
    return read_consistently(path, lambda bundle: _read(path, bundle))


def _read(path: Path, bundle: BundleDir) -> Bundle:
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
    if meta.get("kind") == LINEAR_KIND:  # only a common head (interest.models.study)
        data = {name: _read_part(path, name, digest, bundle) for name, digest in parts.items()}
        return Bundle(LINEAR_KIND, meta, _linear(path, meta, data), path)
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
    classes = estimator_classes()
    npz = {part: _npz(path, part, data) for part in dict.fromkeys(row.part for row in ESTIMATORS.values())}
    fitted: dict[str, Estimator] = {}
    for attr, row in ESTIMATORS.items():
        cls, params = _estimator(meta, attr, row.classes, classes, str(meta_path))
        arrays = {key[len(row.prefix):]: value for key, value in npz[row.part].items() if key.startswith(row.prefix)}
        for name in cls.STATE:
            if name not in arrays:
                raise InterestError(f"{path / row.part}: array '{row.prefix + name}' is missing; restore it or retrain")
        lightgbm = {name: _lightgbm(path, LIGHTGBM_PARTS[attr, name], data) for name in cls.LIGHTGBM
                    if LIGHTGBM_PARTS[attr, name] in data}
        params, arrays = before_kept(attr, params, arrays, meta, str(meta_path))
        fitted[attr] = _build(path, row.part, lambda: cls.from_state(params, arrays, lightgbm))  # noqa: B023 (called at once)
    try:
        check_shapes(fitted, meta, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise InterestError(f"{meta_path}: incomplete model description ({one_line(exc)}); restore the bundle or retrain") from None
    return Bundle(FULL_KIND, meta, fitted, path)


def _linear(path: Path, meta: dict, data: dict[str, bytes]) -> dict[str, Any]:
    """The parts of a linear bundle, each array checked against :data:`~interest.bundle.format.LINEAR_PARTS`."""
    for name in LINEAR_PARTS:
        if name not in data:
            raise InterestError(f"{path / MODEL_JSON}: part '{name}' is not listed; restore the bundle")
    if not isinstance(meta.get("common"), dict) or not isinstance(meta.get("backbone"), dict):
        raise InterestError(f"{path / MODEL_JSON}: missing 'common' or 'backbone' section; restore the bundle")
    arrays = {}
    for name, spec in LINEAR_PARTS.items():
        arrays[name] = safe_io.read_npz(data[name], str(path / name), fix="restore the bundle")
        safe_io.check_arrays(arrays[name], spec, str(path / name), fix="restore the bundle")
    linear, heads = next(iter(arrays.values())), arrays[HEADS_PART]
    return {"weight": linear["weight"], "bias": float(linear["bias"]),
            "heads_params": {key: kind(heads[key]) for key, kind in HEADS_PARAMS.items()}, "heads_arrays": heads}


# Parameters that act when a loaded model scores (the rest only matter to a fit): bounded tighter.
_PARAM_BOUNDS = {"num_threads": (1, 4096)}


def _estimator(meta: dict, attr: str, names: tuple[str, ...], classes: dict[str, type], where: str) -> tuple[type, dict]:
    """The class (one of ``names``, from ``classes``) and checked parameters model.json names for estimator ``attr``.

    Bundles from before the parameters were kept name none: the first class, its defaults.
    """
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
        if key not in cls.param_names():
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


def _npz(path: Path, name: str, data: dict[str, bytes]) -> dict[str, np.ndarray]:
    arrays = safe_io.read_npz(data[name], str(path / name))
    safe_io.check_arrays(arrays, part_specs(name), str(path / name))
    return arrays


def _build(path: Path, name: str, make):
    """``make()`` (an estimator's ``from_state``), its complaints about arrays that do not fit together made one line naming the part."""
    try:
        return make()
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InterestError(f"{path / name}: arrays that do not fit together ({one_line(exc)}); restore it or retrain") from None


def _lightgbm(path: Path, name: str, data: dict[str, bytes]):
    return safe_io.read_lgb(data[name], str(path / name))


