"""Webhook delivery: one signed POST per activity attempt, every attempt written to the delivery log.

Failures are classified for Temporal's retry policy: connection errors, timeouts, 408, 429 and other
non-2xx answers are retried with backoff; any other 4xx means the receiver rejected the request itself
and retrying cannot help, so it is non-retryable.
"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.tables import webhook_deliveries
from infra.tables.webhook_subscriptions import ensure_subscription, get_subscription
from infra.webhook_signatures import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    encode_body,
    sign,
)
from workflows.alert_types import DeliverWebhookInput, DeliveryResult, EnsureSubscriptionInput
from workflows.failures import WebhookFailure

log = get_logger(__name__)

_RETRYABLE_4XX = {408, 429}
_MAX_RETRY_AFTER_S = 3600
USER_AGENT = "Sightline-Webhooks/0.1"


def _retry_after(response: httpx.Response) -> timedelta | None:
    """A 429/503 Retry-After in seconds, honoured (capped) as the next retry delay."""
    value = response.headers.get("retry-after", "")
    if value.isdigit():
        return timedelta(seconds=min(int(value), _MAX_RETRY_AFTER_S))
    return None


class WebhookActivities:
    def __init__(self, pool: DbPool, http: httpx.AsyncClient) -> None:
        self.pool = pool
        self.http = http

    @activity.defn
    async def ensure_webhook_subscription(self, input: EnsureSubscriptionInput) -> str:
        """The subscription id for a URL, created with a fresh secret the first time the URL is seen."""
        try:
            async with self.pool.connection() as conn:
                subscription, created = await ensure_subscription(conn, input.url)
        except ValueError as exc:
            raise WebhookFailure.INVALID_URL.error(str(exc)) from None
        if created:
            log.info("webhook subscription created", subscription_id=subscription.subscription_id, url=input.url)
        return subscription.subscription_id

    async def _log_attempt(self, input: DeliverWebhookInput, url: str, attempt: int, status_code: int | None,
                           error: str | None, duration_ms: float) -> None:
        async with self.pool.connection() as conn:
            await webhook_deliveries.record(conn, webhook_deliveries.Attempt(
                input.delivery_id, attempt, input.subscription_id, input.event, url, activity.info().workflow_id,
                status_code, error, duration_ms))

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

        timestamp = int(time.time())
        body = encode_body(input.delivery_id, input.event, timestamp, input.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: input.event,
            DELIVERY_HEADER: input.delivery_id,
            ATTEMPT_HEADER: str(attempt),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(subscription.secret, body),
        }
        started = time.perf_counter()
        try:
            response = await self.http.post(
                subscription.url, content=body, headers=headers, timeout=input.request_timeout_s,
                follow_redirects=False,  # a redirect would carry the signed body somewhere unregistered
            )
        except httpx.HTTPError as exc:
            duration_ms = (time.perf_counter() - started) * 1000
            error = f"{type(exc).__name__}: {exc}".strip()
            await self._log_attempt(input, subscription.url, attempt, None, error, duration_ms)
            log.warning("webhook attempt failed", delivery_id=input.delivery_id, error=error)
            raise WebhookFailure.UNREACHABLE.error(f"webhook {subscription.url} unreachable: {error}") from None
        duration_ms = (time.perf_counter() - started) * 1000
        code = response.status_code

        if 200 <= code < 300:
            await self._log_attempt(input, subscription.url, attempt, code, None, duration_ms)
            log.info("webhook delivered", delivery_id=input.delivery_id, status_code=code,
                     duration_ms=round(duration_ms, 1))
            return DeliveryResult(input.delivery_id, input.subscription_id, attempt, code, duration_ms)

        error = f"HTTP {code}: {response.text[:500]}".strip()
        await self._log_attempt(input, subscription.url, attempt, code, error, duration_ms)
        log.warning("webhook attempt rejected", delivery_id=input.delivery_id, status_code=code)
        if 400 <= code < 500 and code not in _RETRYABLE_4XX:
            raise WebhookFailure.REJECTED.error(f"webhook {subscription.url} rejected the delivery: {error}")
        raise WebhookFailure.HTTP_ERROR.error(f"webhook {subscription.url} answered {error}",
                                              next_retry_delay=_retry_after(response))
