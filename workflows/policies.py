"""Retry policies and timeouts, declared once for every workflow that calls these activities."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows.failures import ServingFailure, WebhookFailure, non_retryable

# Postgres and object-store writes: short, idempotent, retried until the database is back.
DB_TIMEOUT = timedelta(seconds=60)
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))

# Serving may be restarting or scaling: keep trying for a while, then fail the batch visibly.
SERVING_TIMEOUT = timedelta(minutes=2)
SERVING_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=20),
                            maximum_attempts=30, non_retryable_error_types=non_retryable(ServingFailure))


def webhook_retry(initial_interval_s: float, backoff_coefficient: float, maximum_interval_s: float,
                  maximum_attempts: int) -> RetryPolicy:
    """One delivery's backoff (its WebhookRetry settings); a receiver's rejection is never retried."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=initial_interval_s),
        backoff_coefficient=backoff_coefficient,
        maximum_interval=timedelta(seconds=maximum_interval_s),
        maximum_attempts=maximum_attempts,
        non_retryable_error_types=non_retryable(WebhookFailure),
    )
