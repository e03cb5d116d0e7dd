"""The webhook worker: WebhookDeliveryWorkflow and its activities on their own task queue
(`<orchestration queue>-webhooks`, workflows.alert_types.webhook_task_queue), so receivers that answer
slowly or never hold this worker's slots and not the ones batches and reviews need."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from activities.webhooks import WebhookActivities
from infra.db import DbPool
from infra.settings import Settings
from workers.orchestration import WORKFLOW_RUNNER
from workers.versioning import deployment_config, workflow_classes
from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.alert_types import webhook_task_queue

# Deliveries wait on the network, not the CPU: many may be in flight at once on one worker.
MAX_CONCURRENT_DELIVERIES = 64


def webhook_worker(client: Client, pool: DbPool, settings: Settings) -> Worker:
    """A worker on the webhook task queue; deliveries go only to the addresses the settings allow."""
    webhooks = WebhookActivities.for_settings(pool, settings)
    return Worker(
        client,
        task_queue=webhook_task_queue(settings.orchestration_task_queue),
        workflows=workflow_classes([WebhookDeliveryWorkflow], settings),
        workflow_runner=WORKFLOW_RUNNER,
        deployment_config=deployment_config(settings),
        activities=[webhooks.ensure_webhook_subscription, webhooks.deliver_webhook],
        max_concurrent_activities=MAX_CONCURRENT_DELIVERIES,
    )
