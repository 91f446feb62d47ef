"""Small numeric helpers every room shares: one definition of each, NumPy only.

``interest.onnx`` imports this module, so it must never import torch or
pandas (tests/test_torch_free.py).
"""

from __future__ import annotations

import numpy as np

_MATMUL_ROWS = 1_024  # rows per float64 block in matmul64: 4 MB of temporaries for 512-d, its output stays in cache


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row, (n,) float32, summed in float64 (einsum, not BLAS: a row's norm never depends on its batch)."""
    x = np.asarray(x, dtype=np.float32)
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)


def l2_normalize(x: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (zero rows stay zero).

    The one normalisation of embeddings: backbones, the embeddings table, the
    ONNX scorer and every engine use it, so the same rows give bit-identical
    inputs (and scores) everywhere. ``in_place=True`` scales a float32 matrix
    without a second copy (a 500k x 512 table is 1 GB) and returns it.
    """
    if in_place:
        if not (isinstance(x, np.ndarray) and x.dtype == np.float32):
            raise TypeError("l2_normalize(in_place=True) needs a float32 numpy array")
    else:
        x = np.array(x, dtype=np.float32)
    scale_rows_to_unit(x)
    return x


def scale_rows_to_unit(x: np.ndarray) -> np.ndarray:
    """Scale a float32 matrix's rows to unit L2 norm in place; return the norms they had, (n,) float32."""
    norms = row_norms(x)
    x /= np.where(norms > 0, norms, np.float32(1.0))[:, None]
    return norms


def matmul64(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` accumulated in float64, in blocks of rows: (n, k) float64.

    Every scoring matmul goes through here (or :func:`affine32`). float32 BLAS
    chooses its kernel, and so its order of summation, by the shape of the
    whole matrix, which made a photo's score depend on the batch it was scored
    in (by ~1e-7: Ray's batches of 128 disagreed with one local call). In
    float64 that difference is ~1e-16, far below float32 resolution, so once
    the caller casts the result to float32 a row scores the same in any batch
    and on any engine. Blocking by rows keeps memory bounded and cannot change
    a row's result.
    """
    w = np.asarray(w, dtype=np.float64)
    out = np.empty((len(x),) + w.shape[1:], dtype=np.float64)
    for start, rows in _blocks64(x):
        np.matmul(rows, w, out=out[start : start + len(rows)])
    return out


def affine32(x: np.ndarray, w: np.ndarray, offset) -> np.ndarray:
    """``(matmul64(x, w) + offset).astype(np.float32)``, bit for bit, without the (n, k) float64 temporary.

    Each block's float64 product and offset are taken in one reused buffer
    and cast to float32 as it is written out: at 100k photos the temporaries
    of the one-line form cost as much as the product itself.
    """
    w = np.asarray(w, dtype=np.float64)
    out = np.empty((len(x),) + w.shape[1:], dtype=np.float32)
    buffer = np.empty((min(len(x), _MATMUL_ROWS),) + w.shape[1:], dtype=np.float64)
    for start, rows in _blocks64(x):
        part = buffer[: len(rows)]
        np.matmul(rows, w, out=part)
        part += offset
        out[start : start + len(rows)] = part
    return out


def _blocks64(x: np.ndarray):
    """(start, rows as float64) for blocks of :data:`_MATMUL_ROWS` rows of ``x``: float32 rows are cast into one
    reused buffer, float64 rows are the array's own (what ``np.asarray(block, float64)`` gives, without a new copy)."""
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        for start in range(0, len(x), _MATMUL_ROWS):
            yield start, x[start : start + _MATMUL_ROWS]
        return
    buffer = None
    for start in range(0, len(x), _MATMUL_ROWS):
        block = np.asarray(x[start : start + _MATMUL_ROWS])
        if buffer is None:
            buffer = np.empty((min(len(x), _MATMUL_ROWS),) + block.shape[1:], dtype=np.float64)
        rows = buffer[: len(block)]
        rows[...] = block
        yield start, rows


def centroid_scores(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``x . c - |c|^2 / 2`` for every row and centroid, (n, C) float64.

    ``|x - c|^2 = |x|^2 - 2 * score``: the largest score is the nearest
    centroid (Euclidean), without forming the distances.
    """
    c = np.asarray(centroids, dtype=np.float64)
    return matmul64(x, c.T) - 0.5 * np.einsum("ij,ij->i", c, c)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of each row of ``x``: (n,) int64."""
    return nearest_centroid_score(x, centroids)[0]


def nearest_centroid_score(x: np.ndarray, centroids: np.ndarray, on_block=None) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centroid (n,) int64, its :func:`centroid_scores` score (n,) float64) of each row.

    In blocks of rows, so the (rows, C) scores stay in cache instead of one
    (n, C) float64 array. ``on_block(start, scores, top)``, when given, is
    called with each block's scores (rows, C) and each row's nearest score
    (rows,) before they are dropped (it may overwrite the scores): a user head
    on the same centroids reads its memberships from them
    (:meth:`~interest.learn.anchors.Anchors.weighted_memberships`).
    """
    index, score = np.empty(len(x), dtype=np.int64), np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), _MATMUL_ROWS):
        scores = centroid_scores(x[start : start + _MATMUL_ROWS], centroids)
        best = np.argmax(scores, axis=1)
        top = np.take_along_axis(scores, best[:, None], axis=1)[:, 0]
        index[start : start + _MATMUL_ROWS] = best
        score[start : start + _MATMUL_ROWS] = top
        if on_block is not None:
            on_block(start, scores, top)
    return index, score


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the values, ties sharing their average rank (float64)."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties).

    NaN when it is undefined: fewer than 2 pairs, a NaN on either side, or
    either side constant. Callers that write JSON turn NaN into null.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError(f"spearman of {len(a)} and {len(b)} values")
    if len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def f1_per_class(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of each class 0..n_classes-1, NaN for a class in neither ``true`` nor ``pred``."""
    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    tp = np.bincount(true[true == pred], minlength=n_classes).astype(float)
    denom = np.bincount(true, minlength=n_classes) + np.bincount(pred, minlength=n_classes)
    present = denom > 0
    return np.where(present, 2 * tp / np.where(present, denom, 1), np.nan)


def macro_f1(true: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over the classes present in ``true`` or ``pred`` (scikit-learn's convention).

    NaN when there are no rows.
    """
    f1 = f1_per_class(true, pred, n_classes)
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


def unique_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The distinct (first, second) pairs of two non-negative integer arrays, sorted: (m, 2) int64.

    What ``np.unique(np.column_stack([first, second]), axis=0)`` returns, from
    one int64 key per pair (sorting a 1-d key instead of rows: a tenth of the
    time for the 776k favourites of paper scale).
    """
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if not len(first):
        return np.empty((0, 2), dtype=np.int64)
    width = int(second.max()) + 1
    keys = np.unique(first * width + second)
    return np.column_stack([keys // width, keys % width])
