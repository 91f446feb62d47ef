"""The anchors a user head lives on, and a photo's soft membership of them.

The anchors are k-means centroids of the training photos in the PCA
subspace; a photo's membership ``r(x)`` is a softmax over its (full-embedding)
squared distances to them plus a "nowhere" term, so a photo far from every
anchor belongs to none (:mod:`interest.learn.heads` has the whole model).
Scoring takes the memberships weighted by a head's table in one folded
product (:meth:`Anchors._weighted_memberships`).
"""

from __future__ import annotations

import numpy as np

from interest.core.numeric import matmul64

_SCORE_CHUNK = 1_024  # photos per block when scoring a head: its (rows, K) temporaries stay in cache
_KMEANS_SAMPLE = 20_000  # photos the anchors are clustered from (in the PCA subspace: a few seconds)


class Anchors:
    """The anchor methods of :class:`~interest.learn.heads.UserHeads` (a mixin: ``anchors_``, ``tau_`` and ``d0_``
    are the heads' fitted state; ``n_anchors``, ``bandwidth`` and ``seed`` their parameters)."""

    def memberships(self, F: np.ndarray) -> np.ndarray:
        """Soft anchor memberships r(x) of head inputs ``F`` (n, h + 1): (n, K) float64, rows sum to at most 1.

        ``F`` is a photo's first h PCA features and, last, its squared distance
        to the PCA mean (:meth:`InterestModel.head_inputs`). The anchors lie in
        the PCA subspace, so ``|x - c_k|^2 = |x - mean|^2 - 2 z . a_k + |a_k|^2``
        exactly, the part of ``x`` outside the subspace included, for an
        h-dimensional product instead of a full-embedding one.
        """
        F = np.asarray(F)
        a, a_sq, minus_inv_tau, null = self.membership_form()
        # in place on one (n, K) float64 block: scoring many photos for a user is mostly this
        d2 = matmul64(F[:, :-1], a.T)
        d2 *= -2.0
        d2 += F[:, -1:].astype(np.float64)
        d2 += a_sq[None, :]
        np.maximum(d2, 0.0, out=d2)
        logits = d2
        logits *= minus_inv_tau
        top = np.maximum(logits.max(axis=1, keepdims=True), null)
        logits -= top
        e = np.exp(logits, out=logits)
        e /= e.sum(axis=1, keepdims=True) + np.exp(null - top)
        return e

    def membership_form(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(anchors (K, h), ``|a_k|^2`` (K,), ``-1 / tau``, the "nowhere" logit ``-d0 / tau``), float64: what
        :meth:`memberships` (and the ONNX export) computes ``r(x)`` with, as the softmax over
        ``[-relu(|x - mean|^2 - 2 z . a_k + |a_k|^2) / tau, nowhere]`` without its last column."""
        a = self.anchors_.astype(np.float64)
        return a, np.einsum("ij,ij->i", a, a), -1.0 / self.tau_, -self.d0_ / self.tau_

    def _fit_anchors(self, F: np.ndarray) -> None:
        from sklearn.cluster import KMeans

        rng = np.random.default_rng(self.seed)
        n = len(F)
        sample = np.sort(rng.choice(n, min(n, _KMEANS_SAMPLE), replace=False))
        k = self.n_anchors or int(np.clip(round(n / 15), 16, 256))
        k = max(1, min(k, len(sample)))
        km = KMeans(n_clusters=k, n_init=1, max_iter=30, random_state=self.seed)
        self.anchors_ = km.fit(F[sample, :-1].astype(np.float64)).cluster_centers_.astype(np.float32)
        a = self.anchors_.astype(np.float64)
        d2 = F[sample, -1:].astype(np.float64) + np.einsum("ij,ij->i", a, a)[None, :] - 2.0 * matmul64(F[sample, :-1], a.T)
        nearest = np.maximum(d2.min(axis=1), 0.0)
        self.tau_ = float(self.bandwidth * max(np.median(nearest), 1e-12))
        self.d0_ = float(np.quantile(nearest, 0.99))

    def _logit_form(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(``M`` (h + 1, K), ``|a_k|^2 / tau`` (K,), the "nowhere" logit) float64, with ``F @ M - |a|^2 / tau``
        the membership logits before the relu: ``(2 z . a_k - |x - mean|^2 - |a_k|^2) / tau``.

        The constants are folded into the product once per set of anchors (kept on the heads, which
        ``with_head`` shares with the heads it makes: personalizing changes a user's row, not the anchors).
        """
        key = (self.tau_, self.d0_)
        cached = self.__dict__.get("_logit_cache")  # (anchors it was made from, key, form)
        if cached is None or cached[0] is not self.anchors_ or cached[1] != key:
            a, a_sq, minus_inv_tau, null = self.membership_form()
            M = np.vstack([-2.0 * minus_inv_tau * a.T, np.full((1, len(a)), minus_inv_tau)])
            cached = (self.anchors_, key, (M, -minus_inv_tau * a_sq, null))
            self.__dict__["_logit_cache"] = cached
        return cached[2]

    def _weighted_memberships(self, F: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``memberships(F) @ w`` as float32 (``w`` (K,) or (K, m)), the way scoring needs it.

        The logits come from one float64 product of ``F`` with the folded anchors (the squared distance
        to the PCA mean is a column of ``F``; a row's value never depends on its batch), the softmax's
        exponentials are taken in float32 (a third of the time of float64 ones), and the row's total and
        its product with ``w`` come from one float64 product after them (the division last). Blocks of
        :data:`_SCORE_CHUNK` rows keep the (rows, K) temporaries in cache. The result differs from
        ``memberships(F) @ w`` by float32 rounding (~1e-7 relative); every step is row by row.
        """
        F = np.asarray(F)
        M, a_sq_over_tau, null = self._logit_form()
        w = np.asarray(w, dtype=np.float64)
        # the row's total rides along as a last column of ones
        W = np.column_stack([w.reshape(len(M[0]), -1), np.ones(len(M[0]))])
        out = np.empty((len(F), W.shape[1] - 1), dtype=np.float32)
        e = np.empty((min(len(F), _SCORE_CHUNK), len(M[0])), dtype=np.float32)
        for start in range(0, len(F), _SCORE_CHUNK):
            logits = matmul64(F[start : start + _SCORE_CHUNK], M)
            logits -= a_sq_over_tau
            np.minimum(logits, 0.0, out=logits)  # the relu on the distance
            top = np.maximum(logits.max(axis=1), null)
            rows = e[: len(logits)]
            np.subtract(logits, top[:, None], out=rows, casting="same_kind")
            np.exp(rows, out=rows)
            sums = matmul64(rows, W)
            sums[:, -1] += np.exp(null - top)
            out[start : start + _SCORE_CHUNK] = sums[:, :-1] / sums[:, -1:]
        return out[:, 0] if w.ndim == 1 else out
