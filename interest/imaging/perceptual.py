"""The ``perceptual/v1`` statistics: colour, tone, sharpness, noise, texture orientation and spatial frequency.

Weight-free and offline, on a fixed 128x128 centre crop (90 dimensions;
docs/features.md lists them). Pure numpy and Pillow. Every statistic is
standardised with fixed constants, never with the statistics of a
collection, so a photo's vector does not depend on the other photos embedded
with it. The image pipeline's decoder runs :func:`perceptual_vector` in its
workers; :class:`interest.imaging.backbones.PerceptualBackbone` is the
backbone over it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from interest.imaging import pixels

PERCEPTUAL_SIZE = 128
HUE_BINS, ORIENT_BINS, LUMA_BINS = 24, 12, 8
RADIAL_EDGES = (1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 0.75)  # cycles per pixel
ORIENTED_EDGES = (1 / 128, 1 / 32, 1 / 16, 1 / 8, 0.75)
ORIENTATIONS = 4
# Weight of each group in the vector. Topic cues (hue, pattern orientation and
# frequency) dominate the geometry so that k-means finds subjects; appeal cues
# (tone, sharpness, noise) are there in full for a regression to read.
WEIGHTS = {"hue": 1.5, "orientation": 1.0, "oriented_energy": 1.0, "radial_energy": 0.7, "luma_hist": 0.5,
           "scalars": 1.0, "layout": 0.5}
# (name, centre, scale): fixed standardisation of the scalar statistics, set
# from the typical range of photographs; values beyond 5 scales are clipped.
SCALARS = (
    ("brightness", 0.45, 0.2),
    ("contrast", 0.2, 0.1),
    ("luma_p05", 0.08, 0.1),
    ("luma_p50", 0.45, 0.2),
    ("luma_p95", 0.85, 0.12),
    ("saturation_mean", 0.35, 0.2),
    ("saturation_sd", 0.2, 0.1),
    ("colourfulness", 40.0, 30.0),
    ("log10_sharpness", -2.5, 1.0),
    ("log10_noise", -1.8, 0.5),
    ("entropy", 6.8, 0.8),
    ("log10_gradient", -1.6, 0.5),
    ("rg_mean", 0.0, 0.15),
    ("yb_mean", 0.0, 0.15),
    ("opponent_sd", 0.1, 0.08),
)
PERCEPTUAL_DIM = HUE_BINS + ORIENT_BINS + ORIENTATIONS * (len(ORIENTED_EDGES) - 1) + (len(RADIAL_EDGES) - 1) + \
    LUMA_BINS + len(SCALARS) + 9

#: the image preparation of ``perceptual/v1``, recorded with every embedding table and bundle
PERCEPTUAL_PREPROCESSING = {
    "kind": "perceptual",
    "version": 1,
    "size": PERCEPTUAL_SIZE,
    "resize": "shorter side to size (bilinear, antialiased), centre crop",
    "loader": "interest.features.images.load_image",
}


def _spectrum_grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = np.fft.fftfreq(size)
    fx, fy = np.meshgrid(f, f)
    radius = np.hypot(fx, fy)
    angle = np.arctan2(fy, fx) % np.pi
    window = np.outer(np.hanning(size), np.hanning(size)).astype(np.float32)
    return radius, angle, window


_RADIUS, _ANGLE, _WINDOW = _spectrum_grid(PERCEPTUAL_SIZE)
def _band_index(edges: tuple[float, ...], orientations: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """(flat spectrum positions inside the bands, their bin index, number of bins): fixed per size."""
    band = np.digitize(_RADIUS, edges) - 1  # -1 (DC) and len(edges) - 1 (beyond the last edge) are dropped
    n_bands = len(edges) - 1
    keep = np.flatnonzero(((band >= 0) & (band < n_bands)).ravel())
    index = band.ravel()[keep]
    if orientations > 1:
        orient = np.round(_ANGLE / (np.pi / orientations)).astype(np.int64) % orientations
        index = index * orientations + orient.ravel()[keep]
    return keep, index, n_bands * orientations


_RADIAL = _band_index(RADIAL_EDGES)
_ORIENTED = _band_index(ORIENTED_EDGES, ORIENTATIONS)


def _band_fractions(power: np.ndarray, bands: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    keep, index, n_bins = bands
    energy = np.bincount(index, power.ravel()[keep], minlength=n_bins)
    total = energy.sum()
    return energy / total if total > 0 else np.full(n_bins, 1.0 / n_bins)


def _hellinger(p: np.ndarray) -> np.ndarray:
    """Square-root of a distribution, centred on the uniform one: unit-scale, 0 for "no preference"."""
    return np.sqrt(p) - np.sqrt(1.0 / len(p))


def perceptual_statistics(img: Image.Image) -> dict[str, Any]:
    """The raw statistics behind ``perceptual/v1``: histograms (arrays) and scalars, before weighting."""
    rgb = pixels.to_array(pixels.center_square(img, PERCEPTUAL_SIZE))
    y = pixels.luma(rgb)
    sat = pixels.saturation(rgb)
    value = pixels.value(rgb)
    gx, gy = pixels.gradients(y)
    magnitude = np.hypot(gx, gy)
    angle = (np.arctan2(gy, gx) % np.pi) / np.pi
    power = np.abs(np.fft.fft2((y - y.mean()) * _WINDOW)) ** 2
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    p05, p50, p95 = np.percentile(y, [5, 50, 95])
    cells = [c.mean() for rows in np.array_split(y, 3, axis=0) for c in np.array_split(rows, 3, axis=1)]
    return {
        "hue": pixels.soft_histogram(pixels.hue(rgb), sat * value, HUE_BINS, circular=True),
        "orientation": pixels.soft_histogram(np.minimum(angle, 0.999999), magnitude, ORIENT_BINS, circular=True),
        "oriented_energy": _band_fractions(power, _ORIENTED),
        "radial_energy": _band_fractions(power, _RADIAL),
        "luma_hist": pixels.soft_histogram(np.clip(y, 0, 0.999999), np.ones_like(y), LUMA_BINS, circular=False),
        "layout": np.asarray(cells, dtype=np.float64) - float(y.mean()),
        "brightness": float(y.mean()),
        "contrast": float(y.std()),
        "luma_p05": float(p05),
        "luma_p50": float(p50),
        "luma_p95": float(p95),
        "saturation_mean": float(sat.mean()),
        "saturation_sd": float(sat.std()),
        "colourfulness": pixels.colourfulness(rgb),
        "log10_sharpness": math.log10(pixels.sharpness(y) + 1e-6),
        "log10_noise": math.log10(pixels.noise_sigma(y) + 1e-4),
        "entropy": pixels.entropy(y),
        "log10_gradient": math.log10(float(magnitude.mean()) + 1e-4),
        "rg_mean": float(rg.mean()),
        "yb_mean": float(yb.mean()),
        "opponent_sd": float(math.hypot(rg.std(), yb.std())),
    }


def perceptual_vector(img: Image.Image) -> np.ndarray:
    """The weighted, standardised (not yet L2-normalised) ``perceptual/v1`` vector of one image."""
    stats = perceptual_statistics(img)
    parts = [WEIGHTS[name] * _hellinger(stats[name])
             for name in ("hue", "orientation", "oriented_energy", "radial_energy", "luma_hist")]
    z = np.array([(stats[name] - centre) / scale for name, centre, scale in SCALARS])
    parts.append(WEIGHTS["scalars"] * np.clip(z, -5, 5) / math.sqrt(len(SCALARS)))
    parts.append(WEIGHTS["layout"] * np.clip(stats["layout"] / 0.15, -5, 5) / 3.0)
    return np.concatenate(parts).astype(np.float32)
