"""The study's vocabulary: trend-group names and users' activity buckets, defined once.

No imports beyond the standard library: ``interest.onnx`` (torch- and
pandas-free) and the contract (``interest.core.collection``) both read it.
"""

from __future__ import annotations

TREND_GROUPS = ("common", "interplay", "subjective")  # trend_group 0, 1, 2
GROUP_PROBABILITY_COLUMNS = tuple(f"p_{g}" for g in TREND_GROUPS)  # what scoring returns per group

# Activity buckets: [lo, hi) train favourites per user (hi None: no upper end). The
# evaluation, the heads' validation and the benchmarks report these; a bucket with no
# users is left out of a report (the 0 bucket only appears when such users exist).
ACTIVITY_BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 1), (1, 5), (5, 20), (20, 100), (100, None))


def bucket_name(lo: int, hi: int | None) -> str:
    """Readable name of an activity bucket: '0', '1-4', '100+'."""
    if hi is None:
        return f"{lo}+"
    return str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"
