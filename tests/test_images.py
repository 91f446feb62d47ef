"""interest.imaging.images: any file becomes upright 8-bit RGB, or a BadImage with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from image_files import (
    bad_corpus,
    jpeg_bytes,
    photo_like,
    png_bytes,
    save_with_orientation,
)
from PIL import Image, ImageCms

from interest.core.errors import InterestError
from interest.imaging.images import BadImage, decode_image, load_image


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_gives_the_upright_pixels(tmp_path, orientation):
    upright = photo_like(40, 24)
    path = save_with_orientation(upright, tmp_path / f"o{orientation}.png", orientation)
    stored = Image.open(path)
    if orientation in (5, 6, 7, 8):
        assert stored.size == (24, 40)  # the file really holds the turned pixels
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (40, 24)
    assert np.array_equal(np.asarray(loaded), np.asarray(upright))


def test_cmyk_jpeg_converts_to_the_right_colour(tmp_path):
    rgb = Image.new("RGB", (32, 32), (200, 60, 30))
    path = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(path, "JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"
    loaded = np.asarray(load_image(path)).astype(int)
    assert np.abs(loaded - (200, 60, 30)).max() <= 6


def test_srgb_tagged_file_loads_unchanged(tmp_path):
    # Pillow ships no wide-gamut profile to convert from; an sRGB-tagged file must load unchanged.
    img = photo_like(32, 32)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img.save(tmp_path / "tagged.png", icc_profile=profile)
    loaded = np.asarray(load_image(tmp_path / "tagged.png")).astype(int)
    assert np.abs(loaded - np.asarray(img).astype(int)).max() <= 2


def test_la_and_rgba_composite_on_white(tmp_path):
    arr = np.zeros((10, 20, 2), np.uint8)
    arr[..., 0] = 100
    arr[:, 10:, 1] = 255  # right half opaque grey, left half fully transparent
    Image.fromarray(arr, "LA").save(tmp_path / "la.png")
    loaded = np.asarray(load_image(tmp_path / "la.png"))
    assert (loaded[:, :10] == 255).all()
    assert (loaded[:, 10:] == 100).all()


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    loaded = np.asarray(load_image(tmp_path / "p.png"))
    assert tuple(loaded[0, 0]) == (255, 0, 0)
    assert tuple(loaded[4, 4]) == (255, 255, 255)  # transparent blue -> white background


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    loaded = np.asarray(load_image(tmp_path / "i16.png"))
    assert loaded[0, :, 0].tolist() == [0, 64, 128, 255]
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_16bit_rgb_png(tmp_path):
    arr = np.array([[[65535, 0, 32768], [256, 512, 1024]]], dtype=np.uint16)
    (tmp_path / "rgb16.png").write_bytes(png_bytes(arr, bit_depth=16, colour_type=2))
    loaded = np.asarray(load_image(tmp_path / "rgb16.png")).astype(int)
    assert np.abs(loaded - np.round(arr / 257)).max() <= 1


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_the_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=50, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(path).n_frames == 3
    loaded = np.asarray(load_image(path)).astype(int)
    assert np.abs(loaded - (255, 0, 0)).max() <= 2


def test_each_bad_file_has_its_reason(tmp_path):
    expected = bad_corpus(tmp_path)
    for name, reason in expected.items():
        with pytest.raises(BadImage) as info:
            load_image(tmp_path / name)
        assert info.value.reason == reason, name
        message = str(info.value)
        assert "\n" not in message and name in message
        assert isinstance(info.value, InterestError)


def test_missing_file_and_pixel_limit(tmp_path):
    with pytest.raises(BadImage) as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.reason == "missing"
    data = jpeg_bytes(photo_like(100, 100))
    assert decode_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(BadImage) as info:
        decode_image(data, max_pixels=9_999, name="big.jpg")
    assert info.value.reason == "too_many_pixels" and "big.jpg" in str(info.value)


def test_decode_image_matches_load_image(tmp_path):
    img = photo_like()
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(img))
    assert np.array_equal(np.asarray(decode_image(path.read_bytes())), np.asarray(load_image(path)))
