"""Per-user heads: each user's deviation from the common score, borrowing from users of similar taste.

People in a community like the same niches, so a user seen through a few
favourites is best described by the users whose favourites resemble theirs.
A head lives on a set of K *anchors* (k-means centroids of the training
photos in the PCA subspace; distances to them are full-embedding distances,
the part of a photo outside the subspace included):

* a photo ``x`` is softly assigned to the anchors,
  ``r_k(x) = exp(-d2_k / tau) / (exp(-d0 / tau) + sum_j exp(-d2_j / tau))``
  with ``d2_k = |x - c_k|^2``. The extra "nowhere" term ``d0`` (the 99th
  percentile of the training photos' distance to their nearest anchor) takes
  the mass of a photo that is far from every anchor, so such a photo belongs
  to no anchor and gets no deviation at all;
* user u's soft counts over the anchors ``n_u = sum over favourites of r(x)``;
  the background ``b`` is the share of all favourites on each anchor;
* **shared taste**: the users with 20 or more favourites are *templates*
  (their smoothed anchor profiles ``P_v``). A user's prior profile is the
  templates averaged with posterior weights ``w_v ∝ exp(eta * n_u . log P_v)``
  (tempered likelihood; a user is never their own template), so two
  favourites in one niche already pull in the other niches of the users who
  love it;
* the user's profile is their counts shrunk towards that prior with ``m``
  pseudo-favourites, ``p_u = (n_u + m q_u) / (n_u.sum() + m)``, and the head is
  the log ratio to the background, centred on it and clipped to ``±clip``::

      t_u        = clip(log(p_u / b) - b . log(p_u / b), -clip, clip)
      deviation  = s * r(x) . t_u
      user_score = ci_score + deviation

Because ``sum_k r_k(x) <= 1``, ``|deviation| <= s * clip`` whatever the input,
and ``s * clip`` is kept within the spread of the training photos' common
scores: a deviation stays on the CI scale, and a photo unlike every training
photo keeps its common score.

``eta`` (0 = no sharing: the prior is the background), ``m`` and ``s`` are
chosen on a seeded split of every user's training favourites, by the mean
per-user AUC of ranking held-out favourites above other photos, separately
for each activity regime (5-19 and 20+ favourites; users with 1-4 keep the
common score: casual users with a handful of favourites mostly follow the
common taste, and too few of their favourites are held out to tell a helpful
setting from chance) and for each few-shot
size ``personalize`` is given (1, 2, 4, 8 liked photos, simulated by giving
users with 10+ favourites only that many). A regime keeps its best setting
only when the gain beats ``significance`` standard errors (1: at 2 the 5-19
regime fell back to 0 in two family worlds where, at 1, it gains +0.0003 and
+0.002 on test photos, and no family world's bucket was lowered at 1);
otherwise its deviation is 0, so heads lower no activity bucket. The bundle stores the anchors, the background
and the templates, so :meth:`UserHeads.fit_one` (personalize) needs no
training data.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from interest.learn.base import Estimator
from interest.core.numeric import matmul64
from interest.core.vocabulary import ACTIVITY_BUCKETS, bucket_name

# Regimes with a setting (eta, m, s) of their own: light users are mostly casual, heavy ones have a taste.
# Training users with 1-4 favourites keep the common score: a held-out favourite or two of a score of such
# users cannot tell a helpful setting from chance (on the family, every setting passed on validation lowered
# that bucket on test photos in some world). ``personalize`` with 1-4 photos uses the few-shot settings.
REGIMES = ((5, 20), (20, None))
# Few-shot sizes ``personalize`` is calibrated for: k liked photos use the setting of the largest size <= k.
SHOTS = (1, 2, 4, 8, 16)
# candidate scales s, relative to (spread of the common score) / (typical spread of a head)
_RELATIVE_SCALES = tuple(float(v) for v in np.logspace(-1.5, 1.0, 11))
_TOLERANCE = 0.0  # a head setting may lower no bucket's mean AUC on the held-out favourites
_CHUNK = 16_384  # photos per block when computing anchor memberships
_SCORE_CHUNK = 1_024  # photos per block when scoring a head: its (rows, K) temporaries stay in cache
_MAX_TRIPLES = 4_000_000  # (user, favourite, photo) triples a joint fit samples at most (a third for the last part)
_KMEANS_SAMPLE = 20_000  # photos the anchors are clustered from (in the PCA subspace: a few seconds)


def _regime(counts: np.ndarray) -> np.ndarray:
    """Index into REGIMES of each favourite count (-1 below the first)."""
    out = np.full(len(counts), -1)
    for i, (lo, hi) in enumerate(REGIMES):
        out[(counts >= lo) & ((counts < hi) if hi else True)] = i
    return out


def _pick(gains: dict, users_sel: np.ndarray, off, significance: float) -> tuple:
    """(setting, mean gain, standard error): of ``gains`` ({setting: gain per user}), the one with the largest mean
    gain over ``users_sel`` that beats ``significance`` standard errors; ``off`` (gain 0) when none does."""
    best, best_gain, best_se = off, 0.0, 0.0
    for setting, gain in gains.items():
        g = gain[users_sel]
        mean, se = float(g.mean()), float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else np.inf
        if mean > significance * se and mean > best_gain:
            best, best_gain, best_se = setting, mean, se
    return best, best_gain, best_se


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class UserHeads(Estimator):
    """Anchor-profile heads for many users, with shared taste through template users.

    Parameters: ``n_anchors`` (None: about one per 15 training photos, 16 to
    256), ``bandwidth`` (tau relative to the median squared distance of a
    training photo to its nearest anchor), ``pseudo_counts`` (candidate m),
    ``sharing`` (candidate eta; 0 means no borrowing), ``clip`` (bound of
    ``|t_u|``), ``template_min_favourites``, ``max_templates`` (the most
    active users first), ``validation_fraction`` of each user's favourites
    held out to choose the settings, ``significance`` (standard errors a
    setting's mean gain must beat on them), ``negatives``,
    ``max_validation_per_user``, ``seed``.

    Learned: ``anchors_`` (K, h) in PCA coordinates, ``tau_``, ``d0_``, ``background_`` (K,),
    ``templates_`` (V, K), ``users_`` (U,) unicode, ``n_favourites_`` (U,),
    ``weights_`` (U, K) float32 (``s * t_u``: a deviation is
    ``r(x) @ weights_[u]``), ``regime_settings_`` (one (eta, m, s) row per
    entry of :data:`REGIMES`), ``shot_settings_`` (one per :data:`SHOTS`)
    and ``validation_``.
    """

    STATE = ("users", "n_favourites", "weights", "anchors", "tau", "d0", "background", "templates",
             "regime_settings", "shot_settings")
    # what the joint method keeps beside STATE (a templates bundle has none of these)
    JOINT_STATE = ("factors", "item_weights", "fold_in_negatives", "fold_in_common", "common_centre", "common_unit",
                   "common_weight_prior", "theta_mean", "theta_precision")

    def __init__(
        self,
        method: str = "templates",
        n_anchors: int | None = None,
        bandwidth: float = 0.25,
        pseudo_counts: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
        sharing: tuple[float, ...] = (0.0, 0.3, 1.0),
        clip: float = 3.0,
        max_deviation: float = 1.0,
        significance: float = 1.0,
        template_min_favourites: int = 20,
        max_templates: int = 3000,
        validation_fraction: float = 0.2,
        negatives: int = 300,
        max_validation_per_user: int = 20,
        factors: int = 16,
        epochs: int = 30,
        learning_rate: float = 0.03,
        factor_ridge: float = 1.0,
        own_ridge: float = 10.0,
        fold_in_own_ridge: float = 0.3,
        common_ridge: float = 3.0,
        seed: int = 0,
    ):
        self.method = method
        self.n_anchors = n_anchors
        self.bandwidth = bandwidth
        self.pseudo_counts = pseudo_counts
        self.sharing = sharing
        self.clip = clip
        self.max_deviation = max_deviation
        self.significance = significance
        self.template_min_favourites = template_min_favourites
        self.max_templates = max_templates
        self.validation_fraction = validation_fraction
        self.negatives = negatives
        self.max_validation_per_user = max_validation_per_user
        self.factors = factors
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.factor_ridge = factor_ridge
        self.own_ridge = own_ridge
        self.fold_in_own_ridge = fold_in_own_ridge
        self.common_ridge = common_ridge
        self.seed = seed

    # ------------------------------------------------------------ anchors

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

    # ------------------------------------------------------------ fitting

    def fit(self, F: np.ndarray, user_ids: np.ndarray, photo_rows: np.ndarray, base: np.ndarray) -> "UserHeads":
        """Fit heads for every user with a favourite.

        ``F`` (n, h + 1): head inputs of the training photos (see
        :meth:`memberships`); ``user_ids`` and ``photo_rows`` (one entry per
        favourite; rows index ``F``); ``base`` (n,): the common model's scores of the same photos,
        against which the heads' gain is measured when choosing eta, m and s.
        """
        F = np.asarray(F, dtype=np.float64)
        users, u = np.unique(np.asarray(user_ids).astype(str), return_inverse=True)
        pairs = np.unique(np.stack([u, np.asarray(photo_rows, dtype=np.int64)], axis=1), axis=0)
        u, p = pairs[:, 0], pairs[:, 1]
        n_users, n = len(users), len(F)
        counts = np.bincount(u, minlength=n_users).astype(np.float64)
        base = np.asarray(base, dtype=np.float64)

        with threadpool_limits(limits=1, user_api="blas"):  # many small products: BLAS threads only contend
            self._fit_anchors(F)
        R = np.vstack([self.memberships(F[s : s + _CHUNK]).astype(np.float32) for s in range(0, n, _CHUNK)])
        # a user's share of the head: at most s * clip, kept within the common score's own spread (1st to 99th
        # percentile). The whole spread, not half of it: at half, the chosen scale sat at that cap in every
        # family world, and the whole spread raised users with 20+ favourites in each of them (communities-s0
        # +0.161 -> +0.191 AUC, flat-s1 +0.145 -> +0.154); 1.5 spreads gained nothing more
        self.max_deviation_ = self.max_deviation * float(np.quantile(base, 0.99) - np.quantile(base, 0.01))

        if self.method == "joint":
            with threadpool_limits(limits=1, user_api="blas"):
                self._fit_joint(R, u, p, counts, base)
            self.users_ = users.astype(str)
            self.n_favourites_ = counts.astype(np.int64)
            self._index = {str(x): i for i, x in enumerate(self.users_)}
            return self
        if self.method != "templates":
            raise ValueError(f"UserHeads method {self.method!r}: give 'joint' or 'templates'")
        with threadpool_limits(limits=1, user_api="blas"):
            self._choose(R, u, p, counts, base)
        N = self._counts(R, u, p, np.ones(len(u), dtype=bool), n_users)
        self.background_, self.templates_ = self._background_and_templates(N, counts)
        self.weights_ = np.zeros((n_users, len(self.anchors_)), dtype=np.float32)
        regime_of = _regime(counts)
        priors = self._priors(N, self.regime_settings_[:, 0], exclude_self=True)
        for i, (eta, m, scale) in enumerate(self.regime_settings_):
            rows = np.flatnonzero(regime_of == i)
            if scale > 0 and len(rows):
                self.weights_[rows] = scale * self._tables(N[rows], priors[float(eta)][rows], m)
        self.users_ = users.astype(str)
        self.n_favourites_ = counts.astype(np.int64)
        self._index = {str(x): i for i, x in enumerate(self.users_)}
        return self

    @staticmethod
    def _counts(R, u, p, keep, n_users) -> np.ndarray:
        """(U, K) soft anchor counts from the favourites marked in ``keep``."""
        A = sp.csr_matrix((np.ones(int(keep.sum())), (u[keep], p[keep])), shape=(n_users, len(R)))
        return np.asarray(A @ R)

    def _background_and_templates(self, N: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The background share per anchor and the template users' smoothed profiles."""
        total = N.sum(axis=0)
        b = (total + 1e-3) / (total.sum() + 1e-3 * len(total))
        rows = np.flatnonzero(counts >= self.template_min_favourites)
        rows = rows[np.argsort(-counts[rows], kind="stable")][: self.max_templates]
        self._template_rows = np.sort(rows)
        Nt = N[self._template_rows]
        # one background pseudo-favourite: no template rules an anchor out completely
        P = (Nt + b) / (Nt.sum(axis=1, keepdims=True) + 1.0)
        return b, P

    def _priors(self, N: np.ndarray, etas, exclude_self: bool) -> dict[float, np.ndarray]:
        """{eta: (U, K) prior profiles q_u}: templates averaged by tempered likelihood (the background for eta 0)."""
        out = {}
        etas = sorted({float(e) for e in etas})
        if 0.0 in etas or not len(self.templates_):
            out.update({e: np.broadcast_to(self.background_, N.shape) for e in etas if e == 0 or not len(self.templates_)})
        live = [e for e in etas if e not in out]
        if not live:
            return out
        logP = np.log(self.templates_)
        for e in live:
            out[e] = np.empty_like(N)
        # training users' own rows, only to exclude them; a loaded model (personalize) has no training users
        rows = self._template_rows if exclude_self else None
        for s in range(0, len(N), 1024):  # bounded (1024, V) blocks; the likelihood is shared by every eta
            ll = N[s : s + 1024] @ logP.T
            if exclude_self:  # a user is never their own template
                users = np.arange(s, s + len(ll))
                slot = np.minimum(np.searchsorted(rows, users), max(len(rows) - 1, 0))
                own = rows[slot] == users
                ll[np.flatnonzero(own), slot[own]] = -np.inf
            alone = ~np.isfinite(ll).any(axis=1)  # the only template was the user: the background is the prior
            ll[alone] = 0.0
            for e in live:
                q = _softmax_rows(e * ll) @ self.templates_
                q[alone] = self.background_
                out[e][s : s + 1024] = q
        return out

    def _tables(self, N: np.ndarray, q: np.ndarray, m: float, contrast: np.ndarray | None = None) -> np.ndarray:
        """(U, K) clipped, centred log ratios t_u for soft counts N and priors q (see the module docstring)."""
        b = self.background_
        profile = (N + m * q) / (N.sum(axis=1, keepdims=True) + m)
        t = np.log(profile / (b if contrast is None else contrast))
        t -= (t @ b)[:, None]
        return np.clip(t, -self.clip, self.clip)

    def _split(self, u, counts, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rank of each favourite in a random order within its user, held-out count per user, held-out mask):
        the first ``n_val`` favourites of each user's random order are held out to choose the settings."""
        order = np.lexsort((rng.random(len(u)), u))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        pos = np.empty(len(u), dtype=np.int64)
        pos[order] = np.arange(len(u)) - starts[u[order]]
        n_val = np.where(
            counts >= 2,
            np.clip(np.round(counts * self.validation_fraction), 1, self.max_validation_per_user),
            0,
        )
        return pos, n_val, pos < n_val[u]

    def _choose(self, R, u, p, counts, base) -> None:
        """Pick eta, m and s for each activity regime and each few-shot size on held-out favourites.

        Training users: each user's held-out favourites are ranked against
        ``negatives`` background photos by common + head, the head fitted on
        the rest. Few-shot: users with 10+ favourites are given only ``k`` of
        their other favourites, as ``personalize`` would be. A regime keeps the
        setting with the largest mean gain only when that gain exceeds one
        standard error; otherwise its heads are 0 (the common score), so no
        regime is lowered by chance on a few users.
        """
        rng = np.random.default_rng(self.seed)
        n_users = len(counts)
        pos, n_val, is_val = self._split(u, counts, rng)
        off = (float(self.sharing[0]), float(self.pseudo_counts[0]), 0.0)
        self.regime_settings_ = np.array([off] * len(REGIMES))
        self.shot_settings_ = np.array([off] * len(SHOTS))
        self.validation_ = {"n_users": 0}
        if not is_val.any():
            return
        fit_counts = counts - np.bincount(u[is_val], minlength=n_users)
        N = self._counts(R, u, p, ~is_val, n_users)
        self.background_, self.templates_ = self._background_and_templates(N, fit_counts)

        neg = np.sort(rng.choice(len(R), min(self.negatives, len(R)), replace=False))
        # negatives a user favourited are not negatives for that user
        neg_slot = np.full(len(R), -1)
        neg_slot[neg] = np.arange(len(neg))
        valid_all = np.ones((len(neg), n_users), dtype=bool)
        hit = neg_slot[p] >= 0
        valid_all[neg_slot[p[hit]], u[hit]] = False
        regime_of = _regime(counts)

        # few-shot users: 10+ fitting favourites, at most 300 of them, each given the first k of a random order
        shot_users = np.flatnonzero((fit_counts >= 10) & (n_val > 0))
        if len(shot_users) > 300:
            shot_users = np.sort(rng.choice(shot_users, 300, replace=False))
        fit_rank = np.where(is_val, -1, pos - n_val[u])  # 0, 1, 2, ... over each user's fitting favourites
        shot_rank = np.full(len(u), -1)
        is_shot_user = np.isin(u, shot_users)
        shuffled = rng.random(len(u))
        for user in shot_users:  # a random order of the user's fitting favourites
            mine = np.flatnonzero((u == user) & ~is_val)
            shot_rank[mine[np.argsort(shuffled[mine])]] = np.arange(len(mine))

        def evaluate(users_sel, counts_for):
            """Per-setting mean gains: {(eta, m, s): gain per user} for users_sel, heads from counts_for."""
            sel_pair = is_val & np.isin(u, users_sel)
            vu, vp = u[sel_pair], p[sel_pair]
            valid = valid_all[:, vu]
            n_valid_neg = valid.sum(axis=0)
            base_pos, base_neg = base[vp].astype(np.float32), base[neg].astype(np.float32)[:, None]

            def user_auc(pos_s, neg_s):
                # ties count half: (below + at-or-below) / 2, in boolean passes (cheaper than float arithmetic)
                wins = ((neg_s < pos_s) & valid).sum(axis=0) + ((neg_s <= pos_s) & valid).sum(axis=0)
                pair_auc = 0.5 * wins / np.maximum(n_valid_neg, 1)
                return np.bincount(vu, pair_auc, minlength=n_users) / np.maximum(np.bincount(vu, minlength=n_users), 1)

            auc0 = user_auc(base_pos, base_neg)
            spread = float(np.std(base))
            out = {}
            priors = self._priors(counts_for, self.sharing, exclude_self=True)
            for eta in self.sharing:
                for m in self.pseudo_counts:
                    T = self._tables(counts_for, priors[float(eta)], m)
                    raw_pos = np.einsum("ij,ij->i", R[vp], T[vu]).astype(np.float32)
                    raw_neg = (R[neg] @ T.T)[:, vu].astype(np.float32)
                    unit = spread / max(float(np.median(np.std(raw_neg, axis=0))), 1e-12)
                    for r in _RELATIVE_SCALES:
                        scale = min(r * unit, self.max_deviation_ / self.clip)
                        gain = user_auc(base_pos + np.float32(scale) * raw_pos, base_neg + np.float32(scale) * raw_neg)
                        out[(float(eta), float(m), float(scale))] = gain - auc0
            return auc0, out

        def pick(gains: dict, users_sel) -> tuple[tuple, float, float]:
            return _pick(gains, users_sel, off, self.significance)

        scored = np.flatnonzero(np.bincount(u[is_val], minlength=n_users) > 0)
        auc0, gains = evaluate(scored, N)
        buckets, regimes = {}, {}
        for i, (lo, hi) in enumerate(REGIMES):
            sel = scored[regime_of[scored] == i]
            if len(sel):
                setting, g, se = pick(gains, sel)
                self.regime_settings_[i] = setting
                regimes[bucket_name(lo, hi)] = {"n_users": int(len(sel)), "sharing": setting[0], "pseudo_count": setting[1],
                                                "scale": setting[2], "mean_auc_gain": g, "standard_error": se}
        chosen = np.zeros(n_users)
        for i in range(len(REGIMES)):
            setting = tuple(self.regime_settings_[i])
            if setting[2] > 0:
                chosen[regime_of == i] = gains[setting][regime_of == i]
        for b, (lo, hi) in enumerate(ACTIVITY_BUCKETS):
            sel = scored[(counts[scored] >= lo) & ((counts[scored] < hi) if hi else True)]
            if len(sel):
                buckets[bucket_name(lo, hi)] = {
                    "n_users": int(len(sel)),
                    "auc_common": float(auc0[sel].mean()),
                    "auc_with_head": float((auc0 + chosen)[sel].mean()),
                }
        shots = {}
        if len(shot_users):
            for j, k in enumerate(SHOTS):
                keep = is_shot_user & (shot_rank >= 0) & (shot_rank < k)
                _, shot_gains = evaluate(shot_users, self._counts(R, u, p, keep, n_users))
                setting, g, se = pick(shot_gains, shot_users)
                self.shot_settings_[j] = setting
                shots[str(k)] = {"n_users": int(len(shot_users)), "sharing": setting[0], "pseudo_count": setting[1],
                                 "scale": setting[2], "mean_auc_gain": g, "standard_error": se}
        self.validation_ = {
            "n_users": int(len(scored)),
            "n_anchors": int(len(self.anchors_)),
            "n_templates": int(len(self.templates_)),
            "max_deviation": float(self.regime_settings_[:, 2].max() * self.clip),
            "mean_auc_gain": float(chosen[scored].mean()),
            "regimes": regimes,
            "few_shot": shots,
            "buckets": buckets,
        }


    # ------------------------------------------------------------ joint heads (pairwise, every user at once)

    def _train_joint(self, R, u, p, c, n_users, rng, start=None, epochs=None) -> dict:
        """Pairwise training of every user at once on (user, favourite, random photo) triples.

        For a favourite ``i`` and a random training photo ``j`` of user ``u``,
        ``x = a_u (c_i - c_j) + (r_i - r_j) . (E theta_u + own_u + b)`` and the
        loss is ``log(1 + exp(-x))`` (BPR), with ridge penalties on ``theta``
        (``factor_ridge``), ``E`` (``factor_ridge``), ``own`` (``own_ridge``) and
        ``log a_u`` (``common_ridge``), each worth that many favourites. ``c`` is the
        standardised common score, ``E`` (K, factors) the taste shared by all
        users, ``own_u`` what a user has beyond it, ``b`` what every user adds to
        the common score, ``a_u = exp(rho_u)`` the user's own weight on the common
        score. Adam on minibatches; ``start`` continues from earlier parameters.
        """
        K, k, n_pos = R.shape[1], self.factors, len(u)
        if start is None:
            start = {"E": rng.normal(0.0, 0.1, (K, k)), "b": np.zeros(K), "theta": np.zeros((n_users, k)),
                     "own": np.zeros((n_users, K)), "rho": np.zeros(n_users)}
        params = {name: value.copy() for name, value in start.items()}
        ridge = {"E": self.factor_ridge, "b": self.factor_ridge, "theta": self.factor_ridge, "own": self.own_ridge,
                 "rho": self.common_ridge}
        moments = {name: (np.zeros_like(v), np.zeros_like(v)) for name, v in params.items()}
        batch = max(1024, n_pos // 200)  # at most ~200 steps an epoch, whatever the collection's size
        epochs = self.epochs if epochs is None else epochs
        # a large collection needs fewer passes: at most _MAX_TRIPLES triples in all (paper scale: a few epochs)
        epochs = max(1, min(epochs, int(np.ceil(_MAX_TRIPLES * epochs / self.epochs / max(n_pos, 1)))))
        step = 0
        for _ in range(epochs):
            order = rng.permutation(n_pos)
            for s0 in range(0, n_pos, batch):
                idx = order[s0 : s0 + batch]
                bu, bp, bn = u[idx], p[idx], rng.integers(0, len(R), len(idx))
                E, b, theta, own, rho = (params[n] for n in ("E", "b", "theta", "own", "rho"))
                d = R[bp].astype(np.float64) - R[bn]
                dc = c[bp] - c[bn]
                a = np.exp(rho[bu])
                x = a * dc + np.einsum("ij,ij->i", d, theta[bu] @ E.T + own[bu] + b)
                g = -0.5 * (1.0 - np.tanh(0.5 * x)) / len(idx)  # d(mean loss)/dx = -sigmoid(-x) / B
                gd = g[:, None] * d
                to_users = sp.csr_matrix((np.ones(len(idx)), (bu, np.arange(len(idx)))), shape=(n_users, len(idx)))
                grads = {
                    "E": gd.T @ theta[bu],
                    "b": gd.sum(axis=0),
                    "theta": np.asarray(to_users @ (gd @ E)),
                    "own": np.asarray(to_users @ gd),
                    "rho": np.bincount(bu, g * a * dc, minlength=n_users),
                }
                step += 1
                for name, grad in grads.items():
                    grad = grad + 2.0 * ridge[name] * params[name] / n_pos  # the ridge, spread over the favourites
                    m, v = moments[name]
                    m *= 0.9
                    m += 0.1 * grad
                    v *= 0.999
                    v += 0.001 * grad * grad
                    params[name] -= self.learning_rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        return params

    def _joint_weights(self, params: dict, rows=None) -> np.ndarray:
        """(U, K) deviation weights on the CI scale: ``unit * (E theta_u + own_u + b) / a_u``.

        Dividing by the user's weight on the common score keeps their ranking
        (``a_u c + r . w_u`` and ``c + r . w_u / a_u`` order photos alike) and puts
        the head on the common score's own scale, where a bound applies.
        """
        sel = slice(None) if rows is None else rows
        w = params["theta"][sel] @ params["E"].T + params["own"][sel] + params["b"]
        return self.common_unit_ * w / np.exp(params["rho"][sel])[:, None]

    def _fold_in(self, r_pos, c_pos, r_neg=None, c_neg=None) -> tuple[np.ndarray, np.ndarray]:
        """A new user's (theta (k,), own part (K,)) from liked photos' memberships ``r_pos`` and standardised
        common scores ``c_pos`` (and disliked ones), the shared taste held fixed: a few Newton steps on the
        pairwise loss against the stored background photos, theta's prior the training users' spread of it."""
        E, b = self.factors_.astype(np.float64), self.item_weights_.astype(np.float64)
        Rb, cb = self.fold_in_negatives_.astype(np.float64), self.fold_in_common_.astype(np.float64)
        a = float(self.common_weight_prior_)
        Pb, ob = Rb @ E, a * cb + Rb @ b
        P, o = r_pos @ E, a * c_pos + r_pos @ b
        # liked photo above each background photo; each liked photo weighs one favourite
        D = [(P[:, None, :] - Pb[None]).reshape(-1, E.shape[1])]
        off = [(o[:, None] - ob[None]).ravel()]
        wt = [np.full(len(D[0]), 1.0 / len(Rb))]
        if r_neg is not None and len(r_neg):  # each background photo above each disliked photo
            Pn, on = r_neg @ E, a * c_neg + r_neg @ b
            D.append((Pb[None] - Pn[:, None, :]).reshape(-1, E.shape[1]))
            off.append((ob[None] - on[:, None]).ravel())
            wt.append(np.full(len(D[-1]), 1.0 / len(Rb)))
        D, off, wt = np.concatenate(D), np.concatenate(off), np.concatenate(wt)
        # the prior is the training users' own spread of theta: directions along which users differ much
        # (communities) cost little, the rest is held near the typical user
        mean, precision = self.theta_mean_.astype(np.float64), self.theta_precision_.astype(np.float64)
        theta = mean.copy()
        for _ in range(8):
            sig = 0.5 * (1.0 - np.tanh(0.5 * (off + D @ theta)))  # sigmoid(-x)
            grad = -(wt * sig) @ D + precision @ (theta - mean)
            hess = (D * (wt * sig * (1.0 - sig))[:, None]).T @ D + precision
            theta -= np.linalg.solve(hess, grad)
        # the user's own part beyond the shared taste: one step from 0, 2 ridge * own = sum of sigmoid(-x) (r_i - r_j)
        # over the pairs (cheap); its ridge is looser than training's (on the family, 0.3 against 10: a new user's
        # few photos say more about their own niche than the shared factors can hold)
        sig = 0.5 * (1.0 - np.tanh(0.5 * (off + D @ theta)))
        r_diff = [(r_pos[:, None, :] - Rb[None]).reshape(-1, Rb.shape[1])]
        if r_neg is not None and len(r_neg):
            r_diff.append((Rb[None] - r_neg[:, None, :]).reshape(-1, Rb.shape[1]))
        own = ((wt * sig) @ np.concatenate(r_diff)) / (2.0 * self.fold_in_own_ridge)
        return theta, own

    def _fold_in_weights(self, fitted: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """(K,) weights on the CI scale of a folded-in user ((theta, own) of :meth:`_fold_in`; the population's
        weight on the common score)."""
        theta, own = fitted
        w = self.factors_.astype(np.float64) @ theta + own + self.item_weights_
        return self.common_unit_ * w / float(self.common_weight_prior_)

    def _fit_joint(self, R, u, p, counts, base) -> None:
        """Fit the joint heads: a split fit chooses each regime's and each few-shot size's scale on held-out
        favourites (kept only when the gain beats ``significance`` standard errors), then training goes on
        with every favourite and the heads are stored, clipped to the bound."""
        rng = np.random.default_rng(self.seed)
        n_users, n = len(counts), len(R)
        self.common_centre_ = float(np.median(base))
        self.common_unit_ = float(max(np.std(base), 1e-12))
        c = (base - self.common_centre_) / self.common_unit_
        background = rng.choice(n, min(256, n), replace=False)
        self.fold_in_negatives_ = R[np.sort(background)].astype(np.float32)
        self.fold_in_common_ = c[np.sort(background)].astype(np.float32)
        self.deviation_bound_ = float(self.max_deviation_)
        self.background_ = (R.sum(axis=0) + 1e-3) / (R.sum() + 1e-3 * R.shape[1])
        self.templates_ = np.zeros((0, R.shape[1]))
        self.regime_settings_ = np.zeros((len(REGIMES), 3))
        self.shot_settings_ = np.zeros((len(SHOTS), 3))

        pos, n_val, is_val = self._split(u, counts, rng)
        fit_counts = counts - np.bincount(u[is_val], minlength=n_users)
        split = self._train_joint(R, u[~is_val], p[~is_val], c, n_users, rng)
        self._set_shared(split, fit_counts)
        W = self._joint_weights(split)
        neg = np.sort(rng.choice(n, min(self.negatives, n), replace=False))
        valid_all = np.ones((len(neg), n_users), dtype=bool)
        neg_slot = np.full(n, -1)
        neg_slot[neg] = np.arange(len(neg))
        hit = neg_slot[p] >= 0
        valid_all[neg_slot[p[hit]], u[hit]] = False
        regime_of = _regime(counts)
        scales = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)

        def gains_for(users_sel, weights_of_user):
            """{scale: gain per user (n_users,)} of ranking held-out favourites of ``users_sel`` against ``neg``."""
            sel_pair = is_val & np.isin(u, users_sel)
            vu, vp = u[sel_pair], p[sel_pair]
            valid = valid_all[:, vu]
            n_valid = np.maximum(valid.sum(axis=0), 1)
            per_user = np.maximum(np.bincount(vu, minlength=n_users), 1)
            raw_pos = np.einsum("ij,ij->i", R[vp].astype(np.float64), weights_of_user[vu])
            raw_neg = (R[neg].astype(np.float64) @ weights_of_user.T)[:, vu]

            def auc(pos_s, neg_s):
                wins = ((neg_s < pos_s) & valid).sum(axis=0) + ((neg_s <= pos_s) & valid).sum(axis=0)
                return np.bincount(vu, 0.5 * wins / n_valid, minlength=n_users) / per_user

            auc0 = auc(base[vp], base[neg][:, None])
            return auc0, {sc: auc(base[vp] + sc * raw_pos, base[neg][:, None] + sc * raw_neg) - auc0 for sc in scales}

        def pick(gains, users_sel):
            return _pick(gains, users_sel, 0.0, self.significance)

        scored = np.flatnonzero(np.bincount(u[is_val], minlength=n_users) > 0)
        auc0, gains = gains_for(scored, np.clip(W, -self.deviation_bound_, self.deviation_bound_))
        regimes, chosen = {}, np.zeros(n_users)
        for i, (lo, hi) in enumerate(REGIMES):
            sel = scored[regime_of[scored] == i]
            if len(sel):
                sc, g, se = pick(gains, sel)
                self.regime_settings_[i] = (1.0, self.factor_ridge, sc)
                if sc > 0:
                    chosen[regime_of == i] = gains[sc][regime_of == i]
                regimes[bucket_name(lo, hi)] = {"n_users": int(len(sel)), "scale": sc, "mean_auc_gain": g,
                                                "standard_error": se}
        buckets = {}
        for lo, hi in ACTIVITY_BUCKETS:
            sel = scored[(counts[scored] >= lo) & ((counts[scored] < hi) if hi else True)]
            if len(sel):
                buckets[bucket_name(lo, hi)] = {"n_users": int(len(sel)), "auc_common": float(auc0[sel].mean()),
                                                "auc_with_head": float((auc0 + chosen)[sel].mean())}

        # few-shot: users with 10+ fitting favourites folded in from k of them, as personalize would
        shots = {}
        shot_users = np.flatnonzero((fit_counts >= 10) & (n_val > 0))
        if len(shot_users) > 300:
            shot_users = np.sort(rng.choice(shot_users, 300, replace=False))
        for j, k in enumerate(SHOTS):
            Wk = np.zeros_like(W)
            for user in shot_users:
                mine = p[(u == user) & ~is_val]
                given = np.sort(rng.permutation(mine)[:k])
                Wk[user] = self._fold_in_weights(self._fold_in(R[given].astype(np.float64), c[given]))
            if len(shot_users):
                _, shot_gains = gains_for(shot_users, np.clip(Wk, -self.deviation_bound_, self.deviation_bound_))
                sc, g, se = pick(shot_gains, shot_users)
                self.shot_settings_[j] = (1.0, self.factor_ridge, sc)
                shots[str(k)] = {"n_users": int(len(shot_users)), "scale": sc, "mean_auc_gain": g, "standard_error": se}

        # every favourite: training goes on from the split fit (a third of the epochs)
        full = self._train_joint(R, u, p, c, n_users, rng, start=split, epochs=max(1, self.epochs // 3))
        self._set_shared(full, counts)
        W = self._joint_weights(full)
        scale_of = np.array([self.regime_settings_[i, 2] if i >= 0 else 0.0 for i in regime_of])
        self.weights_ = np.clip(scale_of[:, None] * W, -self.deviation_bound_, self.deviation_bound_).astype(np.float32)
        self.validation_ = {
            "method": "joint",
            "n_users": int(len(scored)),
            "n_anchors": int(len(self.anchors_)),
            "n_templates": 0,
            "factors": int(self.factors),
            "max_deviation": float(self.deviation_bound_ if self.regime_settings_[:, 2].max() > 0 else 0.0),
            "mean_auc_gain": float(chosen[scored].mean()) if len(scored) else 0.0,
            "common_weight": {"median": float(self.common_weight_prior_),
                              "p10": float(np.quantile(np.exp(full["rho"][counts >= 20]), 0.1)) if (counts >= 20).any() else 1.0,
                              "p90": float(np.quantile(np.exp(full["rho"][counts >= 20]), 0.9)) if (counts >= 20).any() else 1.0},
            "regimes": regimes,
            "few_shot": shots,
            "buckets": buckets,
        }

    def _set_shared(self, params: dict, counts: np.ndarray) -> None:
        """Keep what a folded-in user needs of a joint fit: the shared taste, the shared item weights and the
        typical weight on the common score (median over users with 20+ favourites, else every user)."""
        self.factors_ = params["E"].astype(np.float32)
        self.item_weights_ = params["b"].astype(np.float64)
        heavy = counts >= REGIMES[-1][0]
        sel = heavy if heavy.sum() > self.factors else counts >= REGIMES[0][0]
        sel = sel if sel.sum() > self.factors else slice(None)
        self.common_weight_prior_ = float(np.median(np.exp(params["rho"][sel])))
        theta = params["theta"][sel]
        self.theta_mean_ = theta.mean(axis=0)
        cov = np.cov(theta, rowvar=False).reshape(self.factors, self.factors) if len(theta) > 1 else np.zeros((self.factors,) * 2)
        # never looser than the training's own ridge allows, never singular
        self.theta_precision_ = np.linalg.inv(cov + np.eye(self.factors) / (2.0 * self.factor_ridge))

    # ------------------------------------------------------------ using

    def has(self, user: str) -> bool:
        """Whether ``user`` has a head."""
        return str(user) in self._index

    def deviation(self, user: str, F: np.ndarray) -> np.ndarray:
        """Deviation of ``user`` (who must have a head) for head inputs ``F`` (n, h + 1): (n,) float32."""
        return self._weighted_memberships(F, self.weights_[self._index[str(user)]].astype(np.float64))

    def deviations(self, users: list[str], F: np.ndarray) -> np.ndarray:
        """Deviations of several users at once: (n, len(users)) float32."""
        rows = [self._index[str(x)] for x in users]
        return self._weighted_memberships(F, self.weights_[rows].T.astype(np.float64))

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

    def setting_for(self, n_liked: int) -> tuple[float, float, float]:
        """(eta, m, s) for a user who gives ``n_liked`` photos: the few-shot size at or below it, 20+ as training.

        Joint heads: (1, factor ridge, scale), the 1 saying that taste is always borrowed through the shared factors."""
        if n_liked >= REGIMES[-1][0]:
            return tuple(float(v) for v in self.regime_settings_[-1])
        shots = SHOTS[: len(self.shot_settings_)]  # bundles from before the 16-photo size keep four
        j = int(np.searchsorted(shots, n_liked, side="right")) - 1
        return tuple(float(v) for v in self.shot_settings_[max(j, 0)]) if n_liked >= 1 else (0.0, 1.0, 0.0)

    def deviation_bound(self) -> float:
        """The largest ``|deviation|`` any head of these can give, whatever the photo (on the CI scale)."""
        if self.method == "joint":
            return float(self.deviation_bound_)
        return float(max(row[2] for row in (*self.regime_settings_, *self.shot_settings_)) * self.clip)

    def fit_one(
        self,
        F_liked: np.ndarray,
        F_disliked: np.ndarray | None = None,
        *,
        common_liked: np.ndarray | None = None,
        common_disliked: np.ndarray | None = None,
    ) -> np.ndarray:
        """A head (K,) float32 from one user's liked (and disliked) photos' head inputs.

        Joint heads (``method="joint"``): the user's factor is fitted on the liked
        photos against the stored background photos (and the background above
        the disliked ones), the shared taste held fixed, then scaled as
        calibrated for that many liked photos. ``common_liked`` /
        ``common_disliked`` are those photos' ``ci_score`` (without them a photo
        counts as of median common appeal): what the common score already
        explains of a like is not taken for taste. Liked photos that all lie
        outside the anchors (unlike every training photo) give no head.

        Heads of the *templates* method (the default, and every bundle from
        before the joint heads):
        The liked photos borrow from the templates as a training user's
        favourites do, with the setting calibrated for that many liked photos
        (:meth:`setting_for`); liked photos that all lie outside the anchors
        (unlike every training photo) give no head.
        Disliked photos replace the background as the contrast, shrunk
        towards it by the same ``m``, so the anchors they sit on go down; when
        the liked photos are too few for a calibrated head, dislikes still
        apply at the weakest calibrated strength.
        """
        r_liked = self.memberships(F_liked)
        n = r_liked.sum(axis=0, keepdims=True)
        if self.method == "joint":
            return self._fit_one_joint(r_liked, F_disliked, common_liked, common_disliked)
        # liked photos that together hold less than one photo's worth of anchor membership (all unlike every
        # training photo) say nothing about the user's taste: no head from them
        eta, m, scale = self.setting_for(len(F_liked) if n.sum() >= 0.5 else 0)
        if scale == 0 and F_disliked is not None and len(F_disliked):
            # too few liked photos for a calibrated head, but dislikes still say something: the weakest
            # calibrated strength that is not 0
            on = [row for row in (*self.shot_settings_, *self.regime_settings_) if row[2] > 0]
            if on:
                eta, m, scale = (float(v) for v in min(on, key=lambda row: row[2]))
        contrast = None
        if F_disliked is not None and len(F_disliked):
            d = self.memberships(F_disliked).sum(axis=0)
            contrast = (d + m * self.background_) / (d.sum() + m)
        t = self._tables(n, self._priors(n, [eta], exclude_self=False)[eta], m, contrast)[0]
        return (scale * t).astype(np.float32)

    def _fit_one_joint(self, r_liked, F_disliked, common_liked, common_disliked) -> np.ndarray:
        def standardised(common, count):
            if common is None:
                return np.zeros(count)
            return (np.asarray(common, dtype=np.float64) - self.common_centre_) / self.common_unit_

        n_liked = len(r_liked) if r_liked.sum() >= 0.5 else 0  # liked photos unlike every training photo: no head
        scale = self.setting_for(n_liked)[2]
        r_disliked = None
        if F_disliked is not None and len(F_disliked):
            r_disliked = self.memberships(F_disliked)
            if scale == 0:  # too few liked photos for a calibrated head, but dislikes still say something
                on = [row[2] for row in (*self.shot_settings_, *self.regime_settings_) if row[2] > 0]
                scale = min(on) if on else 0.0
        if scale == 0 or (n_liked == 0 and r_disliked is None):
            return np.zeros(len(self.anchors_), dtype=np.float32)
        liked = slice(None) if n_liked else slice(0, 0)
        fitted = self._fold_in(
            r_liked[liked], standardised(common_liked, len(r_liked))[liked],
            r_disliked, None if r_disliked is None else standardised(common_disliked, len(r_disliked)),
        )
        w = scale * self._fold_in_weights(fitted)
        return np.clip(w, -self.deviation_bound_, self.deviation_bound_).astype(np.float32)

    def with_head(self, user: str, weights: np.ndarray, n_favourites: int) -> "UserHeads":
        """A new UserHeads with ``user``'s head added or replaced (this one is left untouched)."""
        new = object.__new__(UserHeads)
        new.__dict__.update(self.__dict__)
        user = str(user)
        if user in self._index:
            i = self._index[user]
            new.weights_ = self.weights_.copy()
            new.n_favourites_ = self.n_favourites_.copy()
        else:
            i = len(self.users_)
            new.users_ = np.append(self.users_, user).astype(str)
            new.weights_ = np.vstack([self.weights_, np.zeros((1, self.weights_.shape[1]), np.float32)])
            new.n_favourites_ = np.append(self.n_favourites_, 0).astype(np.int64)
            new._index = {**self._index, user: i}
        new.weights_[i] = weights
        new.n_favourites_[i] = n_favourites
        return new

    # ------------------------------------------------------------ storage

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(parameters, arrays): user ids as fixed-width unicode, the templates in float32 (half the bytes);
        ``clip`` is among the arrays too, where bundles from before the parameters were kept hold it."""
        params, arrays = super().to_state()
        if self.method == "joint":
            arrays.update({name: np.asarray(getattr(self, name + "_")) for name in self.JOINT_STATE})
            arrays["deviation_bound"] = np.float64(self.deviation_bound_)
        arrays["users"] = np.asarray(self.users_, dtype=str)
        arrays["templates"] = self.templates_.astype(np.float32)
        arrays["clip"] = np.float64(self.clip)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray], lightgbm: dict | None = None) -> "UserHeads":
        """The fitted heads of :meth:`to_state`'s output."""
        # bundles from before the joint heads have neither the parameter nor the arrays: templates heads
        method = "joint" if "factors" in arrays else "templates"
        heads = super().from_state({"clip": float(arrays["clip"]), **params, "method": method}, arrays)
        if method == "joint":
            for name in cls.JOINT_STATE:
                value = np.asarray(arrays[name])
                setattr(heads, name + "_", value.item() if value.ndim == 0 else value)
            heads.factors_ = np.asarray(arrays["factors"], dtype=np.float32).reshape(len(arrays["anchors"]), -1)
            heads.deviation_bound_ = float(arrays["deviation_bound"])
            K, k = heads.factors_.shape
            shapes = {"item_weights": (K,), "theta_mean": (k,), "theta_precision": (k, k),
                      "fold_in_negatives": (len(heads.fold_in_common_), K)}
            for name, shape in shapes.items():  # what fit_one multiplies together must fit together
                if np.shape(getattr(heads, name + "_")) != shape:
                    raise ValueError(f"{name} has shape {np.shape(getattr(heads, name + '_'))}, not {shape}")
        heads.users_ = np.asarray(arrays["users"]).astype(str)
        heads.n_favourites_ = np.asarray(arrays["n_favourites"], dtype=np.int64)
        heads.weights_ = np.asarray(arrays["weights"], dtype=np.float32)
        heads.anchors_ = np.asarray(arrays["anchors"], dtype=np.float32)
        heads.background_ = np.asarray(arrays["background"], dtype=np.float64)
        heads.templates_ = np.asarray(arrays["templates"], dtype=np.float64)
        heads.regime_settings_ = np.asarray(arrays["regime_settings"], dtype=np.float64).reshape(len(REGIMES), 3)
        # four few-shot sizes in bundles from before the 16-photo one
        heads.shot_settings_ = np.asarray(arrays["shot_settings"], dtype=np.float64).reshape(-1, 3)
        if len(heads.shot_settings_) not in (len(SHOTS) - 1, len(SHOTS)):
            raise ValueError(f"shot_settings has {len(heads.shot_settings_)} rows, not {len(SHOTS)}")
        heads.validation_ = {}
        heads._index = {str(x): i for i, x in enumerate(heads.users_)}
        return heads
