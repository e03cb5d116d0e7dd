"""Webhook subscriptions: one row per URL with its own random signing secret.

A batch may name a webhook only once an operator registered its URL for the batch's site
(`register_webhook`, from `sightline webhooks create --url U --site S`, which prints the secret the
receiver verifies with); the batch submission asks `registered_webhook`. Registration checks that the
URL's host resolves to public addresses (infra.outbound_addresses), and every delivery checks again.
One URL belongs to one site: a receiver serving several sites takes one URL per site.

URLs from the operator's own settings (review escalations, drift) get a subscription with no site the
first time they are used (`ensure_subscription`); so do URLs of batches submitted before registration
existed. New batches cannot name those until they are registered.

`rotate` replaces the secret; for an overlap window deliveries are signed with the previous one too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlparse

from psycopg.rows import dict_row

from infra.outbound_addresses import AddressPolicy, Resolver, checked_addresses, system_resolver

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048


class WebhookConflict(ValueError):
    """The URL is registered for another site."""


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    url: str
    secret: str
    created_at: datetime
    rotated_at: datetime | None
    disabled_at: datetime | None
    site_id: str | None = None               # None: not registered for batches
    registered_at: datetime | None = None
    previous_secret: str | None = None       # still signs until previous_secret_expires_at
    previous_secret_expires_at: datetime | None = None

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one while its
        overlap window lasts."""
        now = now or datetime.now(UTC)
        live = self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now
        return [self.secret, self.previous_secret] if live and self.previous_secret else [self.secret]


def validate_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host, or ValueError with the reason (the API answers 422). The
    reason never repeats the URL: messages end up in logs and workflow histories."""
    url = (url or "").strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError("webhook URL must not contain spaces or control characters")
    try:
        parsed = urlparse(url)
        hostname, _ = parsed.hostname, parsed.port  # .port raises on a port that is not a number
    except ValueError:
        raise ValueError("webhook URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not hostname:
        raise ValueError("webhook URL must be an absolute http:// or https:// URL")
    if parsed.username or parsed.password:
        raise ValueError("webhook URL must not carry credentials; the signature authenticates the sender")
    return url


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


async def _one(conn, sql: str, params: tuple | dict) -> Subscription | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    return Subscription(**row) if row else None


_COLUMNS = ("subscription_id, url, secret, created_at, rotated_at, disabled_at, site_id, registered_at,"
            " previous_secret, previous_secret_expires_at")


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


async def register_webhook(conn, url: str, site_id: str, policy: AddressPolicy,
                           resolve: Resolver = system_resolver) -> tuple[Subscription, bool]:
    """Register `url` for batches of `site_id`: (subscription, newly registered). The URL must resolve
    to addresses the policy allows (AddressRefused otherwise); a URL already registered for another
    site is a WebhookConflict. A subscription created earlier without a site is bound to this one."""
    url = validate_webhook_url(url)
    site_id = (site_id or "").strip()
    if not site_id or len(site_id) > 128 or not site_id.isprintable():
        raise ValueError("a webhook is registered for one site: give its id (1 to 128 printable characters)")
    await checked_addresses(url, policy, resolve)
    subscription, _ = await ensure_subscription(conn, url)
    if subscription.site_id == site_id:
        return subscription, False
    if subscription.site_id is not None:
        raise WebhookConflict(f"this URL is registered for site {subscription.site_id!r}; a receiver serving"
                              " several sites takes one URL per site")
    bound = await _one(
        conn,
        f"UPDATE webhook_subscriptions SET site_id = %s, registered_at = now()"
        f" WHERE subscription_id = %s AND site_id IS NULL RETURNING {_COLUMNS}",
        (site_id, subscription.subscription_id),
    )
    if bound is None:  # a concurrent registration bound it first: say which site won
        return await register_webhook(conn, url, site_id, policy, resolve)
    return bound, True


async def registered_webhook(conn, url: str, site_id: str) -> Subscription | None:
    """The enabled subscription registered for this URL and site, or None: a batch of `site_id` may
    name `url` only when this returns one. (The address is checked at registration and at delivery.)"""
    try:
        url = validate_webhook_url(url)
    except ValueError:
        return None
    return await _one(
        conn,
        f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE url = %s AND site_id = %s AND disabled_at IS NULL",
        (url, site_id),
    )


async def get_subscription(conn, subscription_id: str) -> Subscription | None:
    return await _one(conn, f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE subscription_id = %s",
                      (subscription_id,))


async def get_subscription_by_url(conn, url: str) -> Subscription | None:
    return await _one(conn, f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE url = %s", (url,))


async def list_subscriptions(conn) -> list[Subscription]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM webhook_subscriptions ORDER BY created_at, url")
        return [Subscription(**row) for row in await cur.fetchall()]


async def rotate_secret(conn, subscription_id: str, overlap_s: float = 0.0) -> Subscription | None:
    """A new secret takes effect on the next attempt of every delivery, including ones being retried.
    For `overlap_s` seconds the old one signs too (each delivery carries both signatures), so the
    receiver can switch without rejecting a delivery; 0 drops the old one at once (a leaked secret)."""
    return await _one(
        conn,
        f"UPDATE webhook_subscriptions SET previous_secret = CASE WHEN %(overlap)s > 0 THEN secret END,"
        f" previous_secret_expires_at = CASE WHEN %(overlap)s > 0"
        f"  THEN now() + make_interval(secs => %(overlap)s) END,"
        f" secret = %(secret)s, rotated_at = now() WHERE subscription_id = %(id)s RETURNING {_COLUMNS}",
        {"overlap": overlap_s, "secret": _new_secret(), "id": subscription_id},
    )


async def set_disabled(conn, subscription_id: str, disabled: bool) -> Subscription | None:
    """A disabled subscription's deliveries fail at once, without retries."""
    return await _one(
        conn,
        f"UPDATE webhook_subscriptions SET disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now()) END"
        f" WHERE subscription_id = %s RETURNING {_COLUMNS}",
        (disabled, subscription_id),
    )
