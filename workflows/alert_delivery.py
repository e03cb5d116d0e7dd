"""WebhookDeliveryWorkflow: deliver one signed webhook with retries and backoff, on its own.

A batch never waits for an alert: it starts this workflow as an abandoned child (`start_webhook_delivery`)
and moves on, so a dead endpoint costs the batch one child start, not its retries. The child runs on the
webhook task queue (`webhook_task_queue`), served by its own worker (workers.webhooks), so slow receivers
never take the orchestration worker's slots; its activities run on the queue the workflow runs on.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows.alert_types import (
    DeliverWebhookInput,
    DeliveryResult,
    EnsureSubscriptionInput,
    WebhookDeliveryInput,
    WebhookRetry,
    webhook_task_queue,
    webhook_workflow_id,
)
from workflows.policies import DB_RETRY, DB_TIMEOUT, webhook_retry

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities

@workflow.defn
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, input: WebhookDeliveryInput) -> DeliveryResult:
        subscription_id = await workflow.execute_activity_method(
            WebhookActivities.ensure_webhook_subscription,
            EnsureSubscriptionInput(input.url),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        r = input.retry
        return await workflow.execute_activity_method(
            WebhookActivities.deliver_webhook,
            DeliverWebhookInput(input.delivery_id, subscription_id, input.event, input.payload, r.request_timeout_s),
            # The request timeout plus room to write the delivery log row.
            start_to_close_timeout=timedelta(seconds=r.request_timeout_s + 20),
            schedule_to_close_timeout=timedelta(seconds=r.expiry_s),
            retry_policy=webhook_retry(r.initial_interval_s, r.backoff_coefficient, r.maximum_interval_s,
                                       r.maximum_attempts),
        )


async def start_webhook_delivery(
    url: str, event: str, payload: dict, delivery_id: str, retry: WebhookRetry | None = None
) -> str:
    """From inside any workflow: start the delivery as an abandoned child and return its workflow id
    without waiting for the delivery. Starting twice with the same delivery id is a no-op."""
    workflow_id = webhook_workflow_id(delivery_id)
    try:
        await workflow.start_child_workflow(
            WebhookDeliveryWorkflow.run,
            WebhookDeliveryInput(delivery_id, url, event, payload, retry or WebhookRetry()),
            id=workflow_id,
            task_queue=webhook_task_queue(workflow.info().task_queue),
            # ABANDON: the delivery outlives the batch that raised it, and the batch never waits on it.
            parent_close_policy=ParentClosePolicy.ABANDON,
        )
    except WorkflowAlreadyStartedError:
        workflow.logger.info("webhook delivery %s already started", workflow_id)
    return workflow_id
