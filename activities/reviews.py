"""Activities of ReviewTaskWorkflow: its policy from settings, the labels reviewers give, escalations,
and the review listing projection.

Every write is keyed (review id, reviewer) or versioned, so Temporal's retries and a worker killed
mid-write leave exactly the rows one run would.
"""

from __future__ import annotations

from datetime import datetime

from psycopg_pool import AsyncConnectionPool
from temporalio import activity

from infra.log import get_logger
from infra.settings import Settings
from workflows.review_types import (
    DECIDED,
    EscalationInput,
    ProjectionUpdate,
    RecordLabelInput,
    ReviewPolicy,
    ReviewPolicyInput,
    is_correction,
    priority_name,
)

log = get_logger(__name__)


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class ReviewActivities:
    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
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
        t = input.task
        corrected = is_correction(input.final_label, t.predicted_label) if input.final_label else None
        async with self.pool.connection() as conn, conn.transaction():
            # Lock the batch row first: concurrent tasks of one batch then recount one after another,
            # and every recount sees the rows committed before it.
            await conn.execute("SELECT 1 FROM batches WHERE batch_id = %s FOR UPDATE", (t.batch_id,))
            cur = await conn.execute(
                """
                INSERT INTO review_tasks (
                    review_id, version, run_id, frame_id, batch_id, object_key, camera_id, site_id, reason,
                    predicted_label, confidence, model_version, classes, reviews_required, status, stage,
                    priority, escalated, escalated_at, claimed_by, claimed_by_name, claim_expires_at, sla_due_at,
                    decided_by, final_label, corrected, created_at, decided_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                        %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (review_id) DO UPDATE SET
                    version = EXCLUDED.version, run_id = EXCLUDED.run_id, status = EXCLUDED.status,
                    stage = EXCLUDED.stage, priority = EXCLUDED.priority, escalated = EXCLUDED.escalated,
                    escalated_at = EXCLUDED.escalated_at, claimed_by = EXCLUDED.claimed_by,
                    claimed_by_name = EXCLUDED.claimed_by_name, claim_expires_at = EXCLUDED.claim_expires_at,
                    sla_due_at = EXCLUDED.sla_due_at, decided_by = EXCLUDED.decided_by,
                    final_label = EXCLUDED.final_label, corrected = EXCLUDED.corrected,
                    decided_at = EXCLUDED.decided_at, updated_at = now()
                WHERE review_tasks.version < EXCLUDED.version
                """,
                (
                    input.review_id, input.version, input.run_id, t.frame_id, t.batch_id, t.object_key,
                    t.camera_id, t.site_id, t.reason, t.predicted_label, t.confidence, t.model_version,
                    list(t.classes), 2 if t.reviews_required >= 2 else 1, input.status, input.stage,
                    input.priority, input.escalated, _ts(input.escalated_at), input.claimed_by,
                    input.claimed_by_name, _ts(input.claim_expires_at), _ts(input.sla_due_at),
                    list(input.decided_by), input.final_label, corrected, _ts(input.created_at),
                    _ts(input.decided_at),
                ),
            )
            if cur.rowcount:
                await conn.execute(
                    """
                    UPDATE batches b SET reviews_pending = s.pending, reviews_decided = s.decided,
                           review_corrections = s.corrections, reviews_escalated = s.escalated, updated_at = now()
                      FROM (SELECT count(*) FILTER (WHERE status <> 'decided') AS pending,
                                   count(*) FILTER (WHERE status = 'decided') AS decided,
                                   count(*) FILTER (WHERE corrected) AS corrections,
                                   count(*) FILTER (WHERE escalated) AS escalated
                              FROM review_tasks WHERE batch_id = %s) s
                     WHERE b.batch_id = %s
                    """,
                    (t.batch_id, t.batch_id),
                )
        if input.status == DECIDED:
            log.info("review decided", review_id=input.review_id, label=input.final_label, corrected=corrected)

    @activity.defn
    async def record_review_label(self, input: RecordLabelInput) -> None:
        d = input.decision
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO review_labels (
                    review_id, frame_id, batch_id, object_key, label, reviewer_id, reviewer_name, decided_at,
                    predicted_label, model_confidence, model_version, is_correction, note, stage)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (review_id, reviewer_id) DO NOTHING
                """,
                (
                    input.review_id, input.frame_id, input.batch_id, input.object_key, d.label, d.reviewer_id,
                    d.reviewer_name, _ts(d.decided_at), input.predicted_label, input.confidence,
                    input.model_version, is_correction(d.label, input.predicted_label), d.note, d.stage,
                ),
            )
        log.info("review label recorded", review_id=input.review_id, reviewer=d.reviewer_id, label=d.label)

    @activity.defn
    async def record_escalation(self, input: EscalationInput) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO review_escalations (
                    review_id, frame_id, batch_id, camera_id, site_id, reason, priority_before, priority_after,
                    sla_due_at, escalated_at, webhook_workflow_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (review_id) DO UPDATE SET
                    webhook_workflow_id = coalesce(EXCLUDED.webhook_workflow_id, review_escalations.webhook_workflow_id)
                """,
                (
                    input.review_id, input.frame_id, input.batch_id, input.camera_id, input.site_id, input.reason,
                    input.priority_before, input.priority_after, _ts(input.sla_due_at), _ts(input.escalated_at),
                    input.webhook_workflow_id,
                ),
            )
        log.warning("review escalated", review_id=input.review_id, priority=input.priority_after)
