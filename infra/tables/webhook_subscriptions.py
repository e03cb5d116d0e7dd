"""Webhook subscriptions: one row per URL with its own random signing secret.

A URL given with a batch gets a subscription the first time it is seen (`ensure_subscription`). The
receiver learns the secret from whoever registered the URL: `sightline webhooks create --url U` prints
it (creating the subscription, or showing the existing one's), `rotate` replaces it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

from psycopg.rows import dict_row

SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    url: str
    secret: str
    created_at: datetime
    rotated_at: datetime | None
    disabled_at: datetime | None


def validate_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host, or ValueError with the reason (the API answers 422)."""
    url = (url or "").strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"webhook URL {url!r} must be an absolute http:// or https:// URL")
    if len(url) > 2048:
        raise ValueError("webhook URL is longer than 2048 characters")
    if parsed.username or parsed.password:
        raise ValueError("webhook URL must not carry credentials; the signature authenticates the sender")
    return url


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


async def _one(conn, sql: str, params: tuple) -> Subscription | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    return Subscription(**row) if row else None


_COLUMNS = "subscription_id, url, secret, created_at, rotated_at, disabled_at"


async def ensure_subscription(conn, url: str) -> tuple[Subscription, bool]:
    """The URL's subscription, created with a fresh secret if missing; (subscription, created).
    Safe under concurrency: the unique URL makes a racing second insert a no-op."""
    url = validate_webhook_url(url)
    created = await _one(
        conn,
        f"INSERT INTO webhook_subscriptions (subscription_id, url, secret) VALUES (%s, %s, %s)"
        f" ON CONFLICT (url) DO NOTHING RETURNING {_COLUMNS}",
        ("whs_" + secrets.token_hex(8), url, _new_secret()),
    )
    if created:
        return created, True
    existing = await _one(conn, f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE url = %s", (url,))
    assert existing is not None  # rows are never deleted
    return existing, False


async def get_subscription(conn, subscription_id: str) -> Subscription | None:
    return await _one(conn, f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE subscription_id = %s",
                      (subscription_id,))


async def get_subscription_by_url(conn, url: str) -> Subscription | None:
    return await _one(conn, f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE url = %s", (url,))


async def list_subscriptions(conn) -> list[Subscription]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM webhook_subscriptions ORDER BY created_at, url")
        return [Subscription(**row) for row in await cur.fetchall()]


async def rotate_secret(conn, subscription_id: str) -> Subscription | None:
    """A new secret takes effect on the next attempt of every delivery, including ones being retried."""
    return await _one(
        conn,
        f"UPDATE webhook_subscriptions SET secret = %s, rotated_at = now() WHERE subscription_id = %s"
        f" RETURNING {_COLUMNS}",
        (_new_secret(), subscription_id),
    )


async def set_disabled(conn, subscription_id: str, disabled: bool) -> Subscription | None:
    """A disabled subscription's deliveries fail at once, without retries."""
    return await _one(
        conn,
        f"UPDATE webhook_subscriptions SET disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now()) END"
        f" WHERE subscription_id = %s RETURNING {_COLUMNS}",
        (disabled, subscription_id),
    )
