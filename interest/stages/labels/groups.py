"""Trend groups: cut points on the CI score.

Group 0 is *commonly interesting* (the head of the commonality curve), 1 the
*interplay* between the two, 2 *subjectively interesting* (the tail). The
paper does not publish its cut points, so by default they are the terciles of
the definition (train) photos' CI: a photo is common when its CI is at or
above the upper cut, subjective when below the lower cut, interplay otherwise.
Because every photo of a partition shares one CI, the groups are whole
partitions and only roughly thirds of the photos.

The cuts actually used are stored with the labels (``labels.parquet``
metadata and ``manifest.json``) so that a model assigns groups to new photos
with the same thresholds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from interest.core.errors import InterestError
from interest.learn.groups import COMMON, SUBJECTIVE, check_group_cuts

DEFAULT_GROUP_QUANTILES = (1 / 3, 2 / 3)


def quantile_cuts(ci: np.ndarray, quantiles: Sequence[float] = DEFAULT_GROUP_QUANTILES) -> tuple[float, float]:
    """Cut points at ``quantiles`` of the CI scores ``ci`` (NaNs ignored)."""
    ci = np.asarray(ci, dtype=float)
    ci = ci[np.isfinite(ci)]
    if ci.size == 0:
        raise InterestError("cannot place trend-group cuts: no photo has a CI score")
    lo, hi = np.quantile(ci, list(quantiles))
    return check_group_cuts((lo, hi))


def cuts_with_shares(values: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Cut points on the scale of ``values`` whose bands hold the shares of ``groups`` (0, 1, 2) have.

    How a score on another scale (a synthetic world's true commonality, say)
    gets trend groups comparable with the labels': the same share of photos
    common and subjective, ranked by that score instead.
    """
    groups = np.asarray(groups, dtype=np.int64)
    share_sub, share_common = float(np.mean(groups == SUBJECTIVE)), float(np.mean(groups == COMMON))
    return quantile_cuts(values, (share_sub, 1.0 - share_common))
