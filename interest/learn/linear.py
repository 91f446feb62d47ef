"""Linear predictors of the CI score from the embedding.

* :class:`Ridge` — the paper's CI_R: a linear regression from the full
  embedding to the CI score, closed form, with alpha chosen by seeded K-fold
  cross-validation. Its out-of-fold predictions are the stacking input.
* :class:`ZeroTruncatedPoisson` — image-level commonality: the log expected
  count of distinct favouriting users, fitted on zero-truncated counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interest.learn.base import CHUNK, Estimator, fold_ids
from interest.core.numeric import affine32, matmul64


# Candidate ridge alphas, relative to the mean eigenvalue of the centred
# scatter matrix: that makes the grid independent of n and of the embedding's
# scale, so one grid suits 64-d toys and 768-d CLIP alike.
RELATIVE_ALPHAS = tuple(float(a) for a in np.logspace(-5, 1, 13))


class LinearPredictor:
    """An estimator whose prediction is linear in its input: ``x @ coef_ + intercept_``."""

    def linear_form(self) -> tuple[np.ndarray, float]:
        """(coef (d,) float32, intercept): the prediction is ``x @ coef + intercept`` (what the model and the ONNX export score with)."""
        return np.asarray(self.coef_, dtype=np.float32), float(self.intercept_)


class Ridge(LinearPredictor, Estimator):
    """Ridge regression, closed form, with alpha chosen by seeded K-fold CV.

    The scatter matrix of each fold is accumulated once (chunked, float64);
    each training complement is then one eigendecomposition, after which every
    candidate alpha costs a matrix-vector product. So cross-validating a whole
    alpha grid costs about two passes over the data.

    Parameters: ``alpha`` (absolute; None = choose by CV from
    ``relative_alphas`` times the mean eigenvalue of the scatter matrix),
    ``folds``, ``seed``. Learned: ``coef_`` (d,), ``intercept_``, ``alpha_``,
    ``cv_mse_`` (per candidate), ``oof_prediction_`` (n,): each row predicted
    by the model fitted without its fold (the stacking input).
    """

    STATE = ("coef", "intercept", "alpha")

    def __init__(
        self,
        alpha: float | None = None,
        relative_alphas: tuple[float, ...] = RELATIVE_ALPHAS,
        folds: int = 5,
        seed: int = 0,
    ):
        self.alpha = alpha
        self.relative_alphas = relative_alphas
        self.folds = folds
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Ridge":
        """Fit on ``X`` (n, d) and targets ``y`` (n,)."""
        y = np.asarray(y, dtype=np.float64)
        n, d = X.shape
        k = max(2, min(self.folds, n))
        fold = fold_ids(n, k, self.seed)
        # centre on a rough mean first so that float32 products keep their precision
        center = np.asarray(X[: min(n, CHUNK)], dtype=np.float64).mean(axis=0).astype(np.float32)
        G = np.zeros((k, d, d))
        b = np.zeros((k, d))
        s = np.zeros((k, d))
        sy = np.zeros(k)
        cnt = np.bincount(fold, minlength=k).astype(np.float64)
        for start in range(0, n, CHUNK):
            Xc = np.asarray(X[start : start + CHUNK], dtype=np.float32) - center
            yc = y[start : start + CHUNK]
            fc = fold[start : start + CHUNK]
            for j in range(k):
                m = fc == j
                Xj = Xc[m]
                G[j] += Xj.T @ Xj
                b[j] += Xj.T @ yc[m].astype(np.float32)
                s[j] += Xj.sum(axis=0, dtype=np.float64)
                sy[j] += yc[m].sum()
        Gt, bt, st, syt, nt = G.sum(0), b.sum(0), s.sum(0), sy.sum(), cnt.sum()
        scale = np.trace(self._scatter(Gt, bt, st, syt, nt)[0]) / d
        alphas = (
            np.array([float(self.alpha)])
            if self.alpha is not None
            else np.asarray(self.relative_alphas, dtype=np.float64) * max(scale, 1e-12)
        )
        # per fold: coefficients for every alpha at once (d, A) and the matching offsets (A,)
        coefs, offsets = [], []
        for j in range(k):
            C, c, mx, my = self._scatter(Gt - G[j], bt - b[j], st - s[j], syt - sy[j], nt - cnt[j])
            W = self._solve(C, c, alphas)
            coefs.append(W)
            offsets.append(my - mx @ W)
        oof = np.empty((n, len(alphas)))
        for start in range(0, n, CHUNK):
            Xc = np.asarray(X[start : start + CHUNK], dtype=np.float32) - center
            fc = fold[start : start + CHUNK]
            for j in range(k):
                m = fc == j
                oof[start + np.flatnonzero(m)] = Xc[m].astype(np.float64) @ coefs[j] + offsets[j]
        self.cv_mse_ = ((oof - y[:, None]) ** 2).mean(axis=0)
        best = int(np.argmin(self.cv_mse_))
        self.alpha_ = float(alphas[best])
        self.oof_prediction_ = oof[:, best].astype(np.float32)
        C, c, mx, my = self._scatter(Gt, bt, st, syt, nt)
        w = self._solve(C, c, alphas[best : best + 1])[:, 0]
        # undo the rough centring: predictions are x @ coef + intercept on raw x
        self.coef_ = w.astype(np.float32)
        self.intercept_ = float(my - mx @ w - center.astype(np.float64) @ w)
        return self

    @staticmethod
    def _scatter(G, b, s, sy, n):
        """Centred scatter matrix, cross-products and means from raw sums."""
        mx, my = s / n, sy / n
        return G - n * np.outer(mx, mx), b - n * mx * my, mx, my

    @staticmethod
    def _solve(C: np.ndarray, c: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """(C + alpha I)^-1 c for each alpha, as columns of a (d, A) matrix."""
        values, vectors = np.linalg.eigh(C)
        proj = vectors.T @ c
        return vectors @ (proj[:, None] / (values[:, None] + alphas[None, :]))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted CI scores for ``X`` (n, d): (n,) float32."""
        return affine32(np.asarray(X, dtype=np.float32), self.coef_, self.intercept_)


# Candidate L2 penalties of the image-level model, relative to the mean eigenvalue of the
# embedding's covariance (as for the ridge): one grid for 64-d toys and 768-d CLIP.
GLM_RELATIVE_ALPHAS = (0.03, 0.1, 0.3, 1.0, 3.0)


class ZeroTruncatedPoisson(LinearPredictor, Estimator):
    """Image-level commonality: ``log E[distinct users] = x·w + b``, fitted on zero-truncated counts.

    A crawl keeps only photos somebody favourited, so every collected photo
    has at least one favourite: a photo's count of distinct favouriting users
    is zero-truncated Poisson, ``P(c) = λ^c e^-λ / (c! (1 - e^-λ))``, c >= 1.
    Fitting a plain Poisson (or a ridge on log counts) to such counts
    flattens the slope, since the many photos with one favourite look alike.
    Rows with count 0 (photos whose favourites all came from held-out users)
    carry no training signal and are left out of the fit, not of the
    out-of-fold predictions.

    L-BFGS on the mean negative log-likelihood plus ``alpha/2 |w|^2``; alpha
    chosen from ``relative_alphas`` × the mean eigenvalue of the embedding's
    covariance by seeded K-fold cross-validated deviance on at most
    ``cv_max_samples`` rows (or ``alpha`` as given, without cross-validation);
    each fit uses at most ``max_samples`` rows (a seeded sample) so paper
    scale stays within minutes.

    With ``groups`` (a cluster per row), each group also gets an effect
    ``u_g`` under the same penalty on ``u_g / group_scale``: a shrunk per-cluster
    correction for what a linear function of the embedding cannot express
    (on the family, sub-topics outnumber the dimensions). The effects are
    kept apart from the linear predictor, so the caller applies them (the
    model's prototypes do).

    With ``prior`` (another linear predictor of the same photos: its
    out-of-fold values on these rows, its coefficients and intercept), the
    fitted predictor is then blended with it: ``a * (x·w + u_g) + c * prior
    + b``, the three numbers fitted by the same likelihood on out-of-fold
    values only, so the prior gets the weight its held-out predictions earn
    (near 0 when it adds nothing). The blend is folded into ``coef_``,
    ``intercept_`` and the effects, so the model stays linear.

    Learned, like :class:`Ridge` (the bundle stores it in the same place):
    ``coef_`` (d,) float32, ``intercept_``, ``alpha_``, ``cv_deviance_`` (per
    candidate) and ``oof_prediction_`` (n,) float32: each row's linear
    predictor from the model fitted without its fold; with groups also
    ``groups_`` (the group labels), ``group_effect_`` (one per label) and
    ``oof_group_effect_`` (n,); with a prior also ``blend_`` (a, c, b).
    """

    STATE = ("coef", "intercept", "alpha")  # the group effects live on in the prototypes

    def __init__(
        self,
        relative_alphas: tuple[float, ...] = GLM_RELATIVE_ALPHAS,
        folds: int = 5,
        seed: int = 0,
        max_samples: int = 50_000,
        cv_max_samples: int = 20_000,
        max_iter: int = 300,
        group_scale: float = 1.0,
        alpha: float | None = None,
    ):
        self.alpha = alpha
        self.group_scale = group_scale
        self.relative_alphas = relative_alphas
        self.folds = folds
        self.seed = seed
        self.max_samples = max_samples
        self.cv_max_samples = cv_max_samples
        self.max_iter = max_iter

    def fit(
        self,
        X: np.ndarray,
        counts: np.ndarray,
        groups: np.ndarray | None = None,
        prior: tuple[np.ndarray, np.ndarray, float] | None = None,
    ) -> "ZeroTruncatedPoisson":
        """Fit on embeddings ``X`` (n, d), each row's count of distinct favouriting users (n,), optional groups and prior.

        ``prior``: (out-of-fold values (n,), coef (d,), intercept) of another linear predictor to blend with.
        """
        counts = np.asarray(counts, dtype=np.float64)
        g, self.groups_ = (None, None) if groups is None else pd.factorize(np.asarray(groups), sort=True)
        n_groups = 0 if g is None else len(self.groups_)
        n = len(counts)
        k = max(2, min(self.folds, n))
        fold = fold_ids(n, k, self.seed)
        rng = np.random.default_rng(self.seed)
        positive = np.flatnonzero(counts > 0)
        if len(positive) < 2:
            raise ValueError("the image-level model needs at least two photos with a favourite")
        cv_rows = positive if len(positive) <= self.cv_max_samples else np.sort(
            rng.choice(positive, self.cv_max_samples, replace=False)
        )
        Xcv = np.asarray(X[cv_rows], dtype=np.float64)
        scale = float(np.trace(np.cov(Xcv.T)) / X.shape[1]) if len(cv_rows) > 1 else 1.0
        alphas = np.asarray(self.relative_alphas, dtype=np.float64) * max(scale, 1e-12)
        if self.alpha is not None:  # a given penalty: nothing to cross-validate
            alphas = np.array([float(self.alpha)])
        self.cv_deviance_ = np.zeros(len(alphas)) if self.alpha is None else np.full(1, np.nan)
        # each fit starts where a neighbouring one ended (same objective, same optimum within L-BFGS's tolerance):
        # along a fold's penalties from the strongest down, then each fold's out-of-fold fit from that fold's
        # solution at the chosen penalty, the final fit from their mean. On the paper-scale world this saves a
        # quarter of the iterations (22-27%) of the slowest step of label and of train.
        fold_start: dict[tuple[int, int], np.ndarray] = {}
        for j in range(k if self.alpha is None else 0):
            train, valid = fold[cv_rows] != j, fold[cv_rows] == j
            if not train.any() or not valid.any():
                continue
            gcv = None if g is None else g[cv_rows]
            start = None
            for a in np.argsort(-alphas, kind="stable"):
                w, b, u, start = self._fit_one(Xcv[train], counts[cv_rows][train], alphas[a], _take(gcv, train), n_groups, start)
                fold_start[(j, int(a))] = start
                eta = Xcv[valid] @ w + b + (0.0 if u is None else u[gcv[valid]])
                self.cv_deviance_[a] += _zt_nll(eta, counts[cv_rows][valid]).sum()
        best = int(np.argmin(self.cv_deviance_))
        self.alpha_ = float(alphas[best])
        self.oof_prediction_ = np.empty(n, dtype=np.float32)
        self.oof_group_effect_ = np.zeros(n, dtype=np.float32)
        fold_solutions = []
        for j in range(k):
            rows = self._sample(positive[fold[positive] != j], rng)
            w, b, u, solution = self._fit_one(X[rows], counts[rows], self.alpha_,
                                              _take(g, rows), n_groups, fold_start.get((j, best)))
            fold_solutions.append(solution)
            out = np.flatnonzero(fold == j)
            for start in range(0, len(out), CHUNK):
                part = out[start : start + CHUNK]
                self.oof_prediction_[part] = (matmul64(X[part], w[:, None])[:, 0] + b).astype(np.float32)
            if u is not None:
                self.oof_group_effect_[out] = u[g[out]]
        rows = self._sample(positive, rng)
        w, b, u, _ = self._fit_one(X[rows], counts[rows], self.alpha_, _take(g, rows),
                                   n_groups, np.mean(fold_solutions, axis=0))
        self.coef_ = w.astype(np.float32)
        self.intercept_ = float(b)
        self.group_effect_ = None if u is None else u.astype(np.float32)
        if prior is not None:
            self._blend(prior, counts)
        return self

    def share_of(self, n_users: int) -> "ZeroTruncatedPoisson":
        """Make the linear predictor the log *share* of ``n_users`` expected to favourite a photo (not the log count).

        Subtracts ``log n_users`` from ``intercept_`` (in float64) and from
        ``oof_prediction_`` (in float32); returns the estimator.
        """
        self.intercept_ -= float(np.log(n_users))
        self.oof_prediction_ = self.oof_prediction_ - np.float32(np.log(n_users))
        return self

    def _blend(self, prior: tuple[np.ndarray, np.ndarray, float], counts: np.ndarray) -> None:
        """Fit ``a * own + c * prior + b`` on out-of-fold values (positive rows) and fold it into the state."""
        from scipy.optimize import minimize

        own = self.oof_prediction_.astype(np.float64) + self.oof_group_effect_
        q = np.asarray(prior[0], dtype=np.float64)
        rows = counts > 0
        F = np.column_stack([own, q, np.ones(len(q))])[rows]

        def loss(theta):
            nll, grad_eta = _zt_nll(F @ theta, counts[rows], gradient=True)
            return nll.mean(), F.T @ grad_eta / len(grad_eta)

        a, c, b = minimize(loss, np.array([1.0, 0.0, 0.0]), jac=True, method="L-BFGS-B").x
        self.blend_ = (float(a), float(c), float(b))
        self.coef_ = (a * self.coef_.astype(np.float64) + c * np.asarray(prior[1], dtype=np.float64)).astype(np.float32)
        self.intercept_ = float(a * self.intercept_ + c * float(prior[2]) + b)
        self.oof_prediction_ = (a * self.oof_prediction_ + c * q + b).astype(np.float32)
        self.oof_group_effect_ = (a * self.oof_group_effect_).astype(np.float32)
        if self.group_effect_ is not None:
            self.group_effect_ = (a * self.group_effect_.astype(np.float64)).astype(np.float32)

    def _sample(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if len(rows) <= self.max_samples:
            return rows
        return np.sort(rng.choice(rows, self.max_samples, replace=False))

    def _fit_one(
        self, X: np.ndarray, c: np.ndarray, alpha: float, g: np.ndarray | None = None, n_groups: int = 0,
        start: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, np.ndarray | None, np.ndarray]:
        """(w, b, group effects, the solution to start a neighbouring fit from) minimising the mean
        zero-truncated NLL + alpha/2 (|w|^2 + |u / scale|^2); ``start``: such a solution of another fit."""
        from scipy.optimize import minimize

        mean = X.mean(axis=0, dtype=np.float64)
        # the two products of each evaluation read the rows in float32: half the memory traffic, which is
        # what an evaluation costs (the optimum moves by float32 rounding, far inside L-BFGS's tolerance)
        Xc = np.asarray(X, dtype=np.float32) - mean.astype(np.float32)
        n, d = len(c), X.shape[1]
        s = float(self.group_scale)
        m = n_groups if g is not None else 0

        def loss(theta):
            w, v, b = theta[:d], theta[d : d + m], theta[-1]
            eta = (Xc @ w.astype(np.float32)).astype(np.float64) + b + (s * v[g] if m else 0.0)
            nll, grad_eta = _zt_nll(eta, c, gradient=True)
            value = nll.mean() + 0.5 * alpha * (w @ w + v @ v)
            grad = [(Xc.T @ grad_eta.astype(np.float32)).astype(np.float64) / n + alpha * w]
            if m:
                grad.append(s * np.bincount(g, grad_eta, minlength=m) / n + alpha * v)
            return value, np.concatenate([*grad, [grad_eta.mean()]])

        if start is None:
            start = np.zeros(d + m + 1)
            start[-1] = np.log(max(float(c.mean()) - 0.5, 0.1))
        result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        w, v, b = result.x[:d], result.x[d : d + m], float(result.x[-1])
        return w, b - float(mean @ w), (s * v if m else None), result.x

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The linear predictor (log expected distinct users, plus any offset folded into the intercept): (n,) float32."""
        return affine32(X, self.coef_[:, None], self.intercept_)[:, 0]


def _take(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[rows]


def _zt_nll(eta: np.ndarray, c: np.ndarray, gradient: bool = False):
    """Zero-truncated Poisson negative log-likelihood per row (up to log c!), and its derivative in eta."""
    eta = np.clip(eta, -30.0, 30.0)
    lam = np.exp(eta)
    # log(1 - e^-λ), stable for small λ
    log_q = np.log(-np.expm1(-lam))
    nll = lam + log_q - c * eta
    if not gradient:
        return nll
    # d/deta: λ + λ e^-λ / (1 - e^-λ) - c; for large λ expm1 overflows to inf and the middle term is 0, as it should be
    with np.errstate(over="ignore"):
        return nll, lam + lam / np.expm1(lam) - c
