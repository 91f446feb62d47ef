"""Real image files for the image-feature tests: odd modes, EXIF orientations and a corpus of bad files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Pillow's exif_transpose operation per EXIF orientation; a file stored with
# the inverse operation applied must load as the upright image.
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def photo_like(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """An asymmetric RGB test picture: gradients, a stripe pattern and a corner patch."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    r = 255 * x * np.ones_like(y)
    g = 255 * y * np.ones_like(x)
    b = 127 + 100 * np.sin(2 * np.pi * (6 * x + 2 * y))
    arr = np.stack([r, g, b], axis=2) + rng.normal(0, 6, (height, width, 3))
    arr[: height // 4, : width // 5] = (250, 30, 30)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def save_with_orientation(upright: Image.Image, path: Path, orientation: int, fmt: str = "PNG") -> Path:
    """Save ``upright`` as stored pixels plus an EXIF orientation tag that restores it."""
    stored = upright.transpose(STORED_AS[orientation]) if orientation != 1 else upright.copy()
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def png_bytes(arr: np.ndarray, bit_depth: int = 16, colour_type: int = 2, width: int | None = None,
              height: int | None = None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB); width/height may lie about the data."""
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + arr[row].astype(dtype).tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width or w, height or h, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def bad_corpus(folder: Path) -> dict[str, str]:
    """Write one file of each bad kind into ``folder``; returns {file name: expected reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(photo_like(64, 48, seed=3))
    buf = io.BytesIO()
    photo_like(64, 48, seed=4).save(buf, "PNG")
    png = buf.getvalue()
    rng = np.random.default_rng(7)
    files = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (good[: len(good) // 2], "truncated"),
        # The compressed pixel data overwritten in the middle: the zlib stream breaks.
        "corrupt.png": (png[:60] + b"\x00" * 400 + png[460:], "corrupt"),
        "not_an_image.jpg": (b"this is a text file, not a picture\n" * 20, "not_an_image"),
        "random_bytes.png": (bytes(rng.integers(0, 256, 4000, dtype=np.uint8)), "not_an_image"),
        # A header that claims 100000 x 100000 pixels: refused before any decoding.
        "bomb.png": (png_bytes(np.zeros((2, 2, 3), np.uint16), width=100_000, height=100_000), "too_many_pixels"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}
