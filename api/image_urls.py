"""Time-limited image URLs. The S3 store presigns its own; for the directory store the API serves the
bytes itself at a URL carrying an expiry and an HMAC of (object key, expiry) under the secret key."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from infra.store import ObjectStore


def _signature(secret: str, frame_id: str, expires: int) -> str:
    return hmac.new(secret.encode(), f"{frame_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


def image_url(store: ObjectStore, secret: str, base_url: str, frame_id: str, object_key: str,
              ttl_s: int) -> tuple[str, int]:
    from datetime import timedelta

    expires = int(time.time()) + ttl_s
    presigned = store.url(object_key, timedelta(seconds=ttl_s))
    if presigned:
        return presigned, expires
    query = urlencode({"expires": expires, "signature": _signature(secret, frame_id, expires)})
    return f"{base_url.rstrip('/')}/v1/frames/{frame_id}/image?{query}", expires


def check_signature(secret: str, frame_id: str, expires: int, signature: str) -> str | None:
    """None when the URL is good; otherwise the reason it is refused."""
    if expires < time.time():
        return "the image URL has expired"
    if not hmac.compare_digest(signature, _signature(secret, frame_id, expires)):
        return "the image URL signature is not valid"
    return None
