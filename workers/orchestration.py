"""The orchestration worker: workflows plus the Postgres and object-store activities."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.batch_records import BatchActivities
from activities.batch_sweep import BatchSweepActivities
from activities.deletion import DeletionActivities
from activities.retention import RetentionActivities
from activities.reviews import ReviewActivities
from activities.webhooks import WebhookActivities
from infra.db import DbPool
from infra.settings import Settings
from infra.store import ObjectStore
from vision.registry import ModelRegistry
from workers.loop import LOOP_WORKFLOWS, loop_activities
from workers.versioning import deployment_config, workflow_classes
from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.batch_sweep import StaleBatchSweepWorkflow
from workflows.camera_stream import CameraStreamWorkflow
from workflows.deletion import DeletionWorkflow
from workflows.frame_batch import FrameBatchWorkflow
from workflows.retention import RetentionWorkflow
from workflows.review_task import ReviewTaskWorkflow

# The sandbox re-imports (and recompiles) a workflow's modules for every new workflow run: under load
# that was over 40% of this worker's CPU. Our workflow modules hold only pure code and frozen
# constants, so they are loaded once and passed through; determinism stays guarded by the replay tests.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
)

WORKFLOWS = [FrameBatchWorkflow, WebhookDeliveryWorkflow, CameraStreamWorkflow, ReviewTaskWorkflow,
             StaleBatchSweepWorkflow, DeletionWorkflow, RetentionWorkflow, *LOOP_WORKFLOWS]


def orchestration_worker(client: Client, pool: DbPool, store: ObjectStore, settings: Settings,
                         registry: ModelRegistry | None = None) -> Worker:
    batches = BatchActivities(pool)
    sweep = BatchSweepActivities(pool, store, client, settings)
    # Deliveries run on their own queue (workers.webhooks); these serve the ones started on this queue
    # before it existed, until none is left.
    webhooks = WebhookActivities.for_settings(pool, settings)
    reviews = ReviewActivities(pool, settings)
    deletion = DeletionActivities(pool, store, client)
    retention = RetentionActivities(pool, store, client, settings)
    return Worker(
        client,
        task_queue=settings.orchestration_task_queue,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_concurrent_local_activities=settings.worker_max_concurrent_activities,
        max_cached_workflows=settings.worker_max_cached_workflows,
        workflows=workflow_classes(WORKFLOWS, settings),
        workflow_runner=WORKFLOW_RUNNER,
        deployment_config=deployment_config(settings),
        activities=[batches.record_frames, batches.close_batch, sweep.sweep_stale_batches,
                    webhooks.ensure_webhook_subscription, webhooks.deliver_webhook,
                    reviews.review_policy, reviews.sync_review_projection, reviews.record_review_label,
                    reviews.record_escalation,
                    # Deletion requests and retention (issue 24).
                    deletion.plan_deletion, deletion.abort_rollouts, deletion.delete_chunk, deletion.finish_deletion,
                    retention.expire_chunk,
                    # Drift checks and the retraining run's records (the training itself: workers.training).
                    *loop_activities(pool, store, settings, registry)],
    )
