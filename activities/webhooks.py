"""Webhook delivery: one signed POST per activity attempt, every attempt written to the delivery log.

Every attempt resolves the subscription's host again and refuses non-public addresses (the operator's
`webhook_allowed_networks` aside), then connects to the address it checked; redirects are never
followed, and at most MAX_REPLY_BYTES of the reply are read and none kept. Error messages and logs name
the subscription, never its URL or the receiver's reply.

Failures are classified for Temporal's retry policy: connection errors, timeouts, an unresolvable host,
408, 429 and 5xx answers are retried with backoff; a refused address, a redirect or any other 4xx
cannot get better by retrying, so they are non-retryable.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.outbound_addresses import (
    AddressPolicy,
    AddressRefused,
    HostUnresolvable,
    IPAddress,
    Resolver,
    checked_addresses,
    pin,
    system_resolver,
)
from infra.settings import Settings
from infra.tables import webhook_deliveries
from infra.tables.webhook_subscriptions import Subscription, ensure_subscription, get_subscription
from infra.webhook_signatures import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    encode_body,
    signature_header,
)
from workflows.alert_types import DeliverWebhookInput, DeliveryResult, EnsureSubscriptionInput
from workflows.failures import WebhookFailure

log = get_logger(__name__)

_RETRYABLE_4XX = {408, 429}
_MAX_RETRY_AFTER_S = 3600
USER_AGENT = "Sightline-Webhooks/0.1"
# A receiver's reply is read up to this many bytes (so a small reply keeps the connection reusable) and
# thrown away: nothing a receiver sends back is stored or logged.
MAX_REPLY_BYTES = 4096


def _retry_after(response: httpx.Response) -> timedelta | None:
    """A 429/503 Retry-After in seconds, honoured (capped) as the next retry delay."""
    value = response.headers.get("retry-after", "")
    if value.isdigit():
        return timedelta(seconds=min(int(value), _MAX_RETRY_AFTER_S))
    return None


def webhook_http_client() -> httpx.AsyncClient:
    """The HTTP client deliveries use: no redirects, and no proxy from the environment (a proxy would
    make the connection the address check is about)."""
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)


def _describe(exc: BaseException, subscription: Subscription, addresses: list[IPAddress]) -> str:
    """What went wrong, without the URL, host or address (TLS errors name the host)."""
    if isinstance(exc, TimeoutError):
        return "TimeoutError: no complete answer in time"
    message = str(exc)
    host = urlsplit(subscription.url).hostname or ""
    for name in sorted({subscription.url, host, *(str(a) for a in addresses)} - {""}, key=len, reverse=True):
        message = message.replace(name, "<receiver>")
    return f"{type(exc).__name__}: {message}".strip()[:300]


class WebhookActivities:
    def __init__(self, pool: DbPool, http: httpx.AsyncClient | None = None,
                 policy: AddressPolicy | None = None, resolve: Resolver = system_resolver) -> None:
        self.pool = pool
        self.http = http or webhook_http_client()
        # Default: public addresses only. Workers pass the settings' allow-list (`for_settings`).
        self.policy = policy or AddressPolicy()
        self.resolve = resolve

    @classmethod
    def for_settings(cls, pool: DbPool, settings: Settings, http: httpx.AsyncClient | None = None) -> WebhookActivities:
        return cls(pool, http, AddressPolicy.allowing(settings.webhook_allowed_networks))

    @activity.defn
    async def ensure_webhook_subscription(self, input: EnsureSubscriptionInput) -> str:
        """The subscription id for a URL. A batch names only registered URLs (checked when it is
        submitted); a URL from the operator's settings gets a subscription with a fresh secret the first
        time it is used."""
        try:
            async with self.pool.connection() as conn:
                subscription, created = await ensure_subscription(conn, input.url)
        except ValueError as exc:
            raise WebhookFailure.INVALID_URL.error(str(exc)) from None
        if created:
            log.info("webhook subscription created", subscription_id=subscription.subscription_id)
        return subscription.subscription_id

    async def _log_attempt(self, input: DeliverWebhookInput, url: str, attempt: int, status_code: int | None,
                           error: str | None, duration_ms: float) -> None:
        async with self.pool.connection() as conn:
            await webhook_deliveries.record(conn, webhook_deliveries.Attempt(
                input.delivery_id, attempt, input.subscription_id, input.event, url, activity.info().workflow_id,
                status_code, error, duration_ms))

    async def _post(self, url: str, addresses: list[IPAddress], body: bytes, headers: dict[str, str],
                    timeout_s: float) -> httpx.Response:
        """POST to the first checked address that accepts a connection; the reply is read up to
        MAX_REPLY_BYTES (raw, never decompressed) and dropped."""
        failed: httpx.ConnectError | None = None
        for ip in addresses:
            pinned = pin(url, ip)
            try:
                async with self.http.stream("POST", pinned.url, content=body, headers={**headers, **pinned.headers},
                                            extensions=pinned.extensions, timeout=timeout_s,
                                            follow_redirects=False) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_REPLY_BYTES:
                            break
                    return response
            except httpx.ConnectError as exc:  # try the name's next address, as a browser would
                failed = exc
        assert failed is not None  # checked_addresses never returns an empty list
        raise failed

    @activity.defn
    async def deliver_webhook(self, input: DeliverWebhookInput) -> DeliveryResult:
        attempt = activity.info().attempt
        async with self.pool.connection() as conn:
            subscription = await get_subscription(conn, input.subscription_id)
        if subscription is None:
            raise WebhookFailure.SUBSCRIPTION_MISSING.error(f"no webhook subscription {input.subscription_id!r}")
        if subscription.disabled_at is not None:
            raise WebhookFailure.SUBSCRIPTION_DISABLED.error(
                f"webhook subscription {input.subscription_id} is disabled")
        name = f"webhook subscription {subscription.subscription_id}"

        timestamp = int(time.time())
        body = encode_body(input.delivery_id, input.event, timestamp, input.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: input.event,
            DELIVERY_HEADER: input.delivery_id,
            ATTEMPT_HEADER: str(attempt),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(subscription.signing_secrets(), body),
        }
        started = time.perf_counter()
        addresses: list[IPAddress] = []
        try:
            addresses = await checked_addresses(subscription.url, self.policy, self.resolve)
            async with asyncio.timeout(input.request_timeout_s):
                response = await self._post(subscription.url, addresses, body, headers, input.request_timeout_s)
        except HostUnresolvable as exc:
            await self._log_attempt(input, subscription.url, attempt, None, str(exc), self._ms(started))
            log.warning("webhook attempt failed", delivery_id=input.delivery_id, error=str(exc))
            raise WebhookFailure.UNREACHABLE.error(f"{name}: {exc}") from None
        except AddressRefused as exc:
            await self._log_attempt(input, subscription.url, attempt, None, str(exc), self._ms(started))
            log.warning("webhook address refused", delivery_id=input.delivery_id,
                        subscription_id=subscription.subscription_id, error=str(exc))
            raise WebhookFailure.ADDRESS_REFUSED.error(f"{name}: {exc}") from None
        except (httpx.HTTPError, TimeoutError) as exc:
            error = _describe(exc, subscription, addresses)
            await self._log_attempt(input, subscription.url, attempt, None, error, self._ms(started))
            log.warning("webhook attempt failed", delivery_id=input.delivery_id, error=error)
            raise WebhookFailure.UNREACHABLE.error(f"{name} unreachable: {error}") from None
        duration_ms = self._ms(started)
        code = response.status_code

        if 200 <= code < 300:
            await self._log_attempt(input, subscription.url, attempt, code, None, duration_ms)
            log.info("webhook delivered", delivery_id=input.delivery_id, status_code=code,
                     duration_ms=round(duration_ms, 1))
            return DeliveryResult(input.delivery_id, input.subscription_id, attempt, code, duration_ms)

        error = f"HTTP {code}"
        await self._log_attempt(input, subscription.url, attempt, code, error, duration_ms)
        log.warning("webhook attempt rejected", delivery_id=input.delivery_id, status_code=code)
        if 300 <= code < 400:
            raise WebhookFailure.REDIRECTED.error(
                f"{name} answered with a redirect ({error}); webhooks follow no redirects: register the final URL")
        if 400 <= code < 500 and code not in _RETRYABLE_4XX:
            raise WebhookFailure.REJECTED.error(f"the receiver of {name} rejected the delivery: {error}")
        raise WebhookFailure.HTTP_ERROR.error(f"{name} answered {error}", next_retry_delay=_retry_after(response))

    @staticmethod
    def _ms(started: float) -> float:
        return (time.perf_counter() - started) * 1000
