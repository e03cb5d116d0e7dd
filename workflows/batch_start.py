"""How a recorded batch's FrameBatchWorkflow is started, the same way wherever it is started from: the API
when it accepts the batch, and the stale-batch sweep (workflows/batch_sweep.py) for a batch whose request
died between recording it and starting it. Pure: the caller brings the settings and the client."""

from __future__ import annotations

from typing import Any, Protocol

from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from workflows import search_attributes as sa
from workflows.batch_types import (
    DEFAULT_MODEL,
    BatchStatus,
    FrameBatchInput,
    ReviewOpening,
    RoutingRules,
    SubmittedFrame,
)


class BatchSettings(Protocol):
    """The settings a batch's input is made of (infra.settings.Settings has them all)."""

    review_confidence_threshold: float
    qa_sample_rate: float
    alert_confidence_threshold: float
    ok_labels: list[str]
    reviews_required: int
    classify_chunk_size: int
    inference_task_queue: str
    review_sla_seconds: dict[str, float]
    review_claim_lease_seconds: float
    review_escalation_webhook_url: str


def routing_rules(settings: BatchSettings) -> RoutingRules:
    """The routing rules in force now; a batch carries them in its input, so its history says which applied."""
    return RoutingRules(
        review_below=settings.review_confidence_threshold,
        qa_sample_rate=settings.qa_sample_rate,
        alert_at_or_above=settings.alert_confidence_threshold,
        ok_labels=list(settings.ok_labels),
        reviews_required=settings.reviews_required,
    )


def batch_input(settings: BatchSettings, batch_id: str, camera_id: str, site_id: str, frames: list[SubmittedFrame],
                webhook_url: str | None, frame_count: int = 0, model: str | None = None) -> FrameBatchInput:
    """A batch's workflow input: `frames` for a batch that records its own (a camera stream's),
    `frame_count` for one the API recorded; `model`: the alias or version the batch names (its row's
    `model`; None, as on a batch recorded before batches named one: production)."""
    return FrameBatchInput(batch_id, camera_id, site_id, frames, chunk_size=settings.classify_chunk_size,
                           webhook_url=webhook_url, rules=routing_rules(settings), model_alias=model or DEFAULT_MODEL,
                           inference_task_queue=settings.inference_task_queue, frame_count=frame_count,
                           steps_version=1, reviews=ReviewOpening(
                               dict(settings.review_sla_seconds), settings.review_claim_lease_seconds,
                               settings.review_escalation_webhook_url))


def start_options(batch_id: str, camera_id: str, site_id: str, task_queue: str) -> dict[str, Any]:
    """`Client.start_workflow` keywords for a recorded batch. Starting twice is harmless: a run already
    going is used as it is, and a closed run of the id is started again only if it failed (the batch
    was reopened for that)."""
    return {
        "id": batch_id,
        "task_queue": task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        "search_attributes": sa.at_start(camera_id, site_id, BatchStatus.RECEIVED.value),
    }
