"""The stacked LightGBM regressors (``app`` and ``full``) and the image-level app score.

LightGBM is imported lazily so that ``import interest`` stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from interest.learn.base import Estimator
from interest.core.numeric import spearman


class StackedBooster(Estimator):
    """LightGBM regressors stacked on the first-level predictions: an ``app`` and a ``full`` variant.

    Inputs of the ``app`` variant: the leading ``pca`` features and the
    first-level (ridge, prototype) predictions. The ``full`` variant adds the ``extra`` columns (metadata and
    numeric characteristics; NaN where unknown, which LightGBM routes natively).
    Each variant is early-stopped on a seeded validation split of the training
    rows and keeps that booster, so its validation figures are honest.

    Learned: ``app_booster_``, ``full_booster_`` (None without extra columns), ``app_linear_``
    (None unless :meth:`use_image_score` made the app score the image-level model's),
    ``app_features_``, ``full_features_``, ``validation_`` (per variant and
    per first-level model: Spearman and MAE on the validation split).
    """

    LIGHTGBM = ("app_booster", "full_booster")
    # a bundle also keeps app_linear (offset, scale) when set; the feature names are the boosters' own

    def __init__(
        self,
        num_boost_round: int = 150,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        min_data_in_leaf: int = 40,
        feature_fraction: float = 0.9,
        bagging_fraction: float = 0.5,
        max_bin: int = 63,
        lambda_l2: float = 1.0,
        early_stopping_rounds: int = 30,
        validation_fraction: float = 0.1,
        num_threads: int = 2,
        seed: int = 0,
    ):
        self.num_boost_round = num_boost_round
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.max_bin = max_bin
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.num_threads = num_threads
        self.seed = seed

    def fit(
        self,
        Z: np.ndarray,
        stack: np.ndarray,
        y: np.ndarray,
        extra: pd.DataFrame | None = None,
        stack_names: tuple[str, ...] = ("ridge", "prototype"),
    ) -> "StackedBooster":
        """Fit on PCA features ``Z`` (n, k), out-of-fold first-level predictions ``stack`` (n, s) and targets.

        ``extra`` (n rows, numeric columns, NaN allowed) enables the ``full`` variant.
        """
        stack = _columns(stack)
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        self.app_linear_: tuple[float, float] | None = None  # (offset, scale) of image_score: see use_image_score
        rng = np.random.default_rng(self.seed)
        is_valid = np.zeros(n, dtype=bool)
        n_valid = int(round(n * self.validation_fraction))
        if n_valid >= 10 and n - n_valid >= 10:
            is_valid[rng.choice(n, n_valid, replace=False)] = True
        self.validation_rows_ = np.flatnonzero(is_valid)  # rows the boosters did not fit on (trend-group calibration)
        self.app_features_ = [f"pca_{i}" for i in range(Z.shape[1])] + list(stack_names)[: stack.shape[1]]
        app_X = self.app_matrix(Z, stack)
        self.validation_ = {}
        for j, name in enumerate(self.app_features_[Z.shape[1] :]):
            if is_valid.any():  # the first-level models alone, on the same validation photos
                self.validation_[name] = {
                    "spearman": spearman(stack[is_valid, j], y[is_valid]),
                    "mae": float(np.abs(stack[is_valid, j] - y[is_valid]).mean()),
                }
        self.app_booster_ = self._fit_one(app_X, y, is_valid, self.app_features_, "app")
        self.full_booster_ = None
        self.full_features_ = []
        if extra is not None and extra.shape[1]:
            self.full_features_ = self.app_features_ + [str(c) for c in extra.columns]
            full_X = np.hstack([app_X, extra.to_numpy(dtype=np.float32, na_value=np.nan)])
            self.full_booster_ = self._fit_one(full_X, y, is_valid, self.full_features_, "full")
        return self

    def use_image_score(self, stack: np.ndarray, y: np.ndarray) -> "StackedBooster":
        """Make the ``app`` score the image-level model's (:func:`fit_image_score` on the fitted rows' ``stack``
        and targets ``y``), unless it disagrees with the label; validated on the booster's validation rows.

        Returns the estimator; ``app_linear_`` stays None when the image-level score disagrees.
        """
        self.app_linear_ = fit_image_score(stack, y)
        v = self.validation_rows_
        if self.app_linear_ is not None and len(v):
            pred = image_score(_columns(stack)[v], *self.app_linear_)
            y = np.asarray(y, dtype=np.float64)
            self.validation_["app_image"] = {"spearman": spearman(pred, y[v]), "mae": float(np.abs(pred - y[v]).mean())}
        return self

    def _params(self) -> dict:
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            # row subsampling each round and coarse histograms: about 3x faster fits at paper
            # scale with no loss, since the stacked first-level predictions carry most of the signal
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "max_bin": self.max_bin,
            "lambda_l2": self.lambda_l2,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }

    def _fit_one(self, X, y, is_valid, names, variant):
        import lightgbm as lgb

        params = self._params()
        params["num_threads"] = _threads(self.num_threads, len(y), _SMALL_FIT)
        train = lgb.Dataset(X[~is_valid], y[~is_valid], feature_name=names, free_raw_data=True)
        callbacks, valid_sets = [], []
        if is_valid.any():
            valid_sets = [lgb.Dataset(X[is_valid], y[is_valid], reference=train)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        booster = lgb.train(
            params, train, num_boost_round=self.num_boost_round, valid_sets=valid_sets, callbacks=callbacks
        )
        rounds = booster.best_iteration or booster.current_iteration()
        # keep only the rounds early stopping chose, so the saved text model is exactly what was validated
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
        info: dict = {"rounds": int(rounds)}
        if is_valid.any():
            pred = booster.predict(X[is_valid], num_threads=_threads(self.num_threads, int(is_valid.sum()), _SMALL_PREDICT))
            info.update(
                n_validation=int(is_valid.sum()),
                spearman=spearman(pred, y[is_valid]),
                mae=float(np.abs(pred - y[is_valid]).mean()),
            )
        self.validation_[variant] = info
        return booster

    @staticmethod
    def app_matrix(Z: np.ndarray, stack: np.ndarray) -> np.ndarray:
        """The app variant's input matrix: PCA features then the first-level predictions."""
        return np.hstack([np.asarray(Z, dtype=np.float32), _columns(stack)])

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(parameters, arrays): ``app_linear`` (offset, scale) when the app score is the image-level model's."""
        params, arrays = super().to_state()
        if self.app_linear_ is not None:
            arrays["app_linear"] = np.asarray(self.app_linear_, dtype=np.float64)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray], lightgbm: dict | None = None) -> "StackedBooster":
        """The fitted booster of :meth:`to_state` and :meth:`lightgbm_state` (the app booster is required)."""
        est = super().from_state(params, arrays, lightgbm)
        if est.app_booster_ is None:
            raise ValueError("no app booster")
        est.app_linear_ = None
        if "app_linear" in arrays:
            offset, scale = (float(v) for v in np.asarray(arrays["app_linear"], dtype=np.float64).reshape(2))
            if not (np.isfinite(offset) and np.isfinite(scale) and scale > 0):
                raise ValueError("app_linear must be a finite offset and a positive scale")
            est.app_linear_ = (offset, scale)
        est.app_features_ = list(est.app_booster_.feature_name())
        est.full_features_ = [] if est.full_booster_ is None else list(est.full_booster_.feature_name())
        return est

    def app_form(self) -> tuple[str, Any]:
        """What the ``app`` score is computed with, for :meth:`predict` and the ONNX export:
        ``("image_score", (offset, scale))`` (see :func:`image_score`) or ``("lightgbm", booster)`` over :meth:`app_matrix`."""
        return ("lightgbm", self.app_booster_) if self.app_linear_ is None else ("image_score", self.app_linear_)

    def predict(self, Z: np.ndarray, stack: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """CI scores: the ``full`` variant when ``extra`` (n, len(extra features)) is given, else ``app``.

        With ``app_linear_`` set, the ``app`` score is the image-level model's own (see :func:`image_score`).
        """
        kind, form = self.app_form()
        if extra is None and kind == "image_score":
            return image_score(stack, *form)
        X = self.app_matrix(Z, stack)
        if extra is None:
            booster = form
        else:
            booster = self.full_booster_
            X = np.hstack([X, np.asarray(extra, dtype=np.float32)])
        return booster.predict(X, num_threads=_threads(self.num_threads, len(X), _SMALL_PREDICT)).astype(np.float32)


def fit_image_score(stack: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(offset, scale) putting the image-level model's score on the label's scale; None when it disagrees with the label.

    ``stack`` holds the out-of-fold first-level predictions (linear predictor,
    cluster effect) of the training photos; their sum is the image-level
    model's log share of users. Its exponential (the share itself, what the
    image-level label is on) is put onto the label by a least-squares line,
    which keeps ``ci_score`` on the scale the trend-group cuts are on and
    changes no ranking. The booster's trees cannot extrapolate beyond the
    training photos, so on photos the collection never held this score ranks
    closer to the truth (BENCHMARKS.md, issue 9). A non-positive slope would
    reverse the ranking: the caller then keeps the booster.
    """
    share = np.exp(_image_eta(stack))
    y = np.asarray(y, dtype=np.float64)
    var = float(share.var())
    if not var > 0:
        return None
    scale = float(((share - share.mean()) * (y - y.mean())).mean() / var)
    if not (np.isfinite(scale) and scale > 0):
        return None
    return float(y.mean() - scale * share.mean()), scale


def image_score(stack: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """``offset + scale * exp(linear predictor + cluster effect)`` per row, in float64 then float32 (batch independent)."""
    return (float(offset) + float(scale) * np.exp(_image_eta(stack))).astype(np.float32)


def _image_eta(stack: np.ndarray) -> np.ndarray:
    stack = _columns(stack)
    # clipped as the zero-truncated fit clips it: exp stays finite on any input
    return np.clip(stack[:, 0].astype(np.float64) + stack[:, 1].astype(np.float64), -30.0, 30.0)


# Below these sizes LightGBM runs on one thread: OpenMP's start-up and spin-waiting cost more than
# a second thread saves, and on a busy 2-core machine they cost seconds (measured: 100 rounds on
# 1,200 rows, 0.3 s on one thread, 4.5 s on two).
_SMALL_FIT, _SMALL_PREDICT = 20_000, 5_000


def _threads(configured: int, rows: int, small: int) -> int:
    return 1 if rows < small else configured


def _columns(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x[:, None] if x.ndim == 1 else x
