"""What every fitted part of a model shares: scikit-learn's parameter protocol and a bundle's state.

An estimator keeps its hyperparameters as given to ``__init__`` (one
attribute per parameter, never validated or converted there), learns in
``fit`` (which returns the estimator) and keeps what it learned in attributes
ending in ``_``. :meth:`Estimator.get_params`, :meth:`Estimator.set_params`
and the ``repr`` read the parameters from ``__init__``'s signature, as
scikit-learn's ``BaseEstimator`` does, so ``sklearn.base.clone`` copies any of
them without this package importing scikit-learn. :meth:`Estimator.to_state`
and :meth:`Estimator.from_state` are all a bundle asks of an estimator.
"""

from __future__ import annotations

import inspect

import numpy as np

CHUNK = 65_536  # rows per chunk: bounds the float32 temporaries at ~130 MB for 512-d


class Estimator:
    """The parameter protocol of scikit-learn plus a bundle's state.

    ``STATE`` names the fitted attributes (without their trailing ``_``) a
    bundle keeps, ``LIGHTGBM`` those that are LightGBM boosters (None when not
    fitted; a bundle keeps each as LightGBM text).
    """

    STATE: tuple[str, ...] = ()
    LIGHTGBM: tuple[str, ...] = ()

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameter names, in signature order (the order model.json keeps them in)."""
        if cls.__init__ is object.__init__:
            return []
        names = []
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ takes *args or **kwargs: an estimator names each parameter")
            names.append(p.name)
        return names

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters as given (scikit-learn's ``get_params``).

        With ``deep``, a parameter that is itself an estimator also gives its own
        parameters as ``name__param``.
        """
        params = {}
        for name in self.param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                params.update({f"{name}__{k}": v for k, v in value.get_params().items()})
            params[name] = value
        return params

    def set_params(self, **params) -> "Estimator":
        """Set parameters (``name`` or ``name__param`` of an estimator parameter); returns the estimator."""
        valid = self.param_names()
        nested: dict[str, dict] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"{key!r} is not a parameter of {type(self).__name__}; its parameters: {', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        """``Class(param=value, ...)`` with the parameters that differ from their defaults, as scikit-learn writes it."""
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{name}={value!r}" for name, value in self.get_params(deep=False).items()
                   if not _same(value, defaults[name].default)]
        return f"{type(self).__name__}({', '.join(changed)})"

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(parameters as JSON-ready values (tuples as lists), fitted arrays by name): what :meth:`from_state` rebuilds
        the estimator from."""
        params = {name: _json_value(value) for name, value in self.get_params(deep=False).items()}
        return params, {name: np.asarray(getattr(self, name + "_")) for name in self.STATE}

    def lightgbm_state(self) -> dict:
        """The fitted LightGBM boosters by name (``LIGHTGBM``; None for one not fitted)."""
        return {name: getattr(self, name + "_") for name in self.LIGHTGBM}

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray], lightgbm: dict | None = None):
        """The fitted estimator of :meth:`to_state`'s (and :meth:`lightgbm_state`'s) output.

        0-d arrays come back as Python numbers; a booster missing from ``lightgbm`` as None.
        """
        est = cls(**params)
        for name in cls.STATE:
            value = arrays[name]
            setattr(est, name + "_", value.item() if value.ndim == 0 else value)
        for name in cls.LIGHTGBM:
            setattr(est, name + "_", (lightgbm or {}).get(name))
        return est


def _json_value(value):
    return [_json_value(v) for v in value] if isinstance(value, (tuple, list)) else value


def _same(value, default) -> bool:
    """Whether a parameter equals its default (a tuple equals the list of its items, as model.json keeps it)."""
    if value is default:
        return True
    if isinstance(value, (tuple, list)) and isinstance(default, (tuple, list)):
        return _json_value(value) == _json_value(default)
    if type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # an array compared element-wise
        return False


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """A seeded assignment of n rows to ``folds`` folds of near-equal size."""
    return np.random.default_rng(seed).permutation(n) % folds
