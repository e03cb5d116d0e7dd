"""How webhook bodies are signed, and how a receiver checks them.

`X-Sightline-Signature: sha256=<hex HMAC-SHA256 of the raw request body, keyed with the subscription's
secret>`. The body itself carries the delivery id and a timestamp equal to `X-Sightline-Timestamp`, so
the signature covers both: a receiver rejects a body whose timestamp is stale (a replay) and dedupes by
delivery id (a retry after a response that was lost).

While a rotated secret's overlap window lasts the header lists two signatures, the new secret's first:
`sha256=<new>,sha256=<old>`. A receiver accepts the body when any one of them matches its secret
(`verify` does), so it may switch to the new secret at any moment of the window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

SIGNATURE_HEADER = "X-Sightline-Signature"
TIMESTAMP_HEADER = "X-Sightline-Timestamp"
DELIVERY_HEADER = "X-Sightline-Delivery"
EVENT_HEADER = "X-Sightline-Event"
ATTEMPT_HEADER = "X-Sightline-Attempt"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], body: bytes) -> str:
    """The header value for a body signed with each secret, in order (current first)."""
    return ",".join(sign(secret, body) for secret in secrets)


def verify(secret: str, body: bytes, signature: str | None, *, max_age_s: float | None = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: constant-time compare against each listed signature, then (optionally)
    check the body's timestamp is fresh."""
    expected = sign(secret, body).encode()
    candidates = [s.strip().encode() for s in (signature or "").split(",") if s.strip().isascii()]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        return False
    if max_age_s is None:
        return True
    try:
        sent = float(json.loads(body)["timestamp"])
    except (ValueError, KeyError, TypeError):
        return False
    return abs((time.time() if now is None else now) - sent) <= max_age_s


def encode_body(delivery_id: str, event: str, timestamp: int, data: dict) -> bytes:
    """The JSON body every delivery sends: an envelope around the event's data."""
    envelope = {"delivery_id": delivery_id, "event": event, "timestamp": timestamp, "data": data}
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True, default=str).encode()
