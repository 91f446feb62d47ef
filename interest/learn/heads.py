"""Per-user heads: each user's deviation from the common score, borrowing from users of similar taste.

People in a community like the same niches, so a user seen through a few
favourites is best described by the users whose favourites resemble theirs.
A head lives on a set of K *anchors* in the PCA subspace (the common model's
prototypes when training gives them, which makes a head nearly free when
scoring; else k-means centroids of the training photos). Distances to them are
full-embedding distances, the part of a photo outside the subspace included:

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

The default, ``method="auto"``, fits these templates heads and the joint
heads (pairwise, every user at once: :mod:`interest.learn.joint_heads`) on
the same held-out favourites and the same negatives, with the anchors and
memberships computed once, and keeps the method whose heads gain more on
them: joint only when it is ahead both for users with 20+ favourites and
over every scored user, by more than ``auto_margin`` standard errors of the
per-user difference (0 by default); otherwise, a tie included, templates.
On the family this keeps joint in ``taste-crawl-s1`` and ``taste-dense-s0``
(where it is ahead on test photos too) and templates in the other ten
worlds (BENCHMARKS.md). ``method_`` is the method fitted;
``validation_["auto"]`` holds both methods' gains. Joint heads kept this way
still fold a new user in as the templates heads would for each few-shot size
where that gained more on the held-out favourites (``fold_in_*_``;
``validation_["few_shot_method"]``): the joint fold-in is the weaker one from
few photos. ``method="templates"`` and ``method="joint"`` fit one method alone.

The anchors and memberships are in :mod:`interest.learn.anchors`, the
regimes and the rule that keeps a setting in :mod:`interest.learn.head_settings`,
and the joint fit in :mod:`interest.learn.joint_heads`; this module is the
estimator, its templates fit and the choice between the two.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from interest.core.numeric import unique_pairs
from interest.core.vocabulary import ACTIVITY_BUCKETS, bucket_name
from interest.learn.anchors import Anchors
from interest.learn.base import Estimator
from interest.learn.head_settings import REGIMES, SHOTS, pick_setting, regime_index
from interest.learn.joint_heads import JointHeads

# candidate scales s, relative to (spread of the common score) / (typical spread of a head)
_RELATIVE_SCALES = tuple(float(v) for v in np.logspace(-1.5, 1.0, 11))
_TOLERANCE = 0.0  # a head setting may lower no bucket's mean AUC on the held-out favourites
_CHUNK = 16_384  # photos per block when computing anchor memberships


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class UserHeads(Anchors, JointHeads, Estimator):
    """Anchor-profile heads for many users, with shared taste through template users.

    Parameters: ``n_anchors`` (k-means anchors, when :meth:`fit` is given none;
    None: about one per 15 training photos, 16 to 256), ``bandwidth`` (tau
    relative to the median squared distance of a training photo to its nearest
    anchor), ``pseudo_counts`` (candidate m),
    ``sharing`` (candidate eta; 0 means no borrowing), ``clip`` (bound of
    ``|t_u|``), ``template_min_favourites``, ``max_templates`` (the most
    active users first), ``validation_fraction`` of each user's favourites
    held out to choose the settings, ``significance`` (standard errors a
    setting's mean gain must beat on them), ``negatives``,
    ``max_validation_per_user``, ``auto_margin`` (``method="auto"``: standard
    errors by which joint must lead to be kept), ``seed``. ``method``: "auto"
    (the default), "templates" or "joint".

    Learned: ``anchors_`` (K, h) in PCA coordinates, ``tau_``, ``d0_``, ``background_`` (K,),
    ``templates_`` (V, K), ``users_`` (U,) unicode, ``n_favourites_`` (U,),
    ``weights_`` (U, K) float32 (``s * t_u``: a deviation is
    ``r(x) @ weights_[u]``), ``regime_settings_`` (one (eta, m, s) row per
    entry of :data:`REGIMES`), ``shot_settings_`` (one per :data:`SHOTS`)
    ``method_`` (the method fitted: "templates" or "joint") and ``validation_``.
    """

    STATE = ("users", "n_favourites", "weights", "anchors", "tau", "d0", "background", "templates",
             "regime_settings", "shot_settings")
    # what the joint method keeps beside STATE (a templates bundle has none of these)
    JOINT_STATE = ("factors", "item_weights", "fold_in_negatives", "fold_in_common", "common_centre", "common_unit",
                   "common_weight_prior", "theta_mean", "theta_precision")
    # what joint heads kept by method="auto" keep to fold new users in as templates heads (where that gained more)
    FOLD_IN_STATE = ("fold_in_by_templates", "fold_in_templates", "fold_in_background", "fold_in_settings")

    def __init__(
        self,
        method: str = "auto",
        n_anchors: int | None = None,
        bandwidth: float = 0.12,
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
        auto_margin: float = 0.0,
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
        self.auto_margin = auto_margin
        self.seed = seed

    # ------------------------------------------------------------ fitting

    def fit(
        self, F: np.ndarray, user_ids: np.ndarray, photo_rows: np.ndarray, base: np.ndarray,
        anchors: np.ndarray | None = None,
    ) -> "UserHeads":
        """Fit heads for every user with a favourite.

        ``F`` (n, h + 1): head inputs of the training photos (see
        :meth:`memberships`); ``user_ids`` and ``photo_rows`` (one entry per
        favourite; rows index ``F``); ``base`` (n,): the common model's scores of the same photos,
        against which the heads' gain is measured when choosing eta, m and s;
        ``anchors`` (K, h): the points the heads live on (training passes the
        prototypes), else k-means centroids of the photos (``n_anchors`` of them).
        """
        F = np.asarray(F, dtype=np.float64)
        users, u = np.unique(np.asarray(user_ids).astype(str), return_inverse=True)
        pairs = unique_pairs(u, photo_rows)
        u, p = pairs[:, 0], pairs[:, 1]
        n_users, n = len(users), len(F)
        counts = np.bincount(u, minlength=n_users).astype(np.float64)
        base = np.asarray(base, dtype=np.float64)

        with threadpool_limits(limits=1, user_api="blas"):  # many small products: BLAS threads only contend
            self._fit_anchors(F, anchors)
        R = np.vstack([self.memberships(F[s : s + _CHUNK]).astype(np.float32) for s in range(0, n, _CHUNK)])
        # a user's share of the head: at most s * clip, kept within the common score's own spread (1st to 99th
        # percentile). The whole spread, not half of it: at half, the chosen scale sat at that cap in every
        # family world, and the whole spread raised users with 20+ favourites in each of them (communities-s0
        # +0.161 -> +0.191 AUC, flat-s1 +0.145 -> +0.154); 1.5 spreads gained nothing more
        self.max_deviation_ = self.max_deviation * float(np.quantile(base, 0.99) - np.quantile(base, 0.01))

        fits = {"templates": self._fit_templates, "joint": self._fit_joint, "auto": self._fit_auto}
        if self.method not in fits:
            raise ValueError(f"UserHeads method {self.method!r}: give 'auto', 'joint' or 'templates'")
        with threadpool_limits(limits=1, user_api="blas"):  # many small products: BLAS threads only contend
            fits[self.method](R, u, p, counts, base)
        self.users_ = users.astype(str)
        self.n_favourites_ = counts.astype(np.int64)
        self._index = {str(x): i for i, x in enumerate(self.users_)}
        return self

    def _fit_templates(self, R, u, p, counts, base) -> None:
        """The templates heads: settings chosen on held-out favourites (:meth:`_choose`), then every user's head
        from all their favourites."""
        self._choose(R, u, p, counts, base)
        n_users = len(counts)
        N = self._counts(R, u, p, np.ones(len(u), dtype=bool), n_users)
        self.background_, self.templates_ = self._background_and_templates(N, counts)
        self.weights_ = np.zeros((n_users, len(self.anchors_)), dtype=np.float32)
        regime_of = regime_index(counts)
        priors = self._priors(N, self.regime_settings_[:, 0], exclude_self=True)
        for i, (eta, m, scale) in enumerate(self.regime_settings_):
            rows = np.flatnonzero(regime_of == i)
            if scale > 0 and len(rows):
                self.weights_[rows] = scale * self._tables(N[rows], priors[float(eta)][rows], m)
        self.method_ = "templates"
        self.validation_["method"] = "templates"

    def _fit_auto(self, R, u, p, counts, base) -> None:
        """Fit the templates heads and the joint heads on the same held-out favourites and the same negatives, and
        keep the method whose heads gain more on them (:meth:`_compare_methods`)."""
        # both start from these heads: the anchors and the bound, fitted once
        templates, joint = self._with(method="templates"), self._with(method="joint")
        templates._fit_templates(R, u, p, counts, base)  # it draws the split; the joint fit is scored on the same
        fitted, comparison = {"templates": templates}, {"chosen": "templates"}
        if templates._validation_split is not None:  # else no user has a favourite to hold out: nothing to compare
            # the split fit and its held-out gains; the rest only if the joint heads are kept
            finish_joint = joint._fit_joint_split(R, u, p, counts, base, validation=templates._validation_split)
            fitted["joint"] = joint
            comparison = self._compare_methods(fitted, counts)
            if comparison["chosen"] == "joint":
                finish_joint()
                joint._keep_templates_fold_in(templates)
        winner = fitted[comparison["chosen"]]
        self.__dict__.update(winner.__dict__)
        self.method = "auto"
        self.validation_ = {**winner.validation_, "method": comparison["chosen"], "auto": comparison}
        for heads in (self, *fitted.values()):  # what only the comparison needed
            for name in ("_validation_split", "_chosen_gain", "_scored"):
                heads.__dict__.pop(name, None)

    def _keep_templates_fold_in(self, templates: "UserHeads") -> None:
        """Joint heads kept by ``method="auto"``: for each few-shot size where the templates heads' fold-in of a
        new user gained more on the held-out favourites than the joint heads', ``personalize`` with that many liked
        photos folds the user in as the templates heads would; keep what that needs (``fold_in_*_``).

        The two fits' few-shot figures are each method's own: on the family the joint fold-in trailed the
        templates' from one to four liked photos in both worlds where auto keeps joint (``taste-crawl-s1``
        +0.032 against +0.074 at one photo, behind VBPR's fold-in there).
        """
        gains = [
            [method.validation_.get("few_shot", {}).get(str(k), {}).get("mean_auc_gain", 0.0) for k in SHOTS]
            for method in (templates, self)
        ]
        by_templates = np.asarray(gains[0]) > np.asarray(gains[1])
        self.validation_["few_shot_method"] = {str(k): "templates" if t else "joint" for k, t in zip(SHOTS, by_templates)}
        if not by_templates.any():
            return
        self.fold_in_by_templates_ = by_templates
        self.fold_in_templates_ = templates.templates_.astype(np.float64)
        self.fold_in_background_ = np.asarray(templates.background_, dtype=np.float64)
        self.fold_in_settings_ = np.vstack([templates.regime_settings_, templates.shot_settings_]).astype(np.float64)

    def _templates_fold_in(self, n_liked: int) -> "UserHeads | None":
        """The templates heads that fold in a new user giving ``n_liked`` liked photos, where the joint heads keep
        them for that few-shot size (:meth:`_keep_templates_fold_in`); None where the joint fold-in applies."""
        by_templates = getattr(self, "fold_in_by_templates_", None)
        if by_templates is None or not 1 <= n_liked < REGIMES[-1][0]:
            return None
        if not by_templates[int(np.searchsorted(SHOTS, n_liked, side="right")) - 1]:
            return None
        return self._with(method_="templates", templates_=self.fold_in_templates_, background_=self.fold_in_background_,
                          regime_settings_=self.fold_in_settings_[: len(REGIMES)],
                          shot_settings_=self.fold_in_settings_[len(REGIMES) :])

    def _with(self, **attributes) -> "UserHeads":
        """A shallow copy of these heads with ``attributes`` set (arrays shared, not copied)."""
        new = object.__new__(UserHeads)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(attributes)
        return new

    def _compare_methods(self, fitted: dict, counts: np.ndarray) -> dict:
        """Which fitted method to keep: joint when its heads' mean gain on the held-out favourites beats the
        templates heads' by more than ``auto_margin`` standard errors of the paired (per-user) difference both
        for the users with 20+ favourites and for every scored user; templates otherwise (ties included, and
        with under two such users). A negative margin favours joint."""
        scored = fitted["templates"]._scored
        out = {"criterion": f"mean gain at 20+ favourites and over all scored users, joint ahead in both by more than "
                            f"{self.auto_margin:g} standard errors",
               "margin": float(self.auto_margin)}
        for label, sel in (("20+", scored[counts[scored] >= REGIMES[-1][0]]), ("all", scored)):
            t, j = fitted["templates"]._chosen_gain[sel], fitted["joint"]._chosen_gain[sel]
            d = j - t
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None  # None: too few users to tell
            out[label] = {"n_users": int(len(sel)), "templates": float(t.mean()) if len(t) else 0.0,
                          "joint": float(j.mean()) if len(j) else 0.0,
                          "difference": float(d.mean()) if len(d) else 0.0, "standard_error": se}
        # joint must lead for the users with 20+ favourites (what the heads are for) and over every scored user
        # (so that lighter users do not pay for it): on a small world a lead of 0.4 standard errors among 15 heavy
        # users, with every scored user behind, is noise
        ahead = all(out[label]["standard_error"] is not None
                    and out[label]["difference"] > self.auto_margin * out[label]["standard_error"] for label in ("20+", "all"))
        out["chosen"] = "joint" if ahead else "templates"
        return out

    @staticmethod
    def _counts(R, u, p, keep, n_users) -> np.ndarray:
        """(U, K) soft anchor counts from the favourites marked in ``keep`` (``u`` sorted, as ``fit`` makes it).

        Each user's rows of ``R`` summed in float64 in favourite order, block by block of users (a sparse
        product would first copy the whole float32 ``R`` to float64: a gigabyte at paper scale, each call).
        """
        uu, pp = u[keep], p[keep]
        N = np.zeros((n_users, R.shape[1]))
        first = np.flatnonzero(np.r_[True, uu[1:] != uu[:-1]]) if len(uu) else np.empty(0, dtype=np.int64)
        edges = np.r_[first, len(uu)]
        per_block = max(1, len(first) * _CHUNK // max(len(uu), 1))  # users a block: about _CHUNK favourites
        for b in range(0, len(first), per_block):
            lo, hi = edges[b], edges[min(b + per_block, len(first))]
            block = R[pp[lo:hi]].astype(np.float64)
            N[uu[first[b : b + per_block]]] = np.add.reduceat(block, first[b : b + per_block] - lo, axis=0)
        return N

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
        self._validation_split = None
        if not is_val.any():
            return
        fit_counts = counts - np.bincount(u[is_val], minlength=n_users)
        N = self._counts(R, u, p, ~is_val, n_users)
        self.background_, self.templates_ = self._background_and_templates(N, fit_counts)

        neg = np.sort(rng.choice(len(R), min(self.negatives, len(R)), replace=False))
        # method="auto" scores the joint heads on this same split and these same negatives
        self._validation_split = (pos, n_val, is_val, neg)
        # negatives a user favourited are not negatives for that user
        neg_slot = np.full(len(R), -1)
        neg_slot[neg] = np.arange(len(neg))
        valid_all = np.ones((len(neg), n_users), dtype=bool)
        hit = neg_slot[p] >= 0
        valid_all[neg_slot[p[hit]], u[hit]] = False
        regime_of = regime_index(counts)

        # few-shot users: 10+ fitting favourites, at most 300 of them, each given the first k of a random order
        shot_users = np.flatnonzero((fit_counts >= 10) & (n_val > 0))
        if len(shot_users) > 300:
            shot_users = np.sort(rng.choice(shot_users, 300, replace=False))
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
            return pick_setting(gains, users_sel, off, self.significance)

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
        self._chosen_gain, self._scored = chosen, scored  # per user, for method="auto"
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


    # ------------------------------------------------------------ using

    def has(self, user: str) -> bool:
        """Whether ``user`` has a head."""
        return str(user) in self._index

    def deviation(self, user: str, F: np.ndarray) -> np.ndarray:
        """Deviation of ``user`` (who must have a head) for head inputs ``F`` (n, h + 1): (n,) float32."""
        return self.deviations_of(F, self.weights_[self._index[str(user)]])

    def deviation_from_scores(self, user: str, scores: np.ndarray, top: np.ndarray, dist_sq: np.ndarray) -> np.ndarray:
        """:meth:`deviation` of photos given by their anchor scores (rows, K), each row's largest score and squared distances
        to the PCA mean (see :meth:`weighted_memberships`): scoring passes the prototype search's own scores
        when the anchors are the prototypes (and overwrites them). (rows,) float32, the same bits as :meth:`deviation`."""
        return self.weighted_memberships(scores, top, dist_sq, self.weights_[self._index[str(user)]])

    def deviations(self, users: list[str], F: np.ndarray) -> np.ndarray:
        """Deviations of several users at once: (n, len(users)) float32."""
        rows = [self._index[str(x)] for x in users]
        return self.deviations_of(F, self.weights_[rows].T)

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
        if self.method_ == "joint":
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
        if self.method_ == "joint":
            templates = self._templates_fold_in(len(F_liked) if n.sum() >= 0.5 else 0)
            if templates is not None:
                return templates.fit_one(F_liked, F_disliked)
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

    def with_head(self, user: str, weights: np.ndarray, n_favourites: int) -> "UserHeads":
        """A new UserHeads with ``user``'s head added or replaced (this one is left untouched)."""
        new = self._with()
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
        if self.method_ == "joint":
            arrays.update({name: np.asarray(getattr(self, name + "_")) for name in self.JOINT_STATE})
            arrays["deviation_bound"] = np.float64(self.deviation_bound_)
            if getattr(self, "fold_in_by_templates_", None) is not None:
                arrays.update({name: np.asarray(getattr(self, name + "_")) for name in self.FOLD_IN_STATE})
                arrays["fold_in_by_templates"] = arrays["fold_in_by_templates"].astype(np.int8)
                arrays["fold_in_templates"] = arrays["fold_in_templates"].astype(np.float32)
        arrays["users"] = np.asarray(self.users_, dtype=str)
        arrays["templates"] = self.templates_.astype(np.float32)
        arrays["clip"] = np.float64(self.clip)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray], lightgbm: dict | None = None) -> "UserHeads":
        """The fitted heads of :meth:`to_state`'s output."""
        # bundles from before the joint heads have neither the parameter nor the arrays: templates heads
        method = "joint" if "factors" in arrays else "templates"
        # a bundle fitted with method="auto" keeps that parameter; the arrays say which method it fitted
        asked = method if params.get("method") != "auto" else "auto"
        heads = super().from_state({"clip": float(arrays["clip"]), **params, "method": asked}, arrays)
        heads.method_ = method
        if method == "joint":
            for name in cls.JOINT_STATE:
                value = np.asarray(arrays[name])
                setattr(heads, name + "_", value.item() if value.ndim == 0 else value)
            heads.factors_ = np.asarray(arrays["factors"], dtype=np.float32).reshape(len(arrays["anchors"]), -1)
            heads.deviation_bound_ = float(arrays["deviation_bound"])
            K, k = heads.factors_.shape
            shapes = {"item_weights": (K,), "theta_mean": (k,), "theta_precision": (k, k),
                      "fold_in_negatives": (len(heads.fold_in_common_), K)}
            if "fold_in_by_templates" in arrays:  # joint heads kept by auto, new users folded in as templates heads
                heads.fold_in_by_templates_ = np.asarray(arrays["fold_in_by_templates"]).astype(bool)
                heads.fold_in_templates_ = np.asarray(arrays["fold_in_templates"], dtype=np.float64)
                heads.fold_in_background_ = np.asarray(arrays["fold_in_background"], dtype=np.float64)
                heads.fold_in_settings_ = np.asarray(arrays["fold_in_settings"], dtype=np.float64)
                shapes.update({"fold_in_by_templates": (len(SHOTS),), "fold_in_background": (K,),
                               "fold_in_settings": (len(REGIMES) + len(SHOTS), 3)})
                if heads.fold_in_templates_.ndim != 2 or heads.fold_in_templates_.shape[1] != K:
                    raise ValueError(f"fold_in_templates has shape {heads.fold_in_templates_.shape}, not (templates, {K})")
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
