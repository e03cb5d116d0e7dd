"""FrameBatchWorkflow: classify a recorded batch through the serving cluster, send each frame where the
rules say (human review, a defect alert), and close the batch.

Temporal's cost is per event, so the batch takes as few as it can. The API records the batch and its
frames in Postgres before starting it, so the input names no frames. A batch of one chunk (steps 1, every
batch the API starts up to `chunk_size` frames) is one activity: it classifies, records, routes, opens the
review tasks and the alert and closes the batch (activities.batch_closing), and the workflow sets its
search attributes once more and completes: 12 events whatever it routed. A batch of several chunks (or
one begun on steps 0) classifies a chunk per activity, opens its reviews and alert as children, and
closes with a local activity.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from workflows import search_attributes as sa
from workflows.alert_delivery import start_webhook_delivery
from workflows.batch_types import (
    BatchProgress,
    BatchStatus,
    ClassifiedFrames,
    ClassifyBatchInput,
    CloseBatchInput,
    FrameBatchInput,
    FrameBatchResult,
    RecordFramesInput,
    RoutedFrame,
)
from workflows.failures import BatchFailure
from workflows.policies import DB_RETRY, LOCAL_DB_TIMEOUT, SERVING_RETRY, SERVING_TIMEOUT
from workflows.review_task import start_review_task
from workflows.review_types import ReviewTaskInput
from workflows.routing import ALERT, REVIEW

with workflow.unsafe.imports_passed_through():
    from activities.batch_records import BatchActivities
    from activities.inference import InferenceActivities

@workflow.defn
class FrameBatchWorkflow:
    def __init__(self) -> None:
        self._progress = BatchProgress(BatchStatus.RECEIVED, 0, 0)

    @workflow.query
    def progress(self) -> BatchProgress:
        return self._progress

    @workflow.run
    async def run(self, input: FrameBatchInput) -> FrameBatchResult:
        self._progress = BatchProgress(BatchStatus.RUNNING, input.total_frames, 0)
        try:
            return await self._run(input)
        except ActivityError as failed:
            # Retries are spent (serving gone for minutes, a frame that can never be recorded): the
            # batch says so in Postgres and in its search attribute, then the workflow fails too.
            reason = _reason(failed)
            await self._close(CloseBatchInput(input.batch_id, BatchStatus.FAILED, None, failure=reason))
            workflow.upsert_search_attributes([sa.STATUS.value_set(BatchStatus.FAILED)])
            self._progress.status = BatchStatus.FAILED
            raise BatchFailure.FAILED.error(f"batch {input.batch_id} failed: {reason}") from failed

    async def _run(self, input: FrameBatchInput) -> FrameBatchResult:
        if input.frames:  # a camera stream's batch: the API did not record these frames
            await workflow.execute_local_activity_method(
                BatchActivities.record_frames,
                RecordFramesInput(input.batch_id, input.camera_id, input.site_id, input.frames),
                start_to_close_timeout=LOCAL_DB_TIMEOUT, retry_policy=DB_RETRY,
            )
        total = input.total_frames
        if input.steps_version >= 1 and total <= input.chunk_size:
            return await self._classify_and_close(input)
        chunks = await asyncio.gather(*(
            workflow.execute_activity_method(
                InferenceActivities.classify_batch,
                ClassifyBatchInput(input.batch_id, input.camera_id, input.site_id, start,
                                   min(start + input.chunk_size, total), input.rules, input.model_alias),
                task_queue=input.inference_task_queue,
                start_to_close_timeout=SERVING_TIMEOUT,
                # A killed worker's chunk is retried after this, not after the whole timeout.
                heartbeat_timeout=timedelta(seconds=20),
                retry_policy=SERVING_RETRY,
            )
            for start in range(0, total, input.chunk_size)
        ))
        self._progress.frames_classified = sum(c.classified for c in chunks)
        model_version = next((c.model_version for c in chunks if c.model_version), None)
        routed = [frame for chunk in chunks for frame in chunk.routed]
        classes = next((c.classes for c in chunks if c.classes), [])
        await self._start_reviews(input, routed, classes, model_version)
        await self._alert(input, routed, model_version)

        await self._close(CloseBatchInput(input.batch_id, BatchStatus.COMPLETED, model_version, routed))
        defects = sum(1 for r in routed if r.route == ALERT)
        updates: list[SearchAttributeUpdate[Any]] = [sa.STATUS.value_set(BatchStatus.COMPLETED),
                                                     sa.DEFECT_COUNT.value_set(defects)]
        if model_version:
            updates.append(sa.MODEL_VERSION.value_set(model_version))
        workflow.upsert_search_attributes(updates)
        self._progress.status = BatchStatus.COMPLETED
        labels: Counter[str] = Counter()
        versions: Counter[str] = Counter()
        for chunk in chunks:
            labels.update(chunk.label_counts)
            versions.update(chunk.version_counts)
        classified = sum(c.classified for c in chunks)
        return FrameBatchResult(
            batch_id=input.batch_id, status=BatchStatus.COMPLETED, frame_count=total, accepted=classified,
            rejected=sum(c.rejected for c in chunks), model_version=model_version, label_counts=dict(labels),
            sent_to_review=sum(1 for r in routed if r.route == REVIEW), defects=defects,
            unfamiliar=sum(c.unfamiliar for c in chunks), version_counts=dict(versions),
        )

    async def _classify_and_close(self, input: FrameBatchInput) -> FrameBatchResult:
        total = input.total_frames
        chunk: ClassifiedFrames = await workflow.execute_activity_method(
            InferenceActivities.classify_batch,
            ClassifyBatchInput(input.batch_id, input.camera_id, input.site_id, 0, total, input.rules,
                               input.model_alias, close=True, webhook_url=input.webhook_url, reviews=input.reviews,
                               review_task_queue=workflow.info().task_queue),
            task_queue=input.inference_task_queue,
            start_to_close_timeout=SERVING_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=20),
            retry_policy=SERVING_RETRY,
        )
        self._progress.frames_classified = chunk.classified
        defects = chunk.defects
        updates: list[SearchAttributeUpdate[Any]] = [sa.STATUS.value_set(BatchStatus.COMPLETED),
                                                     sa.DEFECT_COUNT.value_set(defects)]
        if chunk.model_version:
            updates.append(sa.MODEL_VERSION.value_set(chunk.model_version))
        workflow.upsert_search_attributes(updates)
        self._progress.status = BatchStatus.COMPLETED
        return FrameBatchResult(
            batch_id=input.batch_id, status=BatchStatus.COMPLETED, frame_count=total, accepted=chunk.classified,
            rejected=chunk.rejected, model_version=chunk.model_version, label_counts=chunk.label_counts,
            sent_to_review=chunk.sent_to_review, defects=defects,
            unfamiliar=chunk.unfamiliar, version_counts=chunk.version_counts,
        )

    async def _close(self, close: CloseBatchInput) -> None:
        await workflow.execute_local_activity_method(
            BatchActivities.close_batch, close, start_to_close_timeout=LOCAL_DB_TIMEOUT, retry_policy=DB_RETRY)

    async def _start_reviews(self, input: FrameBatchInput, routed: list[RoutedFrame], classes: list[str],
                             model_version: str | None) -> None:
        """One ReviewTaskWorkflow per frame sent to review, abandoned: reviews take hours, the batch
        does not wait. The id comes from frame and reason, so a retried start opens no second task."""

        async def start(frame: RoutedFrame) -> None:
            defect = frame.label not in input.rules.ok_labels
            frame.workflow_id = await start_review_task(ReviewTaskInput(
                frame_id=frame.frame_id, batch_id=input.batch_id, object_key=frame.object_key,
                camera_id=input.camera_id, site_id=input.site_id, reason=frame.reason,
                predicted_label=frame.label, confidence=frame.confidence, classes=list(classes),
                priority="high" if defect and frame.reason == "low_confidence" else "normal",
                reviews_required=input.rules.reviews_required,
                # The version that answered this frame: a canary's answer is the candidate's to be judged on.
                model_version=frame.model_version or model_version,
                boxes=frame.boxes,  # a detection version's, for the reviewer to correct (None: a classifier's)
            ))

        await asyncio.gather(*(start(r) for r in routed if r.route == REVIEW))

    async def _alert(self, input: FrameBatchInput, routed: list[RoutedFrame], model_version: str | None) -> None:
        """One signed webhook per batch with its confident defects, delivered by an abandoned child
        workflow: a dead endpoint retries there and never holds up the batch."""
        alerts = [r for r in routed if r.route == ALERT]
        if not alerts or not input.webhook_url:
            return
        payload = {
            "batch_id": input.batch_id, "camera_id": input.camera_id, "site_id": input.site_id,
            "model_version": model_version, "defect_count": len(alerts),
            "defects": [{"frame_id": r.frame_id, "label": r.label, "confidence": r.confidence,
                         "model_version": r.model_version or model_version,
                         **({"boxes": r.boxes} if r.boxes is not None else {})} for r in alerts[:100]],
        }
        workflow_id = await start_webhook_delivery(input.webhook_url, "batch.defects", payload,
                                                   delivery_id=f"{input.batch_id}.defects")
        for route in alerts:
            route.workflow_id = workflow_id


def _reason(failed: ActivityError) -> str:
    cause = failed.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'error'}: {cause.message}"[:500]
    return str(cause or failed)[:500]
