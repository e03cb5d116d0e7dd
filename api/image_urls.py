"""Time-limited image URLs: the API serves the bytes itself at a URL carrying an expiry and an HMAC of
(frame id, expiry) under the secret key. Never a presigned URL of the store: in production the object
store is reachable only inside the deployment (docker-compose publishes the API alone)."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

# On every image the API serves: the browser must take the declared type (a polyglot file is never
# sniffed into HTML or script), and a document opened from it runs nothing.
IMAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}


def _signature(secret: str, frame_id: str, expires: int) -> str:
    return hmac.new(secret.encode(), f"{frame_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


def image_url(secret: str, base_url: str, frame_id: str, ttl_s: int) -> tuple[str, int]:
    expires = int(time.time()) + ttl_s
    query = urlencode({"expires": expires, "signature": _signature(secret, frame_id, expires)})
    return f"{base_url.rstrip('/')}/v1/frames/{frame_id}/image?{query}", expires


class MalformedSignature(ValueError):
    """A signature that cannot be one of ours (not ASCII): the request is bad (400), not forged (403)."""


def check_signature(secret: str, frame_id: str, expires: int, signature: str) -> str | None:
    """None when the URL is good; otherwise the reason it is refused. MalformedSignature for a
    signature that is not even ASCII."""
    if not signature.isascii():
        raise MalformedSignature("the image URL signature is malformed")
    if expires < time.time():
        return "the image URL has expired"
    if not hmac.compare_digest(signature, _signature(secret, frame_id, expires)):
        return "the image URL signature is not valid"
    return None
