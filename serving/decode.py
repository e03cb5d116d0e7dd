"""Decoding and validating one frame. The single place that decides whether bytes are a usable image,
shared by the batch workflow's validation and the serving preprocessor, so the two never disagree."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MIN_SIDE = 16


class FrameRejected(ValueError):
    """The bytes are not a frame we can classify; the message is the reason recorded for the frame."""


@dataclass
class DecodedFrame:
    image: Image.Image  # RGB, fully loaded
    format: str
    width: int
    height: int


def decode_frame(data: bytes, max_pixels: int = 40_000_000) -> DecodedFrame:
    if not data:
        raise FrameRejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or ""
            if fmt not in ACCEPTED_FORMATS:
                raise FrameRejected(f"unsupported image format {fmt or 'unknown'}: accepted are JPEG, PNG, WebP")
            width, height = image.size
            if width * height > max_pixels:
                raise FrameRejected(f"image too large: {width}x{height} exceeds {max_pixels} pixels")
            image.load()  # decodes every byte: truncated or corrupt data fails here
    except FrameRejected:
        raise
    except UnidentifiedImageError:
        raise FrameRejected("not an image: the file is not a JPEG, PNG or WebP") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FrameRejected(f"corrupt image: {exc}") from None
    if min(width, height) < MIN_SIDE:
        raise FrameRejected(f"image too small: {width}x{height}, at least {MIN_SIDE}px a side")
    return DecodedFrame(image=image.convert("RGB"), format=fmt, width=width, height=height)
