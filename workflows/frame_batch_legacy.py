"""The steps FrameBatchWorkflow took before the durable path: record a batch, validate its frames,
classify them through the serving cluster, record the predictions, route each frame and close the
batch, about forty history events for a batch.

Batches started on that code still replay and finish on it: FrameBatchWorkflow runs these steps when
the batch's input predates `FrameBatchInput.durable_path`. Once no such batch is open (batches take
seconds), delete this module, its activities (activities/legacy_batch.py), its contracts and its
stored histories together.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows import search_attributes as sa
from workflows.alert_delivery import start_webhook_delivery
from workflows.batch_types import (
    BatchProgress,
    BatchStatus,
    FrameBatchInput,
    FrameBatchResult,
    FrameOutcome,
    RoutingRules,
)
from workflows.legacy_batch_types import (
    ClassifyFramesInput,
    ClassifyFramesResult,
    CompleteBatchInput,
    FramePrediction,
    FrameRef,
    FrameRoute,
    RecordBatchInput,
    RecordPredictionsInput,
    ValidateFramesInput,
)
from workflows.policies import DB_RETRY, DB_TIMEOUT, SERVING_RETRY, SERVING_TIMEOUT
from workflows.review_task import start_review_task
from workflows.review_types import ReviewTaskInput
from workflows.routing import routes_for

with workflow.unsafe.imports_passed_through():
    from activities.legacy_batch import LegacyBatchActivities



def route_frames(
    predictions: list[FramePrediction], rules: RoutingRules, sample: list[float]
) -> list[FrameRoute]:
    """`sample[i]` is a uniform draw for prediction i (workflow.random, so replays draw the same)."""
    return [FrameRoute(p.frame_id, route, reason)
            for p, draw in zip(predictions, sample, strict=True)
            for route, reason in routes_for(p.label, p.confidence, False, rules, draw)]


class LegacyBatchSteps:
    """The old steps, run by FrameBatchWorkflow for batches that started on them; they report their
    progress into the workflow's own BatchProgress."""

    def __init__(self, progress: BatchProgress) -> None:
        self.progress = progress

    def _set_status(self, status: str) -> None:
        self.progress.status = status
        workflow.upsert_search_attributes([sa.STATUS.value_set(status)])

    async def run(self, input: FrameBatchInput) -> FrameBatchResult:
        self.progress.frames_total = total = len(input.frames)
        self._set_status(BatchStatus.RUNNING)
        await workflow.execute_activity_method(
            LegacyBatchActivities.record_batch,
            RecordBatchInput(input.batch_id, input.camera_id, input.site_id, workflow.info().run_id, input.frames),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )

        results = await asyncio.gather(
            *(
                workflow.execute_activity_method(
                    LegacyBatchActivities.validate_frames,
                    ValidateFramesInput(input.batch_id, start, min(start + input.chunk_size, total)),
                    start_to_close_timeout=timedelta(minutes=5),
                    # A killed worker's chunk is retried after this, not after the whole timeout.
                    heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=DB_RETRY,
                )
                for start in range(0, total, input.chunk_size)
            )
        )
        accepted: list[FrameRef] = [f for r in results for f in r.accepted]
        rejected: list[FrameOutcome] = [o for r in results for o in r.rejected]
        self.progress.frames_validated = len(accepted) + len(rejected)

        model_version: str | None = None
        predictions: list[FramePrediction] = []
        routes: list[FrameRoute] = []
        unclassifiable: list[FrameOutcome] = []  # passed validation, refused by the preprocessor
        # Batches started before classification existed replay without it.
        if accepted and workflow.patched("classify-and-route"):
            self._set_status(BatchStatus.CLASSIFYING)
            classified = await self._classify(input, accepted)
            for result in classified:
                predictions += result.predictions
                unclassifiable += result.rejections
            model_version = classified[0].model_version if classified else None
            if predictions:
                await workflow.execute_activity_method(
                    LegacyBatchActivities.record_predictions,
                    RecordPredictionsInput(input.batch_id, predictions),
                    start_to_close_timeout=DB_TIMEOUT,
                    retry_policy=DB_RETRY,
                )
            self.progress.frames_classified = len(predictions)
            routes = route_frames(predictions, input.rules, [workflow.random().random() for _ in predictions])
            await self._start_reviews(input, accepted, predictions, routes)
            await self._alert(input, predictions, routes, model_version)

        await workflow.execute_activity_method(
            LegacyBatchActivities.complete_batch,
            CompleteBatchInput(input.batch_id, BatchStatus.COMPLETED, model_version, routes, unclassifiable),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        defects = sum(1 for r in routes if r.route == "alert")
        updates: list[SearchAttributeUpdate[Any]] = [sa.STATUS.value_set(BatchStatus.COMPLETED),
                                                     sa.DEFECT_COUNT.value_set(defects)]
        if model_version:
            updates.append(sa.MODEL_VERSION.value_set(model_version))
        self.progress.status = BatchStatus.COMPLETED
        workflow.upsert_search_attributes(updates)
        return FrameBatchResult(
            batch_id=input.batch_id,
            status=BatchStatus.COMPLETED,
            frame_count=total,
            accepted=len(accepted) - len(unclassifiable),
            rejected=len(rejected) + len(unclassifiable),
            rejections=rejected + unclassifiable,
            model_version=model_version,
            label_counts=dict(Counter(p.label for p in predictions)),
            sent_to_review=sum(1 for r in routes if r.route == "review"),
            defects=defects,
        )

    async def _classify(self, input: FrameBatchInput, accepted: list[FrameRef]) -> list[ClassifyFramesResult]:
        chunks = [accepted[i : i + input.chunk_size] for i in range(0, len(accepted), input.chunk_size)]
        return list(
            await asyncio.gather(
                *(
                    workflow.execute_activity_method(
                        LegacyBatchActivities.classify_frames,
                        ClassifyFramesInput(input.batch_id, chunk, input.model_alias),
                        task_queue=input.inference_task_queue,
                        start_to_close_timeout=SERVING_TIMEOUT,
                        retry_policy=SERVING_RETRY,
                    )
                    for chunk in chunks
                )
            )
        )

    async def _start_reviews(
        self, input: FrameBatchInput, accepted: list[FrameRef], predictions: list[FramePrediction],
        routes: list[FrameRoute],
    ) -> None:
        """One ReviewTaskWorkflow per frame sent to review, abandoned: reviews take hours, the batch
        does not wait. The id comes from frame and reason, so a retried start opens no second task."""
        keys = {f.frame_id: f.object_key for f in accepted}
        by_frame = {p.frame_id: p for p in predictions}

        async def start(route: FrameRoute) -> None:
            prediction = by_frame[route.frame_id]
            defect = prediction.label not in input.rules.ok_labels
            route.workflow_id = await start_review_task(
                ReviewTaskInput(
                    frame_id=route.frame_id,
                    batch_id=input.batch_id,
                    object_key=keys[route.frame_id],
                    camera_id=input.camera_id,
                    site_id=input.site_id,
                    reason=route.reason,
                    predicted_label=prediction.label,
                    confidence=prediction.confidence,
                    classes=sorted(prediction.probabilities),
                    priority="high" if defect and route.reason == "low_confidence" else "normal",
                    reviews_required=input.rules.reviews_required,
                    model_version=prediction.model_version,
                )
            )

        await asyncio.gather(*(start(r) for r in routes if r.route == "review"))

    async def _alert(self, input: FrameBatchInput, predictions: list[FramePrediction], routes: list[FrameRoute],
                     model_version: str | None) -> None:
        """One signed webhook per batch with its confident defects, delivered by an abandoned child
        workflow: a dead endpoint retries there and never holds up the batch."""
        alerts = [r for r in routes if r.route == "alert"]
        if not alerts or not input.webhook_url:
            return
        by_frame = {p.frame_id: p for p in predictions}
        payload = {
            "batch_id": input.batch_id,
            "camera_id": input.camera_id,
            "site_id": input.site_id,
            "model_version": model_version,
            "defect_count": len(alerts),
            "defects": [
                {"frame_id": r.frame_id, "label": by_frame[r.frame_id].label,
                 "confidence": by_frame[r.frame_id].confidence}
                for r in alerts[:100]
            ],
        }
        workflow_id = await start_webhook_delivery(input.webhook_url, "batch.defects", payload,
                                                   delivery_id=f"{input.batch_id}.defects")
        for route in alerts:
            route.workflow_id = workflow_id
