"""Classification: one activity per chunk of a batch's positions (never one per frame). It reads the
frames' keys from Postgres, asks the inference service, and records what came back (predictions, each
frame's decode outcome, the batch running) in one transaction before it answers, so "classify" and
"record predictions" can never be split by a crash. It applies the routing rules to what it recorded
and returns only totals and the frames that go somewhere: the batch's history stays small whatever the
batch size.

Runs on the `inference` task queue, so serving capacity is scaled apart from orchestration.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Protocol

from opentelemetry import trace
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.batch_closing import BatchCloser, routes_with_workflows
from activities.camera_health import Announcement, CameraHealthMonitor
from activities.heartbeat import heartbeating
from infra.db import DbConnection, DbPool, Row
from infra.log import get_logger
from infra.span_files import BATCH_ATTRIBUTE
from infra.tables import batches, frame_routes, frames, prediction_errors, predictions, shadow_predictions
from infra.telemetry import span
from serving.client import ServingError
from serving.schema import ClassifyResponse
from workflows.batch_types import ClassifiedFrames, ClassifyBatchInput, RoutedFrame
from workflows.failures import RecordFailure, ServingFailure
from workflows.routing import ALERT, REVIEW, qa_draw, routes_for, routes_for_boxes

log = get_logger(__name__)

# The timings worth keeping with a prediction; the rest are for the service's own logs.
_KEPT_TIMINGS = ("preprocess_ms", "infer_ms")


class Classifier(Protocol):
    """What the activity needs of the inference service (serving.client has the implementations)."""

    async def classify(self, frames: list[tuple[str, str]], model: str = "production") -> ClassifyResponse: ...


def _r4(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in values.items()}


def serving_failure(exc: ServingError, batch_id: str) -> ApplicationError:
    """The activity failure for a serving error. Unreachable, overloaded, 5xx: Temporal retries with
    backoff. Bad input (4xx): retrying cannot help, so the activity fails at once with the service's reason."""
    log.warning("classification failed", batch_id=batch_id, retryable=exc.retryable, status=exc.status, error=str(exc))
    failure = ServingFailure.UNAVAILABLE if exc.retryable else ServingFailure.REJECTED
    return failure.error(str(exc))


class InferenceActivities:
    def __init__(self, classifier: Classifier, pool: DbPool, temporal: Client | None = None,
                 health: CameraHealthMonitor | None = None) -> None:
        self.classifier = classifier
        self.pool = pool
        # Judges each recorded chunk's camera (activities.camera_health); None: camera health is not kept.
        self.health = health
        # Opens review tasks and alerts for batches this activity closes (ClassifyBatchInput.close).
        self.closer = BatchCloser(temporal, pool) if temporal is not None else None

    @activity.defn
    async def classify_batch(self, input: ClassifyBatchInput) -> ClassifiedFrames:
        # The interceptor's RunActivity span, named for its batch: `sightline trace` finds a batch's trace
        # by it even when the batch did not begin at the API (a camera stream's).
        trace.get_current_span().set_attribute(BATCH_ATTRIBUTE, input.batch_id)
        async with span("db.read_frames"), self.pool.connection() as conn:
            rows = await frames.in_positions(conn, input.batch_id, input.start, input.end)
            recorded = await _recorded(conn, input, rows) if input.close else None
            # A retry after the record committed: announce again what the first attempt judged.
            retried = None if recorded is None or self.health is None else await self.health.recorded(
                conn, input.batch_id, input.start)
        await self._announce(retried, input)
        if len(rows) != input.end - input.start:
            raise RecordFailure.MISSING_FRAMES.error(
                f"batch {input.batch_id} has {len(rows)} recorded frames at positions [{input.start}, {input.end})")
        # A batch this activity closes acts on what it recorded: a retry after the record committed goes
        # on from it, never from another classification (a traffic split may have moved meanwhile).
        result = recorded or await self._classify(input, {row["frame_id"]: row["object_key"] for row in rows})
        if input.close:
            if self.closer is None:
                raise RuntimeError("classify_batch closes batches only with a Temporal client to open their tasks")
            await self.closer.open_and_close(input, result.routed, result.classes, result.model_version)
            return replace(result, routed=[], sent_to_review=sum(1 for r in result.routed if r.route == REVIEW),
                           defects=sum(1 for r in result.routed if r.route == ALERT))
        return result

    async def _announce(self, announcement: Announcement | None, input: ClassifyBatchInput) -> None:
        if self.health is not None and announcement is not None:
            await self.health.announce(announcement, input.review_task_queue)

    async def _classify(self, input: ClassifyBatchInput, keys: dict[str, str]) -> ClassifiedFrames:
        started = time.perf_counter()
        try:
            async with heartbeating():
                response = await self.classifier.classify(list(keys.items()), input.model_alias)
        except ServingError as exc:
            raise serving_failure(exc, input.batch_id) from exc

        version = response.model_version
        outcomes = [frames.Validation(p.frame_id, True, p.sha256, None, p.width, p.height, p.image_format)
                    for p in response.predictions]
        outcomes += [frames.Validation(r.frame_id, False, r.sha256, r.reason) for r in response.rejections]
        # Each prediction under the version that made it (a traffic split may send frames to several).
        rows_out = [predictions.NewPrediction(
            p.frame_id, p.model_version or version, p.label, round(p.confidence, 4), _r4(p.probabilities),
            _r4(p.quality), _r4({k: v for k, v in p.timings.items() if k in _KEPT_TIMINGS}),
            None if p.novelty is None else round(p.novelty, 4), p.unfamiliar, p.boxes,
        ) for p in response.predictions]
        # A detection version's frame is routed by its boxes, and its routes carry them (the review task
        # draws them, the alert sends them); a classifier's by its label, as always.
        routed = [RoutedFrame(p.frame_id, keys[p.frame_id], route, reason, p.label, round(p.confidence, 4),
                              model_version=p.model_version or version, boxes=p.boxes)
                  for p in response.predictions
                  for route, reason in (
                      routes_for(p.label, p.confidence, p.unfamiliar, input.rules, qa_draw(p.frame_id))
                      if p.boxes is None else
                      routes_for_boxes(p.boxes, p.unfamiliar, input.rules, qa_draw(p.frame_id)))]
        async with span("db.record_classification", frames=len(keys)), self.pool.connection() as conn, \
                conn.transaction():
            await batches.mark_running(conn, input.batch_id, activity.info().workflow_run_id,
                                       version if response.predictions else None)
            await frames.record_validation(conn, outcomes)
            # Exactly this attempt's answers: one that died before may have met another split.
            await predictions.replace_of_frames(conn, list(keys), rows_out)
            # The shadow's answers are kept apart and never routed; failures feed the rollout's gates.
            await shadow_predictions.replace_of_frames(conn, list(keys), [shadow_predictions.ShadowPrediction(
                s.frame_id, s.model_version, s.label, round(s.confidence, 4),
                None if s.novelty is None else round(s.novelty, 4), s.unfamiliar, s.infer_ms, s.boxes)
                for s in response.shadow_predictions])
            await prediction_errors.upsert(conn, [prediction_errors.PredictionError(
                f.frame_id, f.model_version, f.shadow, f.error) for f in response.version_failures])
            if input.close:  # with the workflow each route opens: what a retry acts on
                await frame_routes.upsert(conn, routes_with_workflows(input.batch_id, routed, bool(input.webhook_url)))
            announcement = None if self.health is None else await self.health.evaluate(
                conn, batch_id=input.batch_id, start=input.start, end=input.end, site_id=input.site_id,
                camera_id=input.camera_id, webhook_url=input.webhook_url)
        await self._announce(announcement, input)

        metrics.record_classified(input.site_id, input.camera_id, response, input.rules.review_below,
                                  time.perf_counter() - started)
        log.info("frames classified", batch_id=input.batch_id, model_version=version,
                 predictions=len(response.predictions), rejections=len(response.rejections), routed=len(routed),
                 total_ms=response.timings.get("total_ms"))
        classes = sorted(response.predictions[0].probabilities) if response.predictions else []
        return ClassifiedFrames(
            model_version=version if response.predictions else None, classes=classes,
            classified=len(response.predictions), rejected=len(response.rejections),
            unfamiliar=sum(1 for p in response.predictions if p.unfamiliar),
            label_counts=dict(Counter(p.label for p in response.predictions)), routed=routed,
            version_counts=dict(Counter(p.model_version or version for p in response.predictions)),
        )


async def _recorded(conn: DbConnection, input: ClassifyBatchInput, rows: list[Row]) -> ClassifiedFrames | None:
    """What an earlier attempt recorded for these frames, when it recorded all of them (every frame
    accepted or rejected): the totals and the routes, rebuilt from the rows."""
    if not rows or not await frames.all_validated(conn, [row["frame_id"] for row in rows]):
        return None
    found = await predictions.recorded_outcome(conn, [row["frame_id"] for row in rows])
    batch = await batches.get(conn, input.batch_id)
    keys = {row["frame_id"]: row["object_key"] for row in rows}
    routed = [RoutedFrame(r["frame_id"], keys[r["frame_id"]], r["route"], r["reason"], r["label"],
                          round(float(r["confidence"]), 4), r["workflow_id"], r["model_version"], r.get("boxes"))
              for r in found.routes]
    return ClassifiedFrames(model_version=batch["model_version"] if batch else None, classes=found.classes,
                            classified=found.classified, rejected=len(rows) - found.classified,
                            unfamiliar=found.unfamiliar, label_counts=found.label_counts, routed=routed,
                            version_counts=found.version_counts)
