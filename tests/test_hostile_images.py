"""A corpus of hostile images, each rejected by vision.decode.decode_frame with its reason or handled:
decompression bombs refused from their headers (never decoded), truncated and empty files, CMYK and
16-bit images converted correctly, animations refused, polyglots decoded as the image they start with
or refused."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageFile

from tests.frames import jpeg_frame
from vision import decode
from vision.decode import DEFAULT_MAX_PIXELS, FrameRejected, decode_frame


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 6300) -> bytes:
    """A real, valid PNG of side x side black RGB pixels: about 116 KB that decode to side² x 3 bytes
    (6300: 119 MB). Compressed row by row, so making it holds one row in memory."""
    row = bytes(1 + side * 3)  # filter byte 0, then black pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(_encode(Image.new("RGB", (32, 32), (90, 120, 150)), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def nothing_decodes(monkeypatch):
    """Fail the test if any image data gets decoded: a bomb must be refused from its header."""

    def refuse(*args, **kwargs):
        raise AssertionError("image data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", refuse)


def test_the_png_bomb_of_the_issue_is_what_it_claims(monkeypatch):
    bomb = png_bomb()
    assert len(bomb) < 200_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # to read its header here
    image = Image.open(io.BytesIO(bomb))
    assert image.size == (6300, 6300) and 6300 * 6300 * 3 > 100 * 2**20


@pytest.mark.parametrize(("name", "data"), [
    ("png 6300x6300 (116 KB -> 119 MB)", png_bomb()),
    ("jpeg declaring 60000x60000", jpeg_declaring(60000, 60000)),
    ("jpeg declaring 4000x3001", jpeg_declaring(4000, 3001)),
])
def test_decompression_bombs_are_refused_from_their_header(name, data, nothing_decodes):
    with pytest.raises(FrameRejected, match="image too large"):
        decode_frame(data)


def test_the_default_cap_is_12_megapixels_and_pillow_agrees():
    assert DEFAULT_MAX_PIXELS == 12_000_000
    decode_frame(jpeg_frame(1))
    decode_frame(_encode(Image.new("RGB", (40, 40)), "PNG"))  # through Pillow
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


def test_a_frame_of_exactly_the_cap_is_accepted():
    for fmt in ("PNG", "JPEG"):
        assert decode_frame(_encode(Image.new("RGB", (40, 25)), fmt), max_pixels=1000).width == 40


def test_a_configured_cap_applies_to_every_format():
    for fmt in ("PNG", "WEBP"):
        with pytest.raises(FrameRejected, match=r"image too large: .* exceeds 1000 pixels"):
            decode_frame(_encode(Image.new("RGB", (64, 64)), fmt), max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == 1000
    decode_frame(_encode(Image.new("RGB", (40, 40)), "PNG"))  # back to the default for the next test
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


def _truncated_png() -> bytes:
    data = _encode(Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48), "PNG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("zero bytes", b"", "empty file"),
    ("truncated jpeg", jpeg_frame(3, 128)[:700], "corrupt image"),
    ("truncated png", _truncated_png(), "corrupt image"),
    ("png signature only", b"\x89PNG\r\n\x1a\n", "not an image"),
    ("html behind a jpeg magic", b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>", "corrupt image"),
    ("gif/javascript polyglot", b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=alert(1);//;", "not an image|unsupported"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "not an image"),
    ("one pixel", _encode(Image.new("RGB", (1, 1)), "PNG"), "image too small"),
])
def test_broken_and_hostile_files_are_rejected_with_their_reason(name, data, reason):
    with pytest.raises(FrameRejected, match=reason):
        decode_frame(data)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_are_rejected(fmt):
    frames = [Image.new("RGB", (32, 32), (i * 60, 0, 0)) for i in range(3)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(FrameRejected, match="animated image: 3 frames"):
        decode_frame(data)


def test_cmyk_jpeg_is_converted_as_pillow_converts_it():
    image = Image.new("CMYK", (48, 32), (0, 255, 255, 0))  # red in ink
    frame = decode_frame(_encode(image, "JPEG", quality=95))
    assert frame.format == "JPEG" and frame.pixels.shape == (32, 48, 3) and frame.pixels.dtype == np.uint8
    red, green, blue = frame.pixels[16, 24].astype(int)
    assert red > 240 and green < 15 and blue < 15


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    ramp = np.array([[0, 256, 32768, 65535] * 8] * 32, dtype=np.uint16)
    frame = decode_frame(_encode(Image.fromarray(ramp), "PNG"))
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (32, 32, 3)
    assert list(frame.pixels[0, :4, 0]) == [0, 1, 128, 255]


def test_16_bit_rgb_png_is_decoded_to_8_bits():
    pixels = np.zeros((32, 32, 3), dtype=np.uint16)
    pixels[:, :, 2] = 40000  # OpenCV writes BGR: the red channel
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    frame = decode_frame(encoded.tobytes())
    assert frame.format == "PNG" and tuple(frame.pixels[0, 0]) == (156, 0, 0)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "L", "1"])
def test_other_modes_are_converted_to_rgb(mode):
    frame = decode_frame(_encode(Image.new(mode, (20, 20)), "PNG"))
    assert frame.pixels.shape == (20, 20, 3) and frame.pixels.dtype == np.uint8


@pytest.mark.parametrize("tail", [b"<html><script>alert(1)</script></html>", b"PK\x03\x04" + bytes(64)])
def test_an_image_with_something_appended_decodes_as_the_image(tail):
    for data, fmt in ((jpeg_frame(4), "JPEG"), (_encode(Image.new("RGB", (24, 24), (1, 2, 3)), "PNG"), "PNG")):
        frame = decode_frame(data + tail)
        assert frame.format == fmt and frame.pixels.ndim == 3


def test_multi_picture_jpeg_takes_its_primary_image():
    primary, preview = Image.new("RGB", (40, 30), (200, 10, 10)), Image.new("RGB", (20, 15), (10, 200, 10))
    data = _encode(primary, "MPO", save_all=True, append_images=[preview])
    for take in (decode_frame, lambda d: decode._decode_with_pillow(d, DEFAULT_MAX_PIXELS)):
        frame = take(data)
        assert frame.format == "JPEG" and frame.pixels.shape == (30, 40, 3)
