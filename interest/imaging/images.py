"""Robust image loading: any file a photographer or Flickr hands us becomes RGB, or a reason.

Every backbone and every characteristic sees images through :func:`load_image`,
so the same file always yields the same pixels: EXIF orientation applied,
embedded colour profiles converted to sRGB, transparency composited on white,
16-bit data scaled (not clipped) to 8 bits, animations reduced to their first
frame. A file that cannot be read raises :class:`BadImage` with a short
machine-readable ``reason`` that the embedding pipeline records in
``photos.status_reason``.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from interest.core.errors import InterestError, one_line
from interest.core.safe_files import MAX_IMAGE_BYTES, UnsafeFile, read_file

# Pillow's own decompression-bomb limit (about 89.5 megapixels, a 9459x9459 image).
DEFAULT_MAX_PIXELS = 89_478_485

REASONS = ("missing", "empty", "not_an_image", "too_many_pixels", "truncated", "corrupt", "unreadable", "not_a_file",
           "too_large", "path_outside")

class BadImage(InterestError):
    """An image file that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: str | os.PathLike | None, reason: str, detail: str = "") -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        self.detail = detail
        where = self.path or "<image>"
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{where}: {reason.replace('_', ' ')}{extra}; replace or remove this file")


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image file as an upright 8-bit RGB image.

    Raises :class:`BadImage` (an :class:`InterestError`) with ``reason``
    "missing", "empty", "not_an_image", "too_many_pixels" (more than
    ``max_pixels`` pixels, a decompression bomb), "truncated", "corrupt" or
    "unreadable". Limits above Pillow's own ``PIL.Image.MAX_IMAGE_PIXELS``
    also need that raised, since Pillow refuses such files first. The file
    is read by :func:`interest.core.safe_files.read_file`: a FIFO or a device is
    "not_a_file" and a file over ``MAX_IMAGE_BYTES`` "too_large", neither read.
    """
    try:
        data = read_file(path, max_bytes=MAX_IMAGE_BYTES)
    except UnsafeFile as exc:
        reason = "missing" if exc.reason == "file_not_found" else exc.reason
        raise BadImage(path, reason, str(exc).split(": ", 1)[-1]) from None
    return decode_image(data, max_pixels=max_pixels, name=path)


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | os.PathLike | None = None
) -> Image.Image:
    """Decode the bytes of an image file as :func:`load_image` does; ``name`` is used in errors."""
    if len(data) == 0:
        raise BadImage(name, "empty", "zero bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage(name, "not_an_image", "not a format Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(name, "too_many_pixels", str(exc).split(" could be")[0].rstrip(" ,")) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(name, "corrupt", one_line(exc)) from None
    # The header gives the size before any pixel is decoded: refuse bombs here.
    width, height = img.size
    if width * height > max_pixels:
        raise BadImage(name, "too_many_pixels", f"{width}x{height} is over the limit of {max_pixels} pixels")
    if width == 0 or height == 0:
        raise BadImage(name, "corrupt", f"{width}x{height} image")
    try:
        img.seek(0)  # animations: the first frame is the one a viewer shows first
        img.load()
    except Image.DecompressionBombError as exc:
        raise BadImage(name, "too_many_pixels", one_line(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = one_line(exc)
        reason = "truncated" if "truncated" in message.lower() or isinstance(exc, EOFError) else "corrupt"
        raise BadImage(name, reason, message) from None
    try:
        return _to_rgb(_upright(img))
    except (OSError, ValueError) as exc:
        raise BadImage(name, "unreadable", one_line(exc)) from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        rotated = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - Pillow raises many types on malformed EXIF
        return img
    if rotated is not img:
        # exif_transpose drops the ICC profile in some Pillow versions; keep it.
        if "icc_profile" in img.info:
            rotated.info["icc_profile"] = img.info["icc_profile"]
    return rotated


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit sRGB from any Pillow mode."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_high_depth_to_8bit(np.asarray(img), mode), "L").convert("RGB")
    profile = img.info.get("icc_profile")
    if profile and mode in ("RGB", "CMYK"):
        converted = _icc_to_srgb(img, profile)
        if converted is not None:
            return converted
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _high_depth_to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit or float grey levels scaled to 0..255 (Pillow's own convert clips them)."""
    values = np.nan_to_num(arr.astype(np.float64))
    peak = values.max(initial=0.0)
    if mode == "F":
        scaled = values * 255.0 if peak <= 1.0 else values
    elif mode.startswith("I;16") or peak > 255:
        scaled = values / 257.0  # 65535 -> 255
    else:  # a 32-bit container holding 8-bit levels
        scaled = values
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def _icc_to_srgb(img: Image.Image, profile: bytes) -> Image.Image | None:
    """Convert through the embedded ICC profile to sRGB; None when the profile is unusable or sRGB already."""
    transform = _srgb_transform(profile, img.mode)
    if transform is None:
        return None
    try:
        return ImageCms.applyTransform(img, transform)
    except Exception:  # noqa: BLE001 - a transform that fails falls back to Pillow's plain conversion
        return None


@functools.lru_cache(maxsize=32)
def _srgb_transform(profile: bytes, mode: str):
    """A cached ICC transform to sRGB (most files of a camera share one profile), or None."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        if ImageCms.getProfileDescription(source).strip().lower().startswith("srgb"):
            return None  # already sRGB: skip the work
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB")
    except Exception:  # noqa: BLE001 - a broken profile: Pillow's plain conversion instead
        return None


# ---------------------------------------------------------------- finding image files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix), sorted; hidden files and folders skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InterestError(f"{folder}: not a folder of images")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise InterestError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def expand_image_paths(items: list, *, strict: bool = True) -> list[Path]:
    """Files kept in the given order, folders replaced by their images (sorted).

    ``strict``: a missing path or an empty folder is an error; otherwise a
    missing file is passed on (its loading fails later, per image) and an empty
    folder contributes nothing.
    """
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            if strict:
                files.extend(find_images(path))
            else:
                try:
                    files.extend(find_images(path))
                except InterestError:
                    pass
        elif strict and not path.exists():
            raise InterestError(f"{path}: no such file or folder")
        else:
            files.append(path)
    if not files:
        raise InterestError("nothing to score: no image files found in the given inputs")
    return files
