"""The trend-group classifier: common (0), interplay (1) or subjective (2), with calibrated probabilities.

A multinomial logistic regression over the standardised stacking features
(the leading PCA components of the embedding and the ridge CI prediction),
fitted on most of the training photos; a temperature is then fitted on a
seeded held-out fold of them, so that the probabilities mean what they say
(a photo given p_common = 0.7 is common about 70% of the time). The logistic
model is not refitted after calibration: the temperature belongs to exactly
the model it was measured on.
"""

from __future__ import annotations

import numpy as np

N_GROUPS = 3  # interest.collection.TREND_GROUPS


class TrendGroupClassifier:
    """Multinomial logistic regression plus temperature scaling.

    Parameters: ``C`` (inverse L2 strength), ``calibration_fraction`` of the
    rows held out to fit the temperature, ``max_iter``, ``seed``. Learned:
    ``mean_``/``scale_`` (standardisation), ``coef_`` (3, f),
    ``intercept_`` (3,), ``temperature_``, ``validation_`` (figures on the
    calibration fold).
    """

    def __init__(self, C: float = 1.0, calibration_fraction: float = 0.2, max_iter: int = 300, seed: int = 0):
        self.C = C
        self.calibration_fraction = calibration_fraction
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, F: np.ndarray, groups: np.ndarray) -> "TrendGroupClassifier":
        """Fit on features ``F`` (n, f) and trend groups (n,) in {0, 1, 2}; needs two groups or more."""
        from sklearn.linear_model import LogisticRegression

        F = np.asarray(F, dtype=np.float64)
        groups = np.asarray(groups, dtype=np.int64)
        n = len(groups)
        self.mean_ = F.mean(axis=0)
        self.scale_ = np.where(F.std(axis=0) > 0, F.std(axis=0), 1.0)
        X = (F - self.mean_) / self.scale_
        is_calib = np.zeros(n, dtype=bool)
        n_calib = int(round(n * self.calibration_fraction))
        if n_calib >= 30:
            is_calib[np.random.default_rng(self.seed).choice(n, n_calib, replace=False)] = True
        fit_rows = ~is_calib
        if len(np.unique(groups[fit_rows])) < 2:  # a tiny set where the split took a whole group away
            fit_rows = np.ones(n, dtype=bool)
        lr = LogisticRegression(C=self.C, max_iter=self.max_iter)
        lr.fit(X[fit_rows], groups[fit_rows])
        # a group absent from training gets a probability of practically zero, never an index error
        self.coef_ = np.zeros((N_GROUPS, X.shape[1]))
        self.intercept_ = np.full(N_GROUPS, -30.0)
        if len(lr.classes_) == 2:  # sklearn's binary case has one row of coefficients: rebuild both sides
            coef = np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
            intercept = np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
        else:
            coef, intercept = lr.coef_, lr.intercept_
        self.coef_[lr.classes_] = coef
        self.intercept_[lr.classes_] = intercept
        self.temperature_ = 1.0
        self.validation_ = {}
        if is_calib.any():
            logits = X[is_calib] @ self.coef_.T + self.intercept_
            y = groups[is_calib]
            before = _nll(logits, y, 1.0)
            self.temperature_ = _fit_temperature(logits, y)
            proba = _softmax(logits / self.temperature_)
            pred = proba.argmax(axis=1)
            self.validation_ = {
                "n_calibration": int(is_calib.sum()),
                "temperature": self.temperature_,
                "log_loss_uncalibrated": before,
                "log_loss": _nll(logits, y, self.temperature_),
                "accuracy": float((pred == y).mean()),
                "macro_f1": macro_f1(y, pred),
                "expected_calibration_error": expected_calibration_error(proba, y),
                "group_frequency": np.bincount(y, minlength=N_GROUPS).tolist(),
                "mean_probability": proba.mean(axis=0).round(4).tolist(),
            }
        return self

    def predict_proba(self, F: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, 3) of common, interplay, subjective; rows sum to 1."""
        # standardisation and temperature folded into one affine map: a single small matmul per batch
        W = (self.coef_ / self.scale_[None, :]).T / self.temperature_
        b = (self.intercept_ - self.coef_ @ (self.mean_ / self.scale_)) / self.temperature_
        return _softmax(np.asarray(F, dtype=np.float64) @ W + b).astype(np.float32)

    def predict(self, F: np.ndarray) -> np.ndarray:
        """The most probable trend group per row (n,) int64."""
        return self.predict_proba(F).argmax(axis=1).astype(np.int64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def _fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out log loss (searched on log T in [e^-3, e^3])."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda t: _nll(logits, y, float(np.exp(t))), bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(res.x))


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-averaged F1 over the groups present in ``y``."""
    scores = []
    for g in np.unique(y):
        tp = np.sum((pred == g) & (y == g))
        denom = np.sum(pred == g) + np.sum(y == g)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Top-label expected calibration error: |confidence - accuracy| averaged over confidence bins."""
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.minimum((conf * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        m = edges == b
        if m.any():
            err += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(err)
