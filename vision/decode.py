"""Decoding and validating one frame. The single place that decides whether bytes are a usable image,
shared by the batch workflow's validation and the serving preprocessor, so the two never disagree.

Pillow is the authority on what is rejected and why. Well-formed JPEGs, nearly every camera frame,
take a fast path first: simplejpeg (libjpeg-turbo, strict about truncation) decodes straight into an
RGB array at well under half Pillow's cost (decode, convert and copy to numpy); anything it does not
accept goes through Pillow, which decodes it or gives the reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MIN_SIDE = 16
_JPEG_MAGIC = b"\xff\xd8\xff"


class FrameRejected(ValueError):
    """The bytes are not a frame we can classify; the message is the reason recorded for the frame."""


@dataclass
class DecodedFrame:
    pixels: np.ndarray  # uint8 HWC RGB
    format: str
    width: int
    height: int


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FrameRejected(f"image too large: {width}x{height} exceeds {max_pixels} pixels")
    if min(width, height) < MIN_SIDE:
        raise FrameRejected(f"image too small: {width}x{height}, at least {MIN_SIDE}px a side")


def _decode_jpeg_fast(data: bytes, max_pixels: int) -> DecodedFrame | None:
    """Pixels of a well-formed JPEG, or None to let Pillow decide (CMYK, damaged, unusual files)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    _check_size(width, height, max_pixels)  # before decoding: a bomb is refused from its header
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None
    return DecodedFrame(pixels=pixels, format="JPEG", width=width, height=height)


def _decode_with_pillow(data: bytes, max_pixels: int) -> DecodedFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or ""
            if fmt not in ACCEPTED_FORMATS:
                raise FrameRejected(f"unsupported image format {fmt or 'unknown'}: accepted are JPEG, PNG, WebP")
            width, height = image.size
            _check_size(width, height, max_pixels)
            image.load()  # decodes every byte: truncated or corrupt data fails here
    except FrameRejected:
        raise
    except UnidentifiedImageError:
        raise FrameRejected("not an image: the file is not a JPEG, PNG or WebP") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FrameRejected(f"corrupt image: {exc}") from None
    pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return DecodedFrame(pixels=pixels, format=fmt, width=width, height=height)


def decode_frame(data: bytes, max_pixels: int = 40_000_000) -> DecodedFrame:
    if not data:
        raise FrameRejected("empty file")
    if data.startswith(_JPEG_MAGIC):
        fast = _decode_jpeg_fast(data, max_pixels)
        if fast is not None:
            return fast
    return _decode_with_pillow(data, max_pixels)
