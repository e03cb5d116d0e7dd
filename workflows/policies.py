"""Retry policies and timeouts, declared once for every workflow that calls these activities."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows.failures import DriftFailure, RetrainingFailure, ServingFailure, WebhookFailure, non_retryable

# Postgres and object-store writes: short, idempotent, retried until the database is back.
DB_TIMEOUT = timedelta(seconds=60)
# The same writes run as local activities, inside a workflow task: one attempt must fit well within it.
LOCAL_DB_TIMEOUT = timedelta(seconds=10)
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


# Drift checks read a window of predictions and run Evidently: seconds to a minute.
DRIFT_TIMEOUT = timedelta(minutes=10)
DRIFT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=60),
                          maximum_attempts=5, non_retryable_error_types=non_retryable(DriftFailure))

# Retraining's steps on the training queue: building a snapshot (rendering the base set the first time),
# evaluating, exporting and registering take minutes; training itself is bounded by its input's timeout
# and watched by heartbeats. A killed worker's attempt is retried (and resumes from its checkpoint).
SNAPSHOT_TIMEOUT = timedelta(minutes=30)
EVALUATE_TIMEOUT = timedelta(minutes=30)
TRAINING_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=60),
                             maximum_attempts=5, non_retryable_error_types=non_retryable(RetrainingFailure))
