"""Dataclasses of webhook alert delivery. Secrets never travel here: a delivery names its subscription,
and the activity reads the secret from Postgres."""

from dataclasses import dataclass, field

WEBHOOK_DELIVERY_WORKFLOW = "WebhookDeliveryWorkflow"


def webhook_workflow_id(delivery_id: str) -> str:
    return f"webhook-{delivery_id}"


def webhook_task_queue(orchestration_task_queue: str) -> str:
    """Deliveries run on their own task queue beside the orchestration queue (`<queue>-webhooks`), so a
    slow receiver holds a webhook worker's slots, never the ones batches and reviews need. Derived, not
    configured: the workflow that raises an alert knows only its own queue."""
    return f"{orchestration_task_queue}-webhooks"


@dataclass
class WebhookRetry:
    """Backoff for one delivery: capped in attempts and in total time, so a dead endpoint gives up."""

    initial_interval_s: float = 2.0
    backoff_coefficient: float = 2.0
    maximum_interval_s: float = 600.0
    maximum_attempts: int = 12
    expiry_s: float = 24 * 3600.0
    request_timeout_s: float = 10.0


@dataclass
class WebhookDeliveryInput:
    """One notification to one URL. `delivery_id` is what the receiver dedupes by: the same on every
    attempt, and derived from what happened (e.g. `<batch id>.defect`) so a rerun sends the same id."""

    delivery_id: str
    url: str
    event: str
    payload: dict
    retry: WebhookRetry = field(default_factory=WebhookRetry)


@dataclass
class EnsureSubscriptionInput:
    url: str


@dataclass
class DeliverWebhookInput:
    delivery_id: str
    subscription_id: str  # the secret reference: the activity looks up URL and secret by it
    event: str
    payload: dict
    request_timeout_s: float = 10.0


@dataclass
class DeliveryResult:
    delivery_id: str
    subscription_id: str
    attempt: int
    status_code: int
    duration_ms: float
