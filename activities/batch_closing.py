"""What a batch does with its classified frames once they are recorded, done by the classification
activity itself for a batch of one chunk (FrameBatchInput steps 1): open a review task per frame sent to
review, start the batch's one defect alert, write the tasks' first projection rows, and close the batch,
its totals derived from the rows, in one transaction.

Temporal's cost is per event: done here, none of it is a child workflow's two events and extra workflow
task in the batch's history, nor a review task's own first writes. The tasks stay workflows ops find in
the Temporal UI, by their batch (`SightlineBatch`), camera and site. Every step is idempotent: a task or
alert id comes from the frame (or batch) and the reason, a start of one that exists is a no-op, and the
projection rows and totals are versioned or recomputed, so a retried activity leaves what one run would.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities import metrics
from activities.reviews import projection_row
from infra.db import DbPool
from infra.log import get_logger
from infra.tables import batches, frame_routes, review_tasks
from infra.telemetry import span
from workflows import search_attributes as sa
from workflows.alert_types import (
    WEBHOOK_DELIVERY_WORKFLOW,
    WebhookDeliveryInput,
    WebhookRetry,
    webhook_task_queue,
    webhook_workflow_id,
)
from workflows.batch_types import BatchStatus, ClassifyBatchInput, ReviewOpening, RoutedFrame
from workflows.review_types import (
    OPENED_BY_BATCH,
    ProjectionUpdate,
    ReviewStatus,
    ReviewTaskInput,
    opening_view,
    review_sla_seconds,
    review_workflow_id,
)
from workflows.review_types import WORKFLOW_NAME as REVIEW_WORKFLOW
from workflows.routing import ALERT, REVIEW

log = get_logger(__name__)


def review_input(input: ClassifyBatchInput, frame: RoutedFrame, classes: list[str], model_version: str | None,
                 policy: ReviewOpening) -> ReviewTaskInput:
    """The task a routed frame opens, with the batch's review policy (its SLA by the task's priority)."""
    defect = frame.label not in input.rules.ok_labels
    priority = "high" if defect and frame.reason == "low_confidence" else "normal"
    return ReviewTaskInput(
        frame_id=frame.frame_id, batch_id=input.batch_id, object_key=frame.object_key, camera_id=input.camera_id,
        site_id=input.site_id, reason=frame.reason, predicted_label=frame.label, confidence=frame.confidence,
        classes=list(classes), priority=priority, reviews_required=input.rules.reviews_required,
        model_version=frame.model_version or model_version,
        sla_seconds=review_sla_seconds(policy.sla_seconds, priority),
        claim_lease_seconds=policy.claim_lease_seconds, escalation_webhook_url=policy.escalation_webhook_url,
        steps_version=OPENED_BY_BATCH, boxes=frame.boxes,
    )


def alert_payload(input: ClassifyBatchInput, alerts: list[RoutedFrame], model_version: str | None) -> dict:
    return {
        "batch_id": input.batch_id, "camera_id": input.camera_id, "site_id": input.site_id,
        "model_version": model_version, "defect_count": len(alerts),
        "defects": [{"frame_id": r.frame_id, "label": r.label, "confidence": r.confidence,
                     "model_version": r.model_version or model_version,
                     # A detection version's: where the defect is (vision.boxes.Box.as_dict())
                     **({"boxes": r.boxes} if r.boxes is not None else {})} for r in alerts[:100]],
    }


class BatchCloser:
    def __init__(self, temporal: Client, pool: DbPool) -> None:
        self.temporal = temporal
        self.pool = pool

    async def open_and_close(self, input: ClassifyBatchInput, routed: list[RoutedFrame], classes: list[str],
                             model_version: str | None) -> None:
        """`routed` as recorded (frame_routes holds them with their workflow ids)."""
        assert input.reviews is not None
        reviews = [(frame, review_input(input, frame, classes, model_version, input.reviews))
                   for frame in routed if frame.route == REVIEW]
        async with span("temporal.open_reviews", reviews=len(reviews)):
            run_ids = await asyncio.gather(*(self._open_review(input, task) for _, task in reviews))
        alerts = [r for r in routed if r.route == ALERT]
        if alerts and input.webhook_url:
            await self._start_alert(input, alerts, model_version)
        metrics.record_reviews_opened(input.site_id, input.camera_id, [task.reason for _, task in reviews],
                                      bool(alerts and input.webhook_url))
        opened = datetime.now(UTC)
        async with span("db.close_batch"), self.pool.connection() as conn, conn.transaction():
            await batches.lock_for_recount(conn, input.batch_id)
            for (frame, task), run_id in zip(reviews, run_ids, strict=True):
                review_id = review_workflow_id(frame.frame_id, frame.reason)
                await review_tasks.upsert_projection(conn, projection_row(ProjectionUpdate(
                    version=1, run_id=run_id, task=task, view=opening_view(review_id, task, opened))))
            await batches.complete(conn, batch_id=input.batch_id, status=BatchStatus.COMPLETED,
                                   model_version=model_version)
            await batches.recount_reviews(conn, input.batch_id)
        log.info("batch closed", batch_id=input.batch_id, reviews=len(reviews), alerts=len(alerts))

    async def _open_review(self, input: ClassifyBatchInput, task: ReviewTaskInput) -> str:
        """Start the task (its run id); a task of this frame and reason that exists already is kept."""
        review_id = review_workflow_id(task.frame_id, task.reason)
        attributes = TypedSearchAttributes([
            *sa.at_start(task.camera_id, task.site_id, ReviewStatus.PENDING.value),
            SearchAttributePair(sa.BATCH, input.batch_id)])
        try:
            handle = await self.temporal.start_workflow(
                REVIEW_WORKFLOW, task, id=review_id, task_queue=input.review_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE, search_attributes=attributes)
        except WorkflowAlreadyStartedError as exc:
            return exc.run_id or ""
        return handle.result_run_id or ""

    async def _start_alert(self, input: ClassifyBatchInput, alerts: list[RoutedFrame],
                           model_version: str | None) -> None:
        delivery_id = f"{input.batch_id}.defects"
        try:
            await self.temporal.start_workflow(
                WEBHOOK_DELIVERY_WORKFLOW,
                WebhookDeliveryInput(delivery_id, input.webhook_url or "", "batch.defects",
                                     alert_payload(input, alerts, model_version), WebhookRetry()),
                id=webhook_workflow_id(delivery_id), task_queue=webhook_task_queue(input.review_task_queue),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            log.info("webhook delivery already started", delivery_id=delivery_id)


def routes_with_workflows(batch_id: str, routed: list[RoutedFrame], alerting: bool) -> list[frame_routes.Route]:
    """The routes to record, each with the id of the workflow it opens (known before it starts); an
    alert without a webhook URL opens none."""
    alert_id = webhook_workflow_id(f"{batch_id}.defects") if alerting else None
    return [frame_routes.Route(r.frame_id, r.route, r.reason,
                               review_workflow_id(r.frame_id, r.reason) if r.route == REVIEW else alert_id)
            for r in routed]
