"""The CI of the nearest definition-set cluster, carried over to new photos (the labels' partition lookup)."""

from __future__ import annotations

import numpy as np

from interest.learn.base import CHUNK, Estimator, fold_ids
from interest.core.numeric import nearest_centroid, nearest_centroid_score


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

    STATE = ("centroids", "ci")

    def __init__(self, folds: int = 5, seed: int = 0):
        self.folds = folds
        self.seed = seed

    def fit(self, X: np.ndarray, clusters: np.ndarray, y: np.ndarray) -> "Prototypes":
        """Fit on features ``X`` (n, d), their cluster labels and CI scores."""
        n = len(X)
        k = max(2, min(self.folds, n))
        fold = fold_ids(n, k, self.seed)
        self.centroids_, self.ci_ = self._build(X, clusters, y, np.ones(n, dtype=bool))
        self.oof_prediction_ = np.empty(n, dtype=np.float32)
        for j in range(k):
            rows = np.flatnonzero(fold == j)
            centroids, ci = self._build(X, clusters, y, fold != j)
            for start in range(0, len(rows), CHUNK):
                part = rows[start : start + CHUNK]
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

    def predict_nearest(self, X: np.ndarray, on_block=None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` and each row's score at its nearest prototype, ``x . c - |c|^2 / 2`` (n,) float64,
        from one product: scoring needs both (the score gives the photo's novelty, :func:`~interest.learn.groups.novelty`).
        ``on_block(start, scores, top)`` sees each block's scores at every prototype
        (:func:`~interest.core.numeric.nearest_centroid_score`): a user head on the prototypes reads them."""
        nearest, score = nearest_centroid_score(np.asarray(X, dtype=np.float32), self.centroids_, on_block)
        return self.ci_[nearest], score
