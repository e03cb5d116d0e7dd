"""Decoding and validating one frame. The single place that decides whether bytes are a usable image,
shared by the batch workflow's validation and the serving preprocessor, so the two never disagree.

Pillow is the authority on what is rejected and why. Well-formed RGB and greyscale JPEGs, nearly every
camera frame, take a fast path first: simplejpeg (libjpeg-turbo, strict about truncation) decodes
straight into an RGB array at well under half Pillow's cost (decode, convert and copy to numpy);
anything it does not accept (CMYK and YCCK included, whose Adobe inversion Pillow knows) goes through
Pillow, which decodes it or gives the reason.

Decoding amplifies: a 116 KB PNG can declare 6300x6300 pixels, 119 MB of RGB once decoded. So the
pixel count is checked from the header, before a byte of image data is decoded, against `max_pixels`
(settings: max_frame_pixels, 12 MP by default), and Pillow's own decompression-bomb limit is set to the
same number. Such a frame is rejected with its reason, like any other bad frame, never retried.
Animated images (APNG, animated WebP) are rejected: a frame is one picture, and decoding every frame
of an animation would multiply the cost again. 16-bit images are scaled to 8 bits, CMYK converted.

A JPEG bound for a model of a small input size need not be decoded at full size: libjpeg-turbo can
decode at 1/2, 1/4 or 1/8 scale in the DCT itself, at a fraction of the cost. With `min_side`, the fast
path decodes at the smallest scale whose shorter side is still at least `min_side` (a 1280x720 camera
frame for a 128 px model: 320x180, a sixteenth of the pixels); the frame's recorded width and height
stay those of the file. Frames no scale can shrink that far (the generated 160 px ones) decode in full.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Multi-picture JPEGs (cameras' stereo or preview images) are JPEGs: their primary image is the frame.
_JPEG_VARIANTS = {"MPO": "JPEG"}
MIN_SIDE = 16
# About 36 MB of RGB once decoded; settings.max_frame_pixels passes the configured value.
DEFAULT_MAX_PIXELS = 12_000_000
_JPEG_MAGIC = b"\xff\xd8\xff"
_FAST_JPEG_COLORSPACES = {"RGB", "YCbCr", "Gray"}
# Pillow modes of more than 8 bits a channel, and how many bits to drop to reach 8.
_WIDE_MODES = {"I;16": 8, "I;16L": 8, "I;16B": 8, "I;16N": 8, "I": 8}

Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


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


def _decode_jpeg_fast(data: bytes, max_pixels: int, min_side: int = 0) -> DecodedFrame | None:
    """Pixels of a well-formed RGB or greyscale JPEG, or None to let Pillow decide (CMYK, damaged,
    unusual files); at the smallest DCT scale keeping both sides at least `min_side` when it is given."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    _check_size(width, height, max_pixels)  # before decoding: a bomb is refused from its header
    if colorspace not in _FAST_JPEG_COLORSPACES:
        return None
    # libjpeg-turbo also has scales between 1/2 and 1 (7/8, 3/4, ...): they save little, cost a slower IDCT
    # than the full one (a 160 px frame for a 128 px model: 0.40 against 0.28 ms) and change the pixels, so
    # scale only where at least half of each side can go.
    scaled = min_side if min_side and min(width, height) >= 2 * min_side else 0
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_height=scaled, min_width=scaled)
    except ValueError:
        return None
    return DecodedFrame(pixels=pixels, format="JPEG", width=width, height=height)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 RGB pixels of any mode Pillow decodes: more than 8 bits a channel are scaled down, not
    clipped (a 16-bit PNG would otherwise turn white)."""
    shift = _WIDE_MODES.get(image.mode)
    if shift is not None:
        wide = np.asarray(image, dtype=np.uint32) >> shift
        grey = np.clip(wide, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _decode_with_pillow(data: bytes, max_pixels: int) -> DecodedFrame:
    if max_pixels != Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's bomb check says what ours says
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            fmt = _JPEG_VARIANTS.get(image.format or "", image.format or "")
            if fmt not in ACCEPTED_FORMATS:
                raise FrameRejected(f"unsupported image format {fmt or 'unknown'}: accepted are JPEG, PNG, WebP")
            width, height = image.size
            _check_size(width, height, max_pixels)
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":
                raise FrameRejected(f"animated image: {frames} frames; send each frame as its own still image")
            image.load()  # decodes every byte: truncated or corrupt data fails here
    except FrameRejected:
        raise
    except UnidentifiedImageError:
        raise FrameRejected("not an image: the file is not a JPEG, PNG or WebP") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check fired while reading the header; its message carries the pixel count.
        counted = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{counted.group(1)} pixels" if counted else "the image"
        raise FrameRejected(f"image too large: {size} exceeds {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise FrameRejected(f"corrupt image: {exc}") from None
    return DecodedFrame(pixels=_to_rgb(image), format=fmt, width=width, height=height)


def decode_frame(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 0) -> DecodedFrame:
    """The frame's uint8 RGB pixels, or FrameRejected with the reason. `min_side`: the pixels need not
    be larger than this a side (the model's input size): a JPEG may decode at a DCT scale down to it."""
    if not data:
        raise FrameRejected("empty file")
    if data.startswith(_JPEG_MAGIC):
        fast = _decode_jpeg_fast(data, max_pixels, min_side)
        if fast is not None:
            return fast
    return _decode_with_pillow(data, max_pixels)
