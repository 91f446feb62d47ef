"""Render synthetic photos as real JPEG files whose pixels carry topic and appeal.

A photo's *topic* sets what a colour/texture backbone sees first: a dominant
pair of hues, a pattern (stripes, checks, rings or waves) at the topic's
orientation and spatial frequency. Its *common appeal* sets how well it is
"taken": appealing photos are contrasty, saturated and sharp; unappealing ones
washed out, blurred and noisy. Per-photo phase, offset, hue jitter, lighting
and a few random shapes make every image different.

Images are rendered in batches with numpy (one array per batch), then encoded
with Pillow; a few thousand small images take seconds.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import uniform_filter

from interest.core.progress import progress_bar

BATCH = 16  # images per numpy batch; fixed, because each batch has its own random stream
JPEG_QUALITY = 90


def appeal_level(appeal: np.ndarray) -> np.ndarray:
    """Map common appeal to a rendering quality level in (0, 1), by its z-score in the world."""
    appeal = np.asarray(appeal, dtype=float)
    z = (appeal - appeal.mean()) / (appeal.std() or 1.0)
    return 1.0 / (1.0 + np.exp(-1.5 * z))


def render_photos(
    root: str | os.PathLike,
    paths: list[str],
    *,
    topics: pd.DataFrame,
    topic: np.ndarray,
    appeal: np.ndarray,
    image_size: tuple[int, int] = (192, 144),
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Render one JPEG per photo to ``root/paths[i]``; return their sha256.

    ``paths`` are relative to ``root``, whose top folders (``images/``) must
    not exist yet: they are written whole, then renamed into place.

    ``topics`` has the visual parameters per topic (hue1, hue2, orientation,
    frequency, pattern); ``topic`` and ``appeal`` are per photo.
    """
    root = Path(root)
    n = len(paths)
    level = appeal_level(appeal)
    hashes: list[str] = []
    # Files go to a hidden staging folder that is renamed into place when all
    # are written: the images appear all at once or not at all, at one rename
    # instead of one per file.
    staging = Path(tempfile.mkdtemp(prefix=".render.", dir=root))
    try:
        for folder in sorted({(staging / p).parent for p in paths}):
            folder.mkdir(parents=True, exist_ok=True)
        with progress_bar(total=n, desc="render", unit="img", enabled=progress) as bar:
            for b, start in enumerate(range(0, n, BATCH)):
                stop = min(start + BATCH, n)
                rng = np.random.default_rng([seed, 0x1A6E, b])
                pixels = render_batch(topics, topic[start:stop], level[start:stop], image_size, rng)
                for i in range(stop - start):
                    data = encode_jpeg(pixels[i])
                    hashes.append(hashlib.sha256(data).hexdigest())
                    (staging / paths[start + i]).write_bytes(data)
                bar.update(stop - start)
        for top in sorted({Path(p).parts[0] for p in paths}):
            os.replace(staging / top, root / top)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return hashes


def encode_jpeg(pixels: np.ndarray) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def render_batch(
    topics: pd.DataFrame,
    topic: np.ndarray,
    level: np.ndarray,
    image_size: tuple[int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """A (B, H, W, 3) uint8 batch: topic pattern and colours, degraded by (1 - level)."""
    width, height = image_size
    b = len(topic)
    f32 = np.float32
    level = level.astype(f32)[:, None, None]
    x = (np.arange(width, dtype=f32) / width)[None, None, :]
    y = (np.arange(height, dtype=f32) / width)[None, :, None]

    theta = (topics["orientation"].to_numpy()[topic] + rng.normal(0, 0.08, b)).astype(f32)[:, None, None]
    freq = (topics["frequency"].to_numpy()[topic] * rng.uniform(0.9, 1.1, b)).astype(f32)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (2, b)).astype(f32)[:, :, None, None]
    u = np.cos(theta) * x + np.sin(theta) * y
    v = -np.sin(theta) * x + np.cos(theta) * y
    kind = topics["pattern"].to_numpy()[topic]
    pattern = np.empty((b, height, width), dtype=f32)
    two_pi = f32(2 * np.pi)
    for k, sel in ((k, np.flatnonzero(kind == k)) for k in range(4)):
        if len(sel) == 0:
            continue
        uu, vv, ff, p0, p1 = u[sel], v[sel], freq[sel], phase[0][sel], phase[1][sel]
        if k == 0:  # stripes
            pattern[sel] = np.sin(two_pi * ff * uu + p0)
        elif k == 1:  # checks
            pattern[sel] = np.sign(np.sin(two_pi * ff * uu + p0) * np.sin(two_pi * ff * vv + p1)) * 0.8
        elif k == 2:  # rings around an off-centre point
            cx = rng.uniform(0.2, 0.8, len(sel)).astype(f32)[:, None, None]
            cy = rng.uniform(0.15, 0.6, len(sel)).astype(f32)[:, None, None]
            pattern[sel] = np.sin(two_pi * ff * np.sqrt((x - cx) ** 2 + (y - cy) ** 2) + p0)
        else:  # waves
            pattern[sel] = np.sin(two_pi * ff * uu + p0 + 1.5 * np.sin(two_pi * ff / 3 * vv + p1))

    # Low appeal blurs the scene: blend the pattern towards a box blur of it.
    sharp = 0.2 + 0.8 * level
    pattern -= (1 - sharp) * (pattern - uniform_filter(pattern, size=(1, 5, 5), mode="nearest"))

    # Most work happens on (B, H, W) planes, a third of the (B, H, W, 3) image:
    # a pattern weight ``mix`` between the two topic colours and a luminance ``light``.
    contrast = 0.3 + 0.7 * level
    mix = 0.5 + 0.5 * contrast * pattern
    tilt = rng.uniform(-0.35, 0.35, b).astype(f32)[:, None, None]
    # Lighting: the pattern's own shading and a vertical gradient, like sky over ground.
    light = (1 + 0.5 * contrast * pattern) * (f32(0.8) + f32(0.8) * tilt * (y * (width / height) - 0.5))
    # Two random shapes in one of the topic's hues, light or dark, their edges
    # as soft as the rest of the photo.
    edge = 2 + 30 * sharp**2
    for _ in range(2):
        cx, cy = rng.uniform(0, 1, b), rng.uniform(0, height / width, b)
        rx, ry = rng.uniform(0.02, 0.22, b), rng.uniform(0.02, 0.22, b)
        dist = ((x - cx[:, None, None].astype(f32)) / rx[:, None, None].astype(f32)) ** 2 + (
            (y - cy[:, None, None].astype(f32)) / ry[:, None, None].astype(f32)
        ) ** 2
        inside = np.clip((1 - dist) * edge, 0, 1)
        mix += inside * (rng.integers(0, 2, b).astype(f32)[:, None, None] - mix)
        light += inside * (rng.uniform(0.15, 1.1, b).astype(f32)[:, None, None] - light)

    # Low appeal also means desaturated, hazy and noisy; never so much that the
    # topic's hues and pattern vanish (user heads need them).
    saturation = (0.45 + 0.55 * level.ravel())[:, None]
    hue1 = topics["hue1"].to_numpy()[topic] + rng.normal(0, 0.015, b)
    hue2 = topics["hue2"].to_numpy()[topic] + rng.normal(0, 0.015, b)
    c1 = _desaturate(_hsv_to_rgb(hue1, 0.9, rng.uniform(0.75, 0.95, b)), saturation)
    c2 = _desaturate(_hsv_to_rgb(hue2, 0.85, rng.uniform(0.55, 0.8, b)), saturation)
    # Uniform noise with the intended standard deviation: several times cheaper than normal.
    noise_sd = 0.006 + 0.025 * (1 - level)
    light += noise_sd * f32(np.sqrt(12)) * (rng.random(light.shape, dtype=f32) - f32(0.5))
    haze = 0.3 * (1 - level)
    scale, offset = 255 * (1 - haze), 255 * f32(0.8) * haze + f32(0.5)
    # Compose channel by channel: broadcasting over a trailing axis of 3 is slow in numpy.
    out = np.empty((b, height, width, 3), dtype=np.uint8)
    for ch in range(3):
        plane = c1[:, ch, None, None] + (c2 - c1)[:, ch, None, None] * mix
        plane *= light
        plane *= scale
        plane += offset
        np.clip(plane, 0, 255, out=plane)
        out[..., ch] = plane
    return out


def _desaturate(rgb: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """Blend (n, 3) colours towards their grey by (1 - saturation)."""
    grey = rgb.mean(axis=1, keepdims=True)
    return (grey + saturation * (rgb - grey)).astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: float | np.ndarray, v: float | np.ndarray) -> np.ndarray:
    """(n, 3) float32 RGB in [0, 1] from hue in turns, saturation and value."""
    h = np.asarray(h, dtype=float) % 1.0
    s = np.broadcast_to(np.asarray(s, dtype=float), h.shape)
    v = np.broadcast_to(np.asarray(v, dtype=float), h.shape)
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6) % 6
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return rgb.astype(np.float32)
