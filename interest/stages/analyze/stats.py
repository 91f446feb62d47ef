"""Statistics for comparing trend groups: bootstrap intervals, tests, effect sizes.

Trend groups are assigned per partition, so the photos of one partition are
not independent draws: a photo-level bootstrap would understate how unsure a
difference is. :func:`bootstrap_stat` therefore resamples whole clusters
(partitions) when it is given them, and photos otherwise. The classical tests
(two-proportion z, Mann-Whitney U) treat photos as independent; the analysis
calls a difference real only when both its Holm-adjusted p-value is small and
its cluster-bootstrap interval excludes zero.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from scipy import stats as sps

# Upper bound on the number of cells of one (replicates x observations) block:
# keeps the bootstrap's memory flat at paper scale (500k photos).
_BLOCK_CELLS = 4_000_000
# Above this many clusters, quantile replicates use a cumulative sum instead of bisection.
_BISECT_MAX_CLUSTERS = 2_000


def rng_for(seed: int, *labels: object) -> np.random.Generator:
    """A generator for one named step, so that each table row gets its own stream.

    Streams depend on ``seed`` and the labels only (crc32, not Python's
    salted ``hash``), so adding a row to a table leaves the other rows'
    intervals unchanged.
    """
    keys = [zlib.crc32(str(label).encode("utf-8")) for label in labels]
    return np.random.default_rng([int(seed), *keys])


def bootstrap_stat(
    x: np.ndarray,
    *,
    stat: str = "mean",
    q: float = 0.5,
    clusters: np.ndarray | None = None,
    n_boot: int = 1000,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the mean or the ``q``-quantile of ``x``.

    With ``clusters`` (one label per observation), whole clusters are drawn
    with replacement; otherwise single observations are. NaNs must be removed
    by the caller. Quantile replicates use the inverted-CDF definition (a
    resampled quantile is always one of the observed values).
    """
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return np.full(n_boot, np.nan)
    if stat not in ("mean", "quantile"):
        raise ValueError(f"unknown statistic {stat!r}; use 'mean' or 'quantile'")
    codes = np.arange(len(x)) if clusters is None else pd.factorize(np.asarray(clusters))[0]
    m = int(codes.max()) + 1
    out = np.empty(n_boot)
    if stat == "mean":
        sums = np.bincount(codes, weights=x, minlength=m)
        counts = np.bincount(codes, minlength=m).astype(float)
        for start, w in _weight_blocks(rng, m, n_boot):
            out[start : start + len(w)] = (w @ sums) / (w @ counts)
        return out
    if m <= _BISECT_MAX_CLUSTERS:
        bisect = _ClusterQuantile(x, codes, m)
        for start, w in _weight_blocks(rng, m, n_boot):
            out[start : start + len(w)] = bisect(w, q)
        return out
    order = np.argsort(x, kind="stable")
    xs, cs = x[order], codes[order]
    for start, w in _weight_blocks(rng, m, n_boot, cells=len(x)):
        out[start : start + len(w)] = weighted_quantile_sorted(xs, cs, w, q)
    return out


def _weight_blocks(rng: np.random.Generator, m: int, n_boot: int, cells: int | None = None):
    """(first replicate, block of multinomial cluster counts) covering ``n_boot`` replicates."""
    pvals = np.full(m, 1.0 / m)
    step = max(1, _BLOCK_CELLS // max(m, cells or 0))
    for start in range(0, n_boot, step):
        yield start, rng.multinomial(m, pvals, size=min(step, n_boot - start)).astype(float)


def weighted_quantile_sorted(xs: np.ndarray, cs: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Inverted-CDF ``q``-quantile of sorted values ``xs`` (cluster ``cs``) under each row of cluster weights ``w``.

    Cost: one (replicates x observations) cumulative sum; used when the
    clusters are the observations themselves.
    """
    cum = np.cumsum(w[:, cs], axis=1)
    target = np.maximum(q * cum[:, -1:], 1e-12)
    return xs[(cum >= target).argmax(axis=1)]


class _ClusterQuantile:
    """The same quantile as :func:`weighted_quantile_sorted`, by bisection over the distinct values.

    With a few hundred clusters (partitions) this needs ~log2(n) rounds of
    one searchsorted per cluster instead of a cumulative sum over all
    observations per replicate: paper-scale tables take seconds, not minutes.
    """

    def __init__(self, x: np.ndarray, codes: np.ndarray, m: int):
        order = np.lexsort((x, codes))
        bounds = np.searchsorted(codes[order], np.arange(m + 1))
        self.per_cluster = [x[order][bounds[j] : bounds[j + 1]] for j in range(m)]
        self.counts = np.diff(bounds).astype(float)
        self.values = np.unique(x)

    def __call__(self, w: np.ndarray, q: float) -> np.ndarray:
        target = np.maximum(q * (w @ self.counts), 1e-12)
        lo = np.zeros(len(w), dtype=np.int64)
        hi = np.full(len(w), len(self.values) - 1, dtype=np.int64)
        while (lo < hi).any():
            mid = (lo + hi) // 2
            v = self.values[mid]
            below = sum(w[:, j] * np.searchsorted(part, v, side="right") for j, part in enumerate(self.per_cluster))
            ok = below >= target
            hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid + 1)
        return self.values[lo]


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of ``replicates`` at confidence ``level``."""
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h between two proportions (0.2 small, 0.5 medium, 0.8 large)."""
    return float(2 * np.arcsin(np.sqrt(p1)) - 2 * np.arcsin(np.sqrt(p2)))


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test: (z, two-sided p). NaN when a group is empty."""
    if n1 == 0 or n2 == 0:
        return float("nan"), float("nan")
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return float(z), float(2 * sps.norm.sf(abs(z)))


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U test of ``a`` vs ``b``: (rank-biserial r, two-sided p).

    r = P(a > b) - P(a < b) over all pairs: +1 when every ``a`` exceeds every
    ``b``, 0 for no shift (0.1 small, 0.3 medium, 0.5 large).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    if np.ptp(np.concatenate([a, b])) == 0:
        return 0.0, 1.0
    u, p = sps.mannwhitneyu(a, b, alternative="two-sided")
    return float(2 * u / (len(a) * len(b)) - 1), float(p)


def chi_square(counts: np.ndarray) -> tuple[float, float, float]:
    """Chi-square test of independence of a (categories x groups) count table.

    Returns (chi2, p, Cramer's V). Rows and columns that are all zero are
    dropped first; NaNs when fewer than two of either remain.
    """
    counts = np.asarray(counts, dtype=float)
    counts = counts[counts.sum(axis=1) > 0][:, counts.sum(axis=0) > 0]
    if counts.shape[0] < 2 or counts.shape[1] < 2:
        return float("nan"), float("nan"), float("nan")
    chi2, p, _, _ = sps.chi2_contingency(counts, correction=False)
    v = np.sqrt(chi2 / (counts.sum() * (min(counts.shape) - 1)))
    return float(chi2), float(p), float(v)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaNs stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out
