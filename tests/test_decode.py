"""Decoding and validating a frame: the fast JPEG path gives Pillow's pixels, and every file it does not
accept still gets Pillow's decision and reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.frames import NOT_AN_IMAGE, truncated_jpeg
from vision.camera import generate_frames
from vision.decode import FrameRejected, _decode_with_pillow, decode_frame


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("options", [{"quality": 90}, {"quality": 75, "progressive": True},
                                     {"quality": 95, "subsampling": 0}])
def test_fast_jpeg_path_gives_the_same_pixels_as_pillow(options):
    data = _encode(generate_frames("decode-line", 1, seed=5)[0].image, "JPEG", **options)
    fast, reference = decode_frame(data), _decode_with_pillow(data, 40_000_000)
    assert (fast.format, fast.width, fast.height) == ("JPEG", 160, 160)
    assert fast.pixels.dtype == np.uint8 and fast.pixels.shape == (160, 160, 3)
    # The same libjpeg-turbo decoder underneath; allow for a different build's rounding, no more.
    assert np.abs(fast.pixels.astype(int) - reference.pixels.astype(int)).max() <= 2


def test_jpegs_the_fast_path_does_not_take_are_decoded_by_pillow():
    cmyk = _encode(Image.new("CMYK", (40, 30), (0, 80, 160, 20)), "JPEG")
    grey = _encode(Image.new("L", (40, 30), 128), "JPEG")
    for data in (cmyk, grey):
        frame = decode_frame(data)
        assert frame.pixels.shape == (30, 40, 3) and frame.format == "JPEG"


def test_png_and_webp_decode_to_rgb():
    rgba = Image.new("RGBA", (32, 24), (10, 200, 30, 128))
    for fmt in ("PNG", "WEBP"):
        frame = decode_frame(_encode(rgba, fmt))
        assert frame.format == fmt and frame.pixels.shape == (24, 32, 3)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty file"),
    (truncated_jpeg(), "corrupt image"),
    (b"\xff\xd8\xff\xe0 not really a jpeg", "corrupt image"),
    (NOT_AN_IMAGE, "not an image"),
    (_encode(Image.new("RGB", (40, 40)), "GIF"), "unsupported image format GIF"),
    (_encode(Image.new("RGB", (8, 40)), "JPEG"), "image too small: 8x40"),
])
def test_unusable_files_are_rejected_with_their_reason(data, reason):
    with pytest.raises(FrameRejected, match=reason):
        decode_frame(data)


def test_an_oversized_jpeg_is_refused_from_its_header_before_decoding():
    data = _encode(Image.new("RGB", (400, 300)), "JPEG")
    with pytest.raises(FrameRejected, match="image too large: 400x300 exceeds 100000 pixels"):
        decode_frame(data, max_pixels=100_000)


def test_a_large_frame_decodes_at_the_models_scale_and_a_small_one_in_full():
    image = generate_frames("decode-line", 1, seed=6)[0].image
    camera = decode_frame(_encode(image.resize((1280, 720)), "JPEG", quality=90), min_side=128)
    # 1/4 scale keeps both sides at least 128; the record keeps the file's own size.
    assert camera.pixels.shape == (180, 320, 3) and (camera.width, camera.height) == (1280, 720)
    # 160 px cannot lose half a side: a 7/8 scale would cost a slower IDCT and other pixels, so in full.
    small = _encode(image, "JPEG", quality=90)
    assert decode_frame(small, min_side=128).pixels.shape == (160, 160, 3)
    assert np.array_equal(decode_frame(small, min_side=128).pixels, decode_frame(small).pixels)
