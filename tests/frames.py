"""Small image files for tests, made on the spot."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw


def jpeg_frame(seed: int = 0, size: int = 96) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (rng.randrange(60, 200), rng.randrange(60, 200), rng.randrange(60, 200)))
    draw = ImageDraw.Draw(image)
    draw.rectangle((rng.randrange(size // 4), rng.randrange(size // 4), size - 10, size - 10), fill=(200, 200, 190))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def noise_png(seed: int = 0, size: int = 1024) -> bytes:
    """A frame that takes real time to decode (incompressible noise)."""
    image = Image.frombytes("RGB", (size, size), random.Random(seed).randbytes(size * size * 3))
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()



def truncated_jpeg(seed: int = 0) -> bytes:
    """A real JPEG cut in half, as a camera link dropping mid-transfer leaves it."""
    data = jpeg_frame(seed, size=128)
    return data[: len(data) // 2]

NOT_AN_IMAGE = b"camera_id,frame\nline-1,42\n"


def multipart(frames: list[tuple[str, bytes, str]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("frames", f) for f in frames]
