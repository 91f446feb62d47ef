"""The activity regimes and few-shot sizes a user head keeps a setting for, and the rule that picks it.

A setting is chosen on held-out favourites per regime (and per few-shot size)
and kept only when its mean gain beats ``significance`` standard errors:
both ways of fitting heads (:mod:`interest.learn.heads`' templates and
:mod:`interest.learn.joint_heads`) choose by this rule.
"""

from __future__ import annotations

import numpy as np

# Regimes with a setting (eta, m, s) of their own: light users are mostly casual, heavy ones have a taste.
# Training users with 1-4 favourites keep the common score: a held-out favourite or two of a score of such
# users cannot tell a helpful setting from chance (on the family, every setting passed on validation lowered
# that bucket on test photos in some world). ``personalize`` with 1-4 photos uses the few-shot settings.
REGIMES = ((5, 20), (20, None))
# Few-shot sizes ``personalize`` is calibrated for: k liked photos use the setting of the largest size <= k.
SHOTS = (1, 2, 4, 8, 16)


def regime_index(counts: np.ndarray) -> np.ndarray:
    """Index into REGIMES of each favourite count (-1 below the first)."""
    out = np.full(len(counts), -1)
    for i, (lo, hi) in enumerate(REGIMES):
        out[(counts >= lo) & ((counts < hi) if hi else True)] = i
    return out


def pick_setting(gains: dict, users_sel: np.ndarray, off, significance: float) -> tuple:
    """(setting, mean gain, standard error): of ``gains`` ({setting: gain per user}), the one with the largest mean
    gain over ``users_sel`` that beats ``significance`` standard errors; ``off`` (gain 0) when none does."""
    best, best_gain, best_se = off, 0.0, 0.0
    for setting, gain in gains.items():
        g = gain[users_sel]
        mean, se = float(g.mean()), float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else np.inf
        if mean > significance * se and mean > best_gain:
            best, best_gain, best_se = setting, mean, se
    return best, best_gain, best_se
