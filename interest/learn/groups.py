"""Trend groups: the bands between two cut points on the CI score, and their calibrated probabilities.

The group of a photo is the band its own predicted ``ci_score`` falls in
(common at or above the upper cut, subjective below the lower one), so the
group never contradicts the score. The probabilities say how sure that is:
the photo's true CI label is modelled as the prediction plus logistic noise
of scale ``sigma``, fitted by maximum likelihood on training photos the
common model did not fit on (the booster's early-stopping rows)::

    p_subjective = F((lower - ci) / sigma)
    p_common     = 1 - F((upper - ci) / sigma)
    p_interplay  = 1 - p_subjective - p_common

The labels come from the same users as the prediction, so they cannot show
how much the prediction would move had the collection held other users; the
truth (what the whole population finds common) does move. Training measures
that spread (two seeded halves of the users, see
``user_sampling_sd`` in the train stage) and ``sigma`` adds it in
quadrature to the noise fitted against the labels: on the synthetic family
this brings the calibration against the true groups from an expected
calibration error of about 0.2 to under 0.1 (BENCHMARKS.md, issue 9).

Far from the training photos the model has seen nothing, so its noise model
says nothing either: the probabilities are blended towards the training
photos' group frequencies ``pi`` with a weight that grows with the photo's
*novelty* ``nu`` (squared distance to the nearest cluster prototype,
including the part of the embedding outside the PCA subspace, over its 99th
percentile on the training photos)::

    lambda = 1 - exp(-max(0, nu - 1) / far_width)
    p      = (1 - lambda) p + lambda pi

A photo inside the training cloud (nu <= 1) keeps the calibrated
probabilities; one 1.5 times as far as the 99th percentile gets
lambda = 0.63 and one twice as far 0.86 (default ``far_width`` 0.5).

Near a cut the band of ``ci_score`` is not always the most probable group
(a prediction just above the lower cut is about as likely to be subjective as
interplay); ``trend_group`` is the band, the probabilities are how likely each
band is.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from interest.core.errors import InterestError
from interest.learn.base import Estimator
from interest.core.numeric import centroid_scores, macro_f1
from interest.core.vocabulary import TREND_GROUPS

N_GROUPS = len(TREND_GROUPS)
# Group 0 is *commonly interesting* (the head of the commonality curve), 1 the *interplay* between the two,
# 2 *subjectively interesting* (the tail)
COMMON, INTERPLAY, SUBJECTIVE = 0, 1, 2


def check_group_cuts(cuts: Sequence[float]) -> tuple[float, float]:
    """``cuts`` as a (lower, upper) pair of finite floats with lower <= upper."""
    try:
        lo, hi = (float(c) for c in cuts)
    except (TypeError, ValueError):
        raise InterestError(f"group cuts {cuts!r}: give two numbers, the lower and upper CI cut") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InterestError(f"group cuts {cuts!r}: need two finite numbers with lower <= upper")
    return lo, hi


def assign_trend_groups(ci: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """Trend group (0 common, 1 interplay, 2 subjective) of each CI score.

    ``ci >= upper`` is common, ``ci < lower`` subjective; NaN is subjective
    (a photo nobody's favourites can reach is not commonly interesting).
    """
    lo, hi = check_group_cuts(cuts)
    ci = np.asarray(ci, dtype=float)
    groups = np.full(ci.shape, INTERPLAY, dtype=np.int64)
    groups[ci >= hi] = COMMON
    groups[~(ci >= lo)] = SUBJECTIVE
    return groups


def centred_sq(emb: np.ndarray, pca_mean: np.ndarray) -> np.ndarray:
    """``|x - mean|^2`` of each embedding (n,) float64: with the PCA features, the full distance to any point of the subspace."""
    emb = np.asarray(emb, dtype=np.float32)
    mean = np.asarray(pca_mean, dtype=np.float64)
    # |x|^2 - 2 x.mean + |mean|^2: the two row sums in float32 (einsum, not BLAS: a row's sum never depends
    # on its batch; in float32 they take a tenth of the time of float64 ones, ~1e-7 apart), combined in float64
    sq = np.einsum("ij,ij->i", emb, emb).astype(np.float64)
    return sq - 2.0 * np.einsum("ij,j->i", emb, mean.astype(np.float32)) + mean @ mean


def novelty(dist_sq: np.ndarray, Z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared distance of each photo to its nearest prototype, counting the part outside the PCA subspace.

    ``dist_sq`` (n,): :func:`centred_sq`; ``Z`` (n, c) the PCA features,
    ``centroids`` (C, c) the prototypes in the same PCA space:
    ``|x - mean|^2 - 2 max_k (z . c_k - |c_k|^2 / 2)`` (= ``|z - c_k|^2`` for
    the nearest k plus the squared residual). (n,) float64.
    """
    return novelty_at(dist_sq, centroid_scores(np.asarray(Z, dtype=np.float32), centroids).max(axis=1))


def novelty_at(dist_sq: np.ndarray, nearest_score: np.ndarray) -> np.ndarray:
    """:func:`novelty` from each photo's score at its nearest prototype (``max_k z . c_k - |c_k|^2 / 2``)."""
    return np.maximum(np.asarray(dist_sq, dtype=np.float64) - 2.0 * nearest_score, 0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class TrendGroupClassifier(Estimator):
    """The band of the predicted CI plus calibrated band probabilities, widened far from the training photos.

    Parameters: ``far_width`` (how fast the probabilities blend to the group
    frequencies beyond the training cloud, in units of the 99th-percentile
    novelty). Learned: ``cuts_`` (lower, upper), ``sigma_``, ``prior_`` (3,)
    group frequencies of the training photos, ``novelty_scale_`` (99th
    percentile of the training photos' novelty) and ``validation_``.
    """

    STATE = ("cuts", "sigma", "prior", "novelty_scale")

    def __init__(self, far_width: float = 0.5):
        self.far_width = far_width

    def fit(
        self,
        ci_pred: np.ndarray,
        groups: np.ndarray,
        cuts: tuple[float, float],
        train_novelty: np.ndarray,
        train_groups: np.ndarray,
        user_sampling_sd: float = 0.0,
    ) -> "TrendGroupClassifier":
        """Fit ``sigma`` on held-out predictions ``ci_pred`` and their labels' groups (0, 1, 2).

        ``cuts``: the labels' (lower, upper) CI cut points; ``train_novelty``
        (raw :func:`novelty` of every training photo) sets the novelty scale;
        ``train_groups`` (every training photo's group) the frequencies;
        ``user_sampling_sd``: the standard deviation of the prediction over
        which users the collection happened to hold (on the CI scale), added
        in quadrature to the noise fitted against the labels.
        """
        from scipy.optimize import minimize_scalar

        self.cuts_ = (float(cuts[0]), float(cuts[1]))
        ci_pred = np.asarray(ci_pred, dtype=np.float64)
        groups = np.asarray(groups, dtype=np.int64)
        self.prior_ = np.bincount(np.asarray(train_groups, dtype=np.int64), minlength=N_GROUPS) / max(len(train_groups), 1)
        self.novelty_scale_ = float(max(np.quantile(np.asarray(train_novelty, dtype=np.float64), 0.99), 1e-12))
        spread = float(np.std(ci_pred)) or 1.0

        def nll(log_sigma: float) -> float:
            p = self._band_probabilities(ci_pred, float(np.exp(log_sigma)))
            return float(-np.log(np.maximum(p[np.arange(len(groups)), groups], 1e-12)).mean())

        res = minimize_scalar(nll, bounds=(np.log(spread) - 8.0, np.log(spread) + 3.0), method="bounded")
        sigma_label = float(np.exp(res.x))
        # the labels share the prediction's users, so they cannot show how it moves with them: a logistic
        # of scale s has standard deviation s * pi / sqrt(3)
        self.sigma_ = float(np.hypot(sigma_label, float(user_sampling_sd) * np.sqrt(3.0) / np.pi))
        proba = self._band_probabilities(ci_pred, self.sigma_)
        band = self.predict(ci_pred)
        self.validation_ = {
            "n_calibration": int(len(groups)),
            "sigma": self.sigma_,
            "sigma_label": sigma_label,
            "user_sampling_sd": float(user_sampling_sd),
            "log_loss": float(nll(np.log(self.sigma_))),
            "accuracy": float((band == groups).mean()),
            "macro_f1": macro_f1(groups, band, N_GROUPS),
            "expected_calibration_error": expected_calibration_error(proba, groups),
            "group_frequency": np.bincount(groups, minlength=N_GROUPS).tolist(),
            "mean_probability": proba.mean(axis=0).round(4).tolist(),
        }
        return self

    def _band_probabilities(self, ci: np.ndarray, sigma: float) -> np.ndarray:
        lo, hi = self.cuts_
        p_sub = _sigmoid((lo - ci) / sigma)
        p_common = 1.0 - _sigmoid((hi - ci) / sigma)
        return np.column_stack([p_common, np.maximum(1.0 - p_sub - p_common, 0.0), p_sub])

    def far_weight(self, novelty_raw: np.ndarray) -> np.ndarray:
        """lambda in [0, 1): how far the probabilities are blended towards the group frequencies."""
        excess = np.maximum(np.asarray(novelty_raw, dtype=np.float64) / self.novelty_scale_ - 1.0, 0.0)
        return 1.0 - np.exp(-excess / self.far_width)

    def predict_proba(self, ci: np.ndarray, novelty_raw: np.ndarray) -> np.ndarray:
        """Probabilities (n, 3) of common, interplay, subjective for predicted CI scores; rows sum to 1."""
        p = self._band_probabilities(np.asarray(ci, dtype=np.float64), self.sigma_)
        lam = self.far_weight(novelty_raw)[:, None]
        p = (1.0 - lam) * p + lam * self.prior_[None, :]
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, ci: np.ndarray) -> np.ndarray:
        """The band of each CI score (n,) int64: 0 common (>= upper), 2 subjective (< lower), 1 between."""
        return assign_trend_groups(np.asarray(ci, dtype=np.float64), self.cuts_)

    def probability_form(self) -> dict[str, np.ndarray]:
        """:meth:`predict_proba`'s constants folded for a graph of float32 operations (the ONNX export)::

            p_subjective = sigmoid(lo_over_sigma - ci * inv_sigma)
            p_common     = 1 - sigmoid(hi_over_sigma - ci * inv_sigma)
            keep         = exp(max(0, novelty * inv_novelty_scale - 1) * minus_inv_far_width)
            p            = keep * p + (1 - keep) * prior, then rows scaled to sum 1
        """
        f32 = lambda v: np.asarray(v, dtype=np.float32).reshape(-1)  # noqa: E731
        lo, hi = self.cuts_
        return {
            "lo_over_sigma": f32(lo / self.sigma_), "hi_over_sigma": f32(hi / self.sigma_), "inv_sigma": f32(1.0 / self.sigma_),
            "inv_novelty_scale": f32(1.0 / self.novelty_scale_), "minus_inv_far_width": f32(-1.0 / self.far_width),
            "prior": f32(self.prior_)[None, :],
        }

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(parameters, arrays); ``far_width`` is among the arrays too, where bundles from before the parameters were kept hold it."""
        params, arrays = super().to_state()
        arrays["far_width"] = np.float64(self.far_width)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray], lightgbm: dict | None = None) -> "TrendGroupClassifier":
        """The fitted classifier of :meth:`to_state`'s output."""
        clf = super().from_state({"far_width": float(arrays["far_width"]), **params}, arrays)
        lo, hi = (float(v) for v in np.asarray(arrays["cuts"], dtype=np.float64).ravel()[:2])
        clf.cuts_ = (lo, hi)
        clf.prior_ = np.asarray(arrays["prior"], dtype=np.float64)
        clf.validation_ = {}
        return clf


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
