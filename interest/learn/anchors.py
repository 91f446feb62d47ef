"""The anchors a user head lives on, and a photo's soft membership of them.

The anchors are points of the PCA subspace: by default the common model's
prototypes (the definition-set clusters' centroids, which scoring searches
anyway), else k-means centroids of the training photos. A photo's membership
``r(x)`` is a softmax over its (full-embedding) squared distances to them plus
a "nowhere" term, so a photo far from every anchor belongs to none
(:mod:`interest.learn.heads` has the whole model).

Everything here starts from the anchor scores ``s_k = z . a_k - |a_k|^2 / 2``
(:func:`~interest.core.numeric.centroid_scores`, the nearest-prototype
search's own product): ``|x - a_k|^2 = |x - mean|^2 - 2 s_k``, so the
distances differ from the nearest one's by ``2 (s_best - s_k)``. On the
prototypes, scoring with a head costs the softmax and one product with the
user's row, not a second search (:meth:`Anchors.weighted_memberships`).
"""

from __future__ import annotations

import numpy as np

from interest.core.numeric import centroid_scores, matmul64, nearest_centroid_score

_KMEANS_SAMPLE = 20_000  # photos the anchors are clustered from (in the PCA subspace: a few seconds)


class Anchors:
    """The anchor methods of :class:`~interest.learn.heads.UserHeads` (a mixin: ``anchors_``, ``tau_`` and ``d0_``
    are the heads' fitted state; ``n_anchors``, ``bandwidth`` and ``seed`` their parameters)."""

    def memberships(self, F: np.ndarray) -> np.ndarray:
        """Soft anchor memberships r(x) of head inputs ``F`` (n, h + 1): (n, K) float64, rows sum to at most 1.

        ``F`` is a photo's first h PCA features and, last, its squared distance
        to the PCA mean (:meth:`InterestModel.head_inputs`). The anchors lie in
        the PCA subspace, so ``|x - a_k|^2 = |x - mean|^2 - 2 z . a_k + |a_k|^2``
        exactly, the part of ``x`` outside the subspace included, for an
        h-dimensional product instead of a full-embedding one.
        """
        F = np.asarray(F)
        scores = centroid_scores(self._features(F), self.anchors_)
        e, rest = self._softmax_parts(scores, scores.max(axis=1), F[:, -1])
        e = e.astype(np.float64)
        e /= (e.sum(axis=1) + rest)[:, None]
        return e

    def weighted_memberships(self, scores: np.ndarray, top: np.ndarray, dist_sq: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``r(x) @ w`` as float32 (``w`` (K,) or (K, m)) from the anchor scores ``scores`` (rows, K), each row's
        largest score ``top`` (its nearest anchor's) and its squared distance to the PCA mean ``dist_sq``: what
        scoring needs. The
        scores are used as scratch space (overwritten): scoring hands over a block it has finished with.

        The softmax's exponentials are taken in float32 (a third of the time of
        float64 ones); the row's total and its product with ``w`` come from one
        float64 product after them, the division last. Every step is row by row,
        so a row's value never depends on its batch; it differs from
        ``memberships(F) @ w`` by float32 rounding (~1e-7 relative).
        """
        w = np.asarray(w, dtype=np.float64)
        # the row's total rides along as a last column of ones
        W = np.column_stack([w.reshape(len(scores[0]), -1), np.ones(len(scores[0]))])
        e, rest = self._softmax_parts(scores, top, dist_sq)
        sums = matmul64(e, W)
        sums[:, -1] += rest
        out = (sums[:, :-1] / sums[:, -1:]).astype(np.float32)
        return out[:, 0] if w.ndim == 1 else out

    def deviations_of(self, F: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``memberships(F) @ w`` as float32, as :meth:`weighted_memberships` computes it: the anchors searched
        block by block as scoring searches the prototypes (:func:`~interest.core.numeric.nearest_centroid_score`)."""
        F = np.asarray(F)
        w = np.asarray(w)
        out = np.empty((len(F),) + w.shape[1:], dtype=np.float32)

        def on_block(start, scores, top):
            rows = slice(start, start + len(top))
            out[rows] = self.weighted_memberships(scores, top, F[rows, -1], w)

        nearest_centroid_score(self._features(F), self.anchors_, on_block)
        return out

    @staticmethod
    def _features(F: np.ndarray) -> np.ndarray:
        """The float32 PCA features of head inputs ``F`` (what scoring's prototype search reads, so a head scores
        the same bits through :meth:`deviations_of` as there)."""
        return np.asarray(F[:, :-1], dtype=np.float32)

    def _softmax_parts(self, scores: np.ndarray, top: np.ndarray, dist_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The softmax's numerators (rows, K) float32 and its "nowhere" term (rows,) float64, both relative to
        the row's largest logit: ``r(x)`` is the numerators over their sum plus that term. ``top``: each row's
        largest score. Overwrites ``scores``."""
        top_score = np.asarray(top, dtype=np.float64)[:, None]
        # the nearest anchor's squared distance; the others lie 2 (s_best - s_k) further
        nearest = np.maximum(np.asarray(dist_sq, dtype=np.float64)[:, None] - 2.0 * top_score, 0.0)
        tau, null = self.tau_, -self.d0_ / self.tau_
        top = np.maximum(-nearest / tau, null)
        # logit_k - top = (2 / tau) (s_k - shift): the difference in float64, in place (the scores are large
        # beside it), then scaled and exponentiated in float32: at 100 anchors these passes over (rows, K)
        # are most of what a head costs when scoring
        scores -= top_score + 0.5 * (nearest + tau * top)
        e = scores.astype(np.float32)
        e *= np.float32(2.0 / tau)
        np.exp(e, out=e)
        return e, np.exp(null - top[:, 0])

    def membership_form(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(anchors (K, h), ``|a_k|^2`` (K,), ``-1 / tau``, the "nowhere" logit ``-d0 / tau``), float64: what
        the ONNX export computes ``r(x)`` with, as the softmax over
        ``[-relu(|x - mean|^2 - 2 z . a_k + |a_k|^2) / tau, nowhere]`` without its last column."""
        a = self.anchors_.astype(np.float64)
        return a, np.einsum("ij,ij->i", a, a), -1.0 / self.tau_, -self.d0_ / self.tau_

    def _fit_anchors(self, F: np.ndarray, anchors: np.ndarray | None = None) -> None:
        """The anchors (``anchors`` (K, h) when given, else k-means centroids of a sample of ``F``), the bandwidth
        ``tau`` (``bandwidth`` times the median squared distance of a photo to its nearest anchor) and the
        "nowhere" distance ``d0`` (its 99th percentile)."""
        rng = np.random.default_rng(self.seed)
        n = len(F)
        sample = np.sort(rng.choice(n, min(n, _KMEANS_SAMPLE), replace=False))
        if anchors is not None:
            self.anchors_ = np.asarray(anchors, dtype=np.float32)
        else:
            from sklearn.cluster import KMeans

            k = self.n_anchors or int(np.clip(round(n / 15), 16, 256))
            k = max(1, min(k, len(sample)))
            km = KMeans(n_clusters=k, n_init=1, max_iter=30, random_state=self.seed)
            self.anchors_ = km.fit(F[sample, :-1].astype(np.float64)).cluster_centers_.astype(np.float32)
        top = centroid_scores(self._features(F[sample]), self.anchors_).max(axis=1)
        nearest = np.maximum(np.asarray(F[sample, -1], dtype=np.float64) - 2.0 * top, 0.0)
        self.tau_ = float(self.bandwidth * max(np.median(nearest), 1e-12))
        self.d0_ = float(np.quantile(nearest, 0.99))
