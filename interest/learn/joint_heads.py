"""The joint fit of the user heads (``UserHeads(method="joint")``): every user at once, pairwise.

BPR-style training on (user, favourite, random photo) triples over the
anchor memberships: taste factors shared by all users, a per-user part, and
a per-user weight on the common score, folded into the stored head; a new
user is folded in with the shared parts fixed (:meth:`JointHeads._fold_in`).
The heads' estimator (:class:`interest.learn.heads.UserHeads`) mixes this in;
what it scores with is the same table either way.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from interest.core.vocabulary import ACTIVITY_BUCKETS, bucket_name
from interest.learn.head_settings import REGIMES, SHOTS, pick_setting, regime_index

# (user, favourite, photo) triples a joint fit samples at most (a third for the last part). Every family world
# stays under it (the largest, 35k favourites x 30 epochs, samples 1.05M); paper scale's 776k favourites get three
# passes. With ``method="auto"`` a joint fit that this leaves short only loses the comparison on held-out
# favourites (the templates heads are kept, as at paper scale); at 4M the joint split fit took 26 s there.
_MAX_TRIPLES = 1_500_000


class JointHeads:
    """The joint fit's methods of :class:`~interest.learn.heads.UserHeads` (a mixin: its state is the heads')."""


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
                    # Adam, in place on one scratch array: the same operations in the same order as
                    # ``grad += 2 ridge param / n``, ``m = 0.9 m + 0.1 grad``, ``v = 0.999 v + 0.001 grad^2``,
                    # ``param -= lr (m / (1 - 0.9^t)) / (sqrt(v / (1 - 0.999^t)) + 1e-8)`` (the same bits), without
                    # a temporary per operation: the per-user parts are (users, anchors) arrays, updated each step
                    param, (m, v) = params[name], moments[name]
                    scratch = np.multiply(param, 2.0 * ridge[name])
                    scratch /= n_pos  # the ridge, spread over the favourites
                    grad += scratch
                    m *= 0.9
                    m += np.multiply(grad, 0.1, out=scratch)
                    v *= 0.999
                    np.multiply(grad, 0.001, out=scratch)
                    scratch *= grad
                    v += scratch
                    np.divide(m, 1 - 0.9**step, out=scratch)
                    scratch *= self.learning_rate
                    np.divide(v, 1 - 0.999**step, out=grad)
                    np.sqrt(grad, out=grad)
                    grad += 1e-8
                    scratch /= grad
                    param -= scratch
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

    def _fit_joint(self, R, u, p, counts, base, validation: tuple | None = None) -> None:
        """Fit the joint heads: a split fit chooses each regime's and each few-shot size's scale on held-out
        favourites (kept only when the gain beats ``significance`` standard errors), then training goes on
        with every favourite and the heads are stored, clipped to the bound.

        ``validation``: (rank within user, held-out count per user, held-out mask, negatives) of a split drawn
        elsewhere (``method="auto"`` scores both methods on the templates fit's split); None draws its own."""
        self._fit_joint_split(R, u, p, counts, base, validation)()

    def _fit_joint_split(self, R, u, p, counts, base, validation: tuple | None = None):
        """The split fit of :meth:`_fit_joint` and each regime's scale (``_chosen_gain``, ``_scored``: each
        user's held-out gain); returns the rest of the fit (the few-shot scales, training on every favourite)
        as a function, which ``method="auto"`` calls only when it keeps the joint heads (at paper scale
        that rest is a third of the joint fit). Called at once, the fit is the same."""
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

        if validation is None:
            pos, n_val, is_val = self._split(u, counts, rng)
        else:
            pos, n_val, is_val, given_neg = validation
        fit_counts = counts - np.bincount(u[is_val], minlength=n_users)
        split = self._train_joint(R, u[~is_val], p[~is_val], c, n_users, rng)
        self._set_shared(split, fit_counts)
        W = self._joint_weights(split)
        neg = np.sort(rng.choice(n, min(self.negatives, n), replace=False)) if validation is None else given_neg
        valid_all = np.ones((len(neg), n_users), dtype=bool)
        neg_slot = np.full(n, -1)
        neg_slot[neg] = np.arange(len(neg))
        hit = neg_slot[p] >= 0
        valid_all[neg_slot[p[hit]], u[hit]] = False
        regime_of = regime_index(counts)
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
            return pick_setting(gains, users_sel, 0.0, self.significance)

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

        self._chosen_gain, self._scored = chosen, scored  # per user, for method="auto"

        def finish() -> None:
            """The few-shot scales and the training on every favourite that follow the split fit."""
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
            W_full = self._joint_weights(full)
            scale_of = np.array([self.regime_settings_[i, 2] if i >= 0 else 0.0 for i in regime_of])
            self.weights_ = np.clip(scale_of[:, None] * W_full, -self.deviation_bound_, self.deviation_bound_).astype(np.float32)
            self.method_ = "joint"
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

        return finish

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
