"""Image formats from their first bytes, without decoding: what the API may tell from a header alone."""

from __future__ import annotations


def sniff_image_type(data: bytes) -> str:
    """The media type the leading bytes announce, or application/octet-stream."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
