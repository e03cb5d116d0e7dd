"""Activities of ReviewTaskWorkflow: its policy from settings, the labels reviewers give, escalations,
and the review listing projection.

Every write is keyed (review id, reviewer) or versioned, so Temporal's retries and a worker killed
mid-write leave exactly the rows one run would.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from temporalio import activity

from activities import metrics
from infra.db import DbPool
from infra.log import get_logger
from infra.settings import Settings
from infra.tables import batches, review_escalations, review_labels, review_tasks
from workflows.review_types import (
    EscalationInput,
    ProjectionUpdate,
    RecordLabelInput,
    ReviewPolicy,
    ReviewPolicyInput,
    ReviewStatus,
    is_correction,
    priority_name,
)

log = get_logger(__name__)

# The contracts carry times as ISO strings (workflow time); Postgres columns are timestamptz.
_TIMES = ("escalated_at", "claim_expires_at", "sla_due_at", "created_at", "decided_at")


def _with_times(row: dict[str, Any]) -> dict[str, Any]:
    for name in _TIMES:
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    return row


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _json_or_none(value: Any) -> Jsonb | None:
    """A box set for a jsonb column; None (a classification task or decision) stays SQL NULL."""
    return None if value is None else Jsonb(value)


def projection_row(update: ProjectionUpdate) -> dict[str, Any]:
    """The review_tasks row of an update: the task as opened, its state now (which wins where both say,
    e.g. the current priority), and what only the projection keeps."""
    final = update.view.final_label
    return _with_times({
        **asdict(update.task), **asdict(update.view),
        "version": update.version, "run_id": update.run_id, "escalated_at": update.escalated_at,
        "decided_by": list(update.decided_by),
        "corrected": is_correction(final, update.task.predicted_label) if final else None,
        "boxes": _json_or_none(update.task.boxes), "final_boxes": _json_or_none(update.view.final_boxes),
    })


class ReviewActivities:
    def __init__(self, pool: DbPool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    @activity.defn
    async def review_policy(self, input: ReviewPolicyInput) -> ReviewPolicy:
        """The SLA for the task's priority and the claim lease, read once when the task opens (the
        workflow keeps them in its history, so a settings change affects new tasks only)."""
        slas = self.settings.review_sla_seconds
        sla = slas.get(priority_name(input.priority)) or slas.get("normal") or 4 * 3600.0
        return ReviewPolicy(
            sla_seconds=float(sla),
            claim_lease_seconds=float(self.settings.review_claim_lease_seconds),
            escalation_webhook_url=self.settings.review_escalation_webhook_url,
        )

    @activity.defn
    async def sync_review_projection(self, input: ProjectionUpdate) -> None:
        row = projection_row(input)
        async with self.pool.connection() as conn, conn.transaction():
            await batches.lock_for_recount(conn, input.task.batch_id)
            changed = await review_tasks.upsert_projection(conn, row)
            if changed:
                await batches.recount_reviews(conn, input.task.batch_id)
        if input.view.status == ReviewStatus.DECIDED and changed:  # counted once, not again by a retry
            metrics.record_review_decided(input.task.site_id, input.task.camera_id, input.task.model_version,
                                          bool(row["corrected"]), _seconds_between(input.view.created_at,
                                                                                   input.view.decided_at))
        if input.view.status == ReviewStatus.DECIDED:
            log.info("review decided", review_id=input.view.review_id, label=input.view.final_label,
                     corrected=row["corrected"])

    @activity.defn
    async def record_review_label(self, input: RecordLabelInput) -> None:
        d = input.decision
        async with self.pool.connection() as conn:
            await review_labels.insert(conn, _with_times({
                **asdict(input), **asdict(d), "model_confidence": input.confidence,
                "is_correction": is_correction(d.label, input.predicted_label), "boxes": _json_or_none(d.boxes),
            }))
        log.info("review label recorded", review_id=input.review_id, reviewer=d.reviewer_id, label=d.label)

    @activity.defn
    async def record_escalation(self, input: EscalationInput) -> None:
        async with self.pool.connection() as conn:
            await review_escalations.upsert(conn, _with_times(asdict(input)))
        log.warning("review escalated", review_id=input.review_id, priority=input.priority_after)
