"""The common model: what most people find interesting, from the embedding alone.

Three parts, fitted in this order and stacked:

* :class:`PCA` — a seeded reduction of the embedding; its leading components
  feed the booster, the trend-group classifier and the user heads.
* :class:`Ridge` — the paper's CI_R: a linear regression from the full
  embedding to the CI score, closed form, with alpha chosen by seeded K-fold
  cross-validation. Its out-of-fold predictions are the stacking input.
* :class:`Prototypes` — the CI of the nearest definition-set cluster (the
  labels' own partition lookup, extended to new photos), also out-of-fold.
* :class:`StackedBooster` — LightGBM regressors over the PCA features plus the
  ridge and prototype predictions. Two variants: ``app`` (embedding only, what a photo app
  has) and ``full`` (also Flickr metadata and image characteristics).

Everything here is deterministic for a seed, and LightGBM is imported lazily so
that ``import interest`` stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from interest.numeric import matmul64, nearest_centroid, nearest_centroid_score, spearman

# Candidate ridge alphas, relative to the mean eigenvalue of the centred
# scatter matrix: that makes the grid independent of n and of the embedding's
# scale, so one grid suits 64-d toys and 768-d CLIP alike.
RELATIVE_ALPHAS = tuple(float(a) for a in np.logspace(-5, 1, 13))
_CHUNK = 65_536  # rows per chunk: bounds the float32 temporaries at ~130 MB for 512-d


class Estimator:
    """What every fitted part of the model shares: its parameters and fitted arrays travel together.

    ``PARAMS`` names the constructor's parameters (scikit-learn's ``get_params``),
    ``STATE`` the fitted attributes (without their trailing ``_``) a bundle
    keeps. :meth:`to_state` and :meth:`from_state` are all a bundle asks of an
    estimator, so a loaded one reports the parameters it was trained with.
    """

    PARAMS: tuple[str, ...] = ()
    STATE: tuple[str, ...] = ()
    # fitted attributes that are LightGBM boosters (None when not fitted): a bundle keeps each as LightGBM text
    LIGHTGBM: tuple[str, ...] = ()

    def get_params(self) -> dict:
        """The constructor's parameters as JSON-ready values (tuples as lists)."""
        return {name: _json_value(getattr(self, name)) for name in self.PARAMS}

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(parameters, fitted arrays by name): what :meth:`from_state` rebuilds the estimator from."""
        return self.get_params(), {name: np.asarray(getattr(self, name + "_")) for name in self.STATE}

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


class LinearPredictor:
    """An estimator whose prediction is linear in its input: ``x @ coef_ + intercept_``."""

    def linear_form(self) -> tuple[np.ndarray, float]:
        """(coef (d,) float32, intercept): the prediction is ``x @ coef + intercept`` (what the model and the ONNX export score with)."""
        return np.asarray(self.coef_, dtype=np.float32), float(self.intercept_)


def _json_value(value):
    return [_json_value(v) for v in value] if isinstance(value, (tuple, list)) else value


def _fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """A seeded assignment of n rows to ``folds`` folds of near-equal size."""
    return np.random.default_rng(seed).permutation(n) % folds


class PCA(Estimator):
    """Principal components of the embeddings, fitted on a seeded sample of rows.

    Parameters: ``n_components`` kept; ``max_samples`` rows used to fit (the
    covariance of 100k rows is as good as that of 500k, at a fifth of the
    time); ``seed`` for the sample. Learned: ``mean_`` (d,), ``components_``
    (k, d), ``explained_variance_`` (k,).
    """

    PARAMS = ("n_components", "max_samples", "seed")
    STATE = ("mean", "components", "explained_variance")

    def __init__(self, n_components: int = 64, max_samples: int = 100_000, seed: int = 0):
        self.n_components = n_components
        self.max_samples = max_samples
        self.seed = seed

    def fit(self, X: np.ndarray) -> "PCA":
        """Fit on the rows of ``X`` (n, d)."""
        n, d = X.shape
        rows = np.arange(n)
        if n > self.max_samples:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, self.max_samples, replace=False))
        sample = np.asarray(X[rows], dtype=np.float64)
        mean = sample.mean(axis=0)
        sample -= mean
        cov = sample.T @ sample / max(len(rows) - 1, 1)
        values, vectors = np.linalg.eigh(cov)
        k = min(self.n_components, d)
        order = np.argsort(values)[::-1][:k]
        comps = vectors[:, order].T
        # eigh's signs are arbitrary; fix them so the same data always gives the same components
        signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        self.mean_ = mean.astype(np.float32)
        self.components_ = (comps * signs[:, None]).astype(np.float32)
        self.explained_variance_ = values[order].astype(np.float32)
        return self

    def linear_form(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights (d, k), offset (k,)) float32: the features are ``x @ weights + offset`` (what the model and
        the ONNX export score with; the offset in float32, as bundles have always been scored)."""
        return np.ascontiguousarray(self.components_.T), -(self.mean_ @ self.components_.T)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Project ``X`` (n, d) onto the components: (n, k) float32."""
        X = np.asarray(X, dtype=np.float32)
        return (matmul64(X, self.components_.T) - self.mean_.astype(np.float64) @ self.components_.T).astype(np.float32)


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

    PARAMS = ("alpha", "relative_alphas", "folds", "seed")
    STATE = ("coef", "intercept", "alpha")

    def __init__(
        self,
        alpha: float | None = None,
        relative_alphas: tuple[float, ...] = RELATIVE_ALPHAS,
        folds: int = 5,
        seed: int = 0,
    ):
        self.alpha = alpha
        self.relative_alphas = tuple(relative_alphas)
        self.folds = folds
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> "Ridge":
        """Fit on ``X`` (n, d) and targets ``y`` (n,)."""
        y = np.asarray(y, dtype=np.float64)
        n, d = X.shape
        k = max(2, min(self.folds, n))
        fold = _fold_ids(n, k, self.seed)
        # centre on a rough mean first so that float32 products keep their precision
        center = np.asarray(X[: min(n, _CHUNK)], dtype=np.float64).mean(axis=0).astype(np.float32)
        G = np.zeros((k, d, d))
        b = np.zeros((k, d))
        s = np.zeros((k, d))
        sy = np.zeros(k)
        cnt = np.bincount(fold, minlength=k).astype(np.float64)
        for start in range(0, n, _CHUNK):
            Xc = np.asarray(X[start : start + _CHUNK], dtype=np.float32) - center
            yc = y[start : start + _CHUNK]
            fc = fold[start : start + _CHUNK]
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
        for start in range(0, n, _CHUNK):
            Xc = np.asarray(X[start : start + _CHUNK], dtype=np.float32) - center
            fc = fold[start : start + _CHUNK]
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
        return (matmul64(np.asarray(X, dtype=np.float32), self.coef_) + self.intercept_).astype(np.float32)


class Prototypes(Estimator):
    """The CI of the nearest definition-set cluster: the paper's own CI, carried over to a new photo.

    The labels give every training photo a ``cluster_label`` (the k-means
    cluster its CI partition was built from). The prototypes are those
    clusters' mean features and CI; a photo's prediction is the CI of the
    nearest prototype (Euclidean, as k-means assigns). The features are the
    PCA features, not the raw embedding: the clusters differ along the leading
    components, and searching 64 dimensions instead of 512 keeps scoring fast. :meth:`fit` also gives
    out-of-fold predictions for the training photos (prototypes rebuilt
    without each fold, same folds as :class:`Ridge`), so the booster learns
    how far to trust the lookup where clusters blur.

    Learned: ``centroids_`` (C, d) float32, ``ci_`` (C,) float32,
    ``oof_prediction_`` (n,).
    """

    PARAMS = ("folds", "seed")
    STATE = ("centroids", "ci")

    def __init__(self, folds: int = 5, seed: int = 0):
        self.folds = folds
        self.seed = seed

    def fit(self, X: np.ndarray, clusters: np.ndarray, y: np.ndarray) -> "Prototypes":
        """Fit on features ``X`` (n, d), their cluster labels and CI scores."""
        n = len(X)
        k = max(2, min(self.folds, n))
        fold = _fold_ids(n, k, self.seed)
        self.centroids_, self.ci_ = self._build(X, clusters, y, np.ones(n, dtype=bool))
        self.oof_prediction_ = np.empty(n, dtype=np.float32)
        for j in range(k):
            rows = np.flatnonzero(fold == j)
            centroids, ci = self._build(X, clusters, y, fold != j)
            for start in range(0, len(rows), _CHUNK):
                part = rows[start : start + _CHUNK]
                self.oof_prediction_[part] = ci[nearest_centroid(X[part], centroids)]
        return self

    @staticmethod
    def _build(X, clusters, y, keep) -> tuple[np.ndarray, np.ndarray]:
        import scipy.sparse as sp

        _, inv = np.unique(np.asarray(clusters)[keep], return_inverse=True)
        counts = np.bincount(inv).astype(np.float64)
        onehot = sp.csr_matrix((1.0 / counts[inv], (inv, np.arange(len(inv)))), shape=(len(counts), len(inv)))
        centroids = np.asarray(onehot @ np.asarray(X[keep], dtype=np.float64), dtype=np.float32)
        ci = (np.bincount(inv, np.asarray(y, dtype=np.float64)[keep]) / counts).astype(np.float32)
        return centroids, ci

    def nearest_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(centroids transposed (k, C), ``-|c|^2 / 2`` (C,), CI (C,)) float32: the prediction is the CI at the
        argmax of ``x @ centroids_t + half_sq`` (the nearest prototype, first on ties), as the ONNX export scores it."""
        c = np.asarray(self.centroids_, dtype=np.float32)
        return np.ascontiguousarray(c.T), (-0.5 * np.einsum("ij,ij->i", c, c)).astype(np.float32), self.ci_.astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The CI of each row's nearest prototype: (n,) float32."""
        return self.ci_[nearest_centroid(np.asarray(X, dtype=np.float32), self.centroids_)]

    def predict_nearest(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` and each row's score at its nearest prototype, ``x . c - |c|^2 / 2`` (n,) float64,
        from one product: scoring needs both (the score gives the photo's novelty, :func:`~interest.models.groups.novelty`)."""
        nearest, score = nearest_centroid_score(np.asarray(X, dtype=np.float32), self.centroids_)
        return self.ci_[nearest], score


class StackedBooster(Estimator):
    """LightGBM regressors stacked on the first-level predictions: an ``app`` and a ``full`` variant.

    Inputs of the ``app`` variant: the leading ``pca`` features and the
    first-level (ridge, prototype) predictions. The ``full`` variant adds the ``extra`` columns (metadata and
    numeric characteristics; NaN where unknown, which LightGBM routes natively).
    Each variant is early-stopped on a seeded validation split of the training
    rows and keeps that booster, so its validation figures are honest.

    Learned: ``app_booster_``, ``full_booster_`` (None without extra columns), ``app_linear_``
    (set by the caller: the app score is then the image-level model's, see :func:`fit_image_score`),
    ``app_features_``, ``full_features_``, ``validation_`` (per variant and
    per first-level model: Spearman and MAE on the validation split).
    """

    PARAMS = ("num_boost_round", "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction",
              "bagging_fraction", "max_bin", "lambda_l2", "early_stopping_rounds", "validation_fraction",
              "num_threads", "seed")
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
        self.app_linear_: tuple[float, float] | None = None  # (offset, scale) of image_score, set by training

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

    PARAMS = ("relative_alphas", "folds", "seed", "max_samples", "cv_max_samples", "max_iter", "group_scale", "alpha")
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
        self.relative_alphas = tuple(relative_alphas)
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
        fold = _fold_ids(n, k, self.seed)
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
        for j in range(k if self.alpha is None else 0):
            train, valid = fold[cv_rows] != j, fold[cv_rows] == j
            if not train.any() or not valid.any():
                continue
            gcv = None if g is None else g[cv_rows]
            for a, alpha in enumerate(alphas):
                w, b, u = self._fit_one(Xcv[train], counts[cv_rows][train], alpha, _take(gcv, train), n_groups)
                eta = Xcv[valid] @ w + b + (0.0 if u is None else u[gcv[valid]])
                self.cv_deviance_[a] += _zt_nll(eta, counts[cv_rows][valid]).sum()
        best = int(np.argmin(self.cv_deviance_))
        self.alpha_ = float(alphas[best])
        self.oof_prediction_ = np.empty(n, dtype=np.float32)
        self.oof_group_effect_ = np.zeros(n, dtype=np.float32)
        for j in range(k):
            rows = self._sample(positive[fold[positive] != j], rng)
            w, b, u = self._fit_one(np.asarray(X[rows], dtype=np.float64), counts[rows], self.alpha_, _take(g, rows), n_groups)
            out = np.flatnonzero(fold == j)
            for start in range(0, len(out), _CHUNK):
                part = out[start : start + _CHUNK]
                self.oof_prediction_[part] = (matmul64(X[part], w[:, None])[:, 0] + b).astype(np.float32)
            if u is not None:
                self.oof_group_effect_[out] = u[g[out]]
        rows = self._sample(positive, rng)
        w, b, u = self._fit_one(np.asarray(X[rows], dtype=np.float64), counts[rows], self.alpha_, _take(g, rows), n_groups)
        self.coef_ = w.astype(np.float32)
        self.intercept_ = float(b)
        self.group_effect_ = None if u is None else u.astype(np.float32)
        if prior is not None:
            self._blend(prior, counts)
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
        self, X: np.ndarray, c: np.ndarray, alpha: float, g: np.ndarray | None = None, n_groups: int = 0
    ) -> tuple[np.ndarray, float, np.ndarray | None]:
        """(w, b, group effects) minimising the mean zero-truncated NLL + alpha/2 (|w|^2 + |u / scale|^2)."""
        from scipy.optimize import minimize

        mean = X.mean(axis=0)
        Xc = X - mean
        n, d = len(c), X.shape[1]
        s = float(self.group_scale)
        m = n_groups if g is not None else 0

        def loss(theta):
            w, v, b = theta[:d], theta[d : d + m], theta[-1]
            eta = Xc @ w + b + (s * v[g] if m else 0.0)
            nll, grad_eta = _zt_nll(eta, c, gradient=True)
            value = nll.mean() + 0.5 * alpha * (w @ w + v @ v)
            grad = [Xc.T @ grad_eta / n + alpha * w]
            if m:
                grad.append(s * np.bincount(g, grad_eta, minlength=m) / n + alpha * v)
            return value, np.concatenate([*grad, [grad_eta.mean()]])

        start = np.zeros(d + m + 1)
        start[-1] = np.log(max(float(c.mean()) - 0.5, 0.1))
        result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        w, v, b = result.x[:d], result.x[d : d + m], float(result.x[-1])
        return w, b - float(mean @ w), (s * v if m else None)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The linear predictor (log expected distinct users, plus any offset folded into the intercept): (n,) float32."""
        return (matmul64(X, self.coef_[:, None])[:, 0] + self.intercept_).astype(np.float32)


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
