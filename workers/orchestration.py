"""The orchestration worker: workflows plus the Postgres and object-store activities."""

from __future__ import annotations

import httpx
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.batch_records import BatchActivities
from activities.predictions import PredictionActivities
from activities.reviews import ReviewActivities
from activities.webhooks import WebhookActivities
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore
from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.camera_stream import CameraStreamWorkflow
from workflows.frame_batch import FrameBatchWorkflow
from workflows.review_task import ReviewTaskWorkflow

# The sandbox re-imports (and recompiles) a workflow's modules for every new workflow run: under load
# that was over 40% of this worker's CPU. Our workflow modules hold only pure code and frozen
# constants, so they are loaded once and passed through; determinism stays guarded by the replay tests.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
)

WORKFLOWS = [FrameBatchWorkflow, WebhookDeliveryWorkflow, CameraStreamWorkflow, ReviewTaskWorkflow]


def orchestration_worker(client: Client, pool: DbPool, store: ObjectStore, settings: Settings) -> Worker:
    batches = BatchActivities(pool, store, settings.max_frame_pixels)
    predictions = PredictionActivities(pool)
    # One client for the worker's life: connection reuse across deliveries to the same receivers.
    webhooks = WebhookActivities(pool, httpx.AsyncClient(follow_redirects=False))
    reviews = ReviewActivities(pool, settings)
    return Worker(
        client,
        task_queue=settings.orchestration_task_queue,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        workflows=WORKFLOWS,
        workflow_runner=WORKFLOW_RUNNER,
        activities=[batches.record_batch, batches.validate_frames, batches.complete_batch,
                    predictions.record_predictions,
                    webhooks.ensure_webhook_subscription, webhooks.deliver_webhook,
                    reviews.review_policy, reviews.sync_review_projection, reviews.record_review_label,
                    reviews.record_escalation],
    )
