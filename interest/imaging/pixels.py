"""Pixel statistics in plain numpy, shared by the perceptual backbone and the characteristics.

Every function takes an (H, W, 3) float32 RGB array in [0, 1] (or its luma,
an (H, W) array in [0, 1]) and returns plain floats or small arrays. The
formulas are written out in docs/features.md; tests check them on
constructed images (a flat grey image has contrast, sharpness, noise,
colourfulness and entropy 0).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# Rec. 601 luma weights: what "brightness" means for JPEG-encoded photos.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_array(img: Image.Image) -> np.ndarray:
    """An RGB image as an (H, W, 3) float32 array in [0, 1]."""
    return np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255.0)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` pixels (antialiased), keeping the aspect ratio."""
    width, height = img.size
    scale = size / min(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img if target == img.size else img.resize(target, Image.BILINEAR, reducing_gap=3.0)


def center_square(img: Image.Image, size: int) -> Image.Image:
    """The centred ``size`` x ``size`` crop of ``img`` resized to ``size`` on its shorter side."""
    img = resize_short_side(img, size)
    width, height = img.size
    left, top = (width - size) // 2, (height - size) // 2
    return img.crop((left, top, left + size, top + size))


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma in [0, 1]."""
    return rgb @ LUMA


def _max_min(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Element-wise over the three planes: numpy reduces a trailing axis of 3 slowly.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation per pixel: (max - min) / max, 0 for black."""
    hi, lo = _max_min(rgb)
    return ((hi - lo) / np.maximum(hi, np.float32(1e-12))).astype(np.float32)


def value(rgb: np.ndarray) -> np.ndarray:
    """HSV value per pixel: max(R, G, B)."""
    return _max_min(rgb)[0]


def hue(rgb: np.ndarray) -> np.ndarray:
    """HSV hue per pixel in turns [0, 1) (0 where the pixel is grey)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi, lo = _max_min(rgb)
    delta = hi - lo
    safe = np.maximum(delta, np.float32(1e-12))
    h = np.where(hi == r, (g - b) / safe, np.where(hi == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = (h / 6.0) % 1.0
    h[delta <= 0] = 0
    return h.astype(np.float32)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) colourfulness, on the 0..255 scale of the paper.

    rg = R - G, yb = (R + G)/2 - B; M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2).
    """
    r, g, b = (rgb[..., i].astype(np.float64) * 255.0 for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def laplacian(y: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian over the interior pixels."""
    return y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1] - 4 * y[1:-1, 1:-1]


def sharpness(y: np.ndarray) -> float:
    """Variance of the Laplacian of luma (Pech-Pacheco et al. 2000); 0 for a flat image."""
    if min(y.shape) < 3:
        return 0.0
    return float(laplacian(y.astype(np.float64)).var())


def noise_sigma(y: np.ndarray) -> float:
    """Immerkaer's (1996) estimate of the standard deviation of additive noise in luma.

    sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |y * N|, N = [[1,-2,1],[-2,4,-2],[1,-2,1]]:
    the kernel is the difference of two Laplacians, blind to flat areas and ramps.
    """
    if min(y.shape) < 3:
        return 0.0
    y = y.astype(np.float64)
    conv = (
        y[:-2, :-2] + y[:-2, 2:] + y[2:, :-2] + y[2:, 2:]
        - 2 * (y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:])
        + 4 * y[1:-1, 1:-1]
    )
    h, w = y.shape
    return float(math.sqrt(math.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def entropy(y: np.ndarray) -> float:
    """Shannon entropy in bits of the 256-level luma histogram (0 for a flat image, at most 8)."""
    levels = np.clip(np.round(y * 255), 0, 255).astype(np.int64)
    counts = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))


def gradients(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradients (gx, gy) over the interior pixels."""
    gx = (y[1:-1, 2:] - y[1:-1, :-2]) * 0.5
    gy = (y[2:, 1:-1] - y[:-2, 1:-1]) * 0.5
    return gx, gy


def soft_histogram(values: np.ndarray, weights: np.ndarray, bins: int, circular: bool) -> np.ndarray:
    """A histogram of ``values`` in [0, 1) with linear interpolation between neighbouring bins.

    Soft binning keeps the histogram continuous in the values, so a small hue or
    angle shift moves the vector a little instead of jumping a bin. Returns the
    weighted counts normalised to sum 1, or a uniform histogram when all
    weights are zero (no colour, no edges: "no preference").
    """
    pos = values.ravel() * bins - 0.5
    low = np.floor(pos)
    frac = pos - low
    low = low.astype(np.int64)
    high = low + 1
    if circular:
        low %= bins
        high %= bins
    else:
        low = np.clip(low, 0, bins - 1)
        high = np.clip(high, 0, bins - 1)
    w = weights.ravel().astype(np.float64)
    hist = np.bincount(low, w * (1 - frac), minlength=bins) + np.bincount(high, w * frac, minlength=bins)
    total = hist.sum()
    return hist / total if total > 0 else np.full(bins, 1.0 / bins)
