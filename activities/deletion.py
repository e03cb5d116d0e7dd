"""The DeletionWorkflow's activities: plan (the ledger), abort the rollouts of models trained on the
frames, delete a chunk, finish (derived artifacts, the verifier). Each is idempotent; counts are written
in the transaction that removed what they count, and each chunk is audited with its counts only."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.deletion_verifier import verify_deletion
from activities.frame_purge import delete_objects, delete_rows, end_review_workflows
from infra.db import DbConnection, DbPool, Row
from infra.log import get_logger
from infra.store import ObjectNotFoundError, ObjectStore
from infra.tables import deletions
from infra.tables.audit_log import append_once
from vision import lineage
from workflows.deletion_types import (
    AbortRolloutsInput,
    DeletionChunkInput,
    DeletionChunkResult,
    DeletionCounts,
    DeletionPlan,
    DeletionProgress,
    FinishDeletionInput,
    PlanDeletionInput,
)
from workflows.rollout_types import RolloutAction

log = get_logger(__name__)

ACTOR = "deletion"


def progress_of(row: Row) -> DeletionProgress:
    known = {k: int(v) for k, v in (row["counts"] or {}).items() if k in DeletionCounts.__dataclass_fields__}
    return DeletionProgress(deletion_id=row["deletion_id"], status=row["status"], frames_total=row["frames_total"],
                            frames_deleted=row["frames_deleted"], counts=DeletionCounts(**known),
                            aborted_rollouts=list(row["aborted_rollouts"]), verified=row["verified"])


async def mark_lineage(conn: DbConnection, deletion_id: str, frame_ids: list[str], requested_by: str) -> dict[str, int]:
    """In the chunk's transaction: the snapshots naming these frames are marked and the models trained on
    them record the deletion (how many frames, by whom, when)."""
    named = await (await conn.execute(
        "SELECT snapshot_id, count(*) AS n FROM snapshot_frames WHERE frame_id = ANY(%s) GROUP BY snapshot_id",
        (frame_ids,))).fetchall()
    models = 0
    for row in named:
        await conn.execute(
            "UPDATE dataset_snapshots SET deleted_frames = deleted_frames + %s,"
            " deletions = CASE WHEN %s = ANY(deletions) THEN deletions ELSE array_append(deletions, %s) END"
            " WHERE snapshot_id = %s", (row["n"], deletion_id, deletion_id, row["snapshot_id"]))
        models += (await conn.execute(
            "INSERT INTO model_data_deletions (version, deletion_id, frames, requested_by)"
            " SELECT version, %s, %s, %s FROM model_versions WHERE dataset_snapshot_id = %s"
            " ON CONFLICT (version, deletion_id) DO UPDATE SET frames = model_data_deletions.frames + EXCLUDED.frames,"
            " deleted_at = now()", (deletion_id, row["n"], requested_by, row["snapshot_id"]))).rowcount
    return {"snapshot_frames": sum(int(r["n"]) for r in named), "models_touched": models}


class DeletionActivities:
    def __init__(self, pool: DbPool, store: ObjectStore, temporal: Client) -> None:
        self.pool = pool
        self.store = store
        self.temporal = temporal

    @activity.defn
    async def plan_deletion(self, input: PlanDeletionInput) -> DeletionPlan:
        async with self.pool.connection() as conn:
            await lineage.index_snapshots(conn, self.store)
            row = await deletions.get(conn, input.deletion_id)
            if row is None:
                raise RuntimeError(f"deletion {input.deletion_id} has no request row")
            scope = asdict(input.scope)
            if row["status"] == "planning":
                async with conn.transaction():
                    total = await deletions.fill_ledger(conn, input.deletion_id, scope)
                    await deletions.set_status(conn, input.deletion_id, "deleting", frames_total=total)
            else:
                total = row["frames_total"]  # planned by an earlier attempt: the same frames
            holding = await conn.execute(
                """SELECT DISTINCT r.rollout_id FROM rollouts r
                     JOIN model_versions mv ON mv.version = r.candidate_version
                     JOIN snapshot_frames sf ON sf.snapshot_id = mv.dataset_snapshot_id
                     JOIN deletion_frames d ON d.frame_id = sf.frame_id AND d.deletion_id = %s
                    WHERE r.status IN ('running', 'paused', 'awaiting_approval') ORDER BY r.rollout_id""",
                (input.deletion_id,))
            rollouts = [r["rollout_id"] for r in await holding.fetchall()]
        return DeletionPlan(frames_total=total, rollouts=rollouts)

    @activity.defn
    async def abort_rollouts(self, input: AbortRolloutsInput) -> list[str]:
        """Abort each rollout through its workflow's update (refused when it has stopped already: fine)."""
        reason = (f"aborted by deletion {input.deletion_id} (requested by {input.requested_by}): it removes frames "
                  "the candidate was trained on")
        aborted = []
        for rollout_id in input.rollouts:
            try:
                await self.temporal.get_workflow_handle(rollout_id).execute_update(
                    "abort", RolloutAction(f"{input.requested_by} ({ACTOR})", "admin", reason))
                aborted.append(rollout_id)
            except WorkflowUpdateFailedError:
                aborted.append(rollout_id)  # stopping or stopped already: it no longer rolls out
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE deletion_requests SET aborted_rollouts = %s WHERE deletion_id = %s",
                               (aborted, input.deletion_id))
            await append_once(conn, action="deletion.rollouts_aborted", resource=f"deletions/{input.deletion_id}",
                              workflow_id=input.deletion_id, key_name=ACTOR, role=None,
                              details={"rollouts": aborted, "reason": reason})
        return aborted

    @activity.defn
    async def delete_chunk(self, input: DeletionChunkInput) -> DeletionChunkResult:
        async with self.pool.connection() as conn:
            rows = await deletions.pending(conn, input.deletion_id, input.limit)
            request = await deletions.get(conn, input.deletion_id)
        assert request is not None
        if not rows:
            return DeletionChunkResult(0, 0, progress_of(request))
        frame_ids = [r["frame_id"] for r in rows]
        activity.heartbeat(len(rows))
        ended = await end_review_workflows(self.pool, self.temporal, frame_ids,
                                           f"cancelled: deletion {input.deletion_id} removes its frame")
        objects = await delete_objects(self.pool, self.store, rows)
        activity.heartbeat(len(rows))
        async with self.pool.connection() as conn, conn.transaction():
            marked = await deletions.mark_purged(conn, input.deletion_id, frame_ids)
            lineage_counts = await mark_lineage(conn, input.deletion_id, frame_ids, request["requested_by"])
            counts = await delete_rows(conn, rows)
            chunk: dict[str, int] = {**counts, "objects": objects, "review_workflows_ended": ended,
                                     "snapshot_entries_marked": lineage_counts["snapshot_frames"]}
            updated = await deletions.add_counts(conn, input.deletion_id, chunk, marked)
            left = await deletions.remaining(conn, input.deletion_id)
            first = frame_ids[0]
            # Counts only: never a frame id or anything of the frames' content.
            await append_once(conn, action="deletion.chunk", resource=f"deletions/{input.deletion_id}#{first[-12:]}",
                              workflow_id=input.deletion_id, key_name=ACTOR, role=None,
                              details={"counts": chunk, "remaining": left})
        log.info("deletion chunk", deletion_id=input.deletion_id, frames=marked, remaining=left)
        return DeletionChunkResult(marked, left, progress_of(updated))

    @activity.defn
    async def finish_deletion(self, input: FinishDeletionInput) -> DeletionProgress:
        async with self.pool.connection() as conn:
            request = await deletions.get(conn, input.deletion_id)
            assert request is not None
            # Reports of the deleted frames' sites whose current window overlapped the frames' times.
            reports = await (await conn.execute(
                """SELECT DISTINCT r.report_id, r.html_key FROM drift_reports r
                     JOIN (SELECT site_id, min(created_at) AS lo, max(created_at) AS hi FROM deletion_frames
                            WHERE deletion_id = %s GROUP BY site_id) w ON w.site_id = r.site_id
                    WHERE r.samples_removed_by IS NULL AND r.html_key IS NOT NULL
                      AND (r.current_from IS NULL OR r.current_from <= w.hi)
                      AND (r.current_until IS NULL OR r.current_until >= w.lo)""",
                (input.deletion_id,))).fetchall()
        for drift_report in reports:
            with contextlib.suppress(ObjectNotFoundError):
                await asyncio.to_thread(self.store.delete, drift_report["html_key"])
        async with self.pool.connection() as conn, conn.transaction():
            if reports:
                await conn.execute("UPDATE drift_reports SET html_key = NULL, samples_removed_by = %s"
                                   " WHERE report_id = ANY(%s)", (input.deletion_id, [r["report_id"] for r in reports]))
                await deletions.add_counts(conn, input.deletion_id, {"drift_reports_rebuilt": len(reports)}, 0)
            await conn.execute(
                """UPDATE deletion_requests SET counts = counts || jsonb_build_object(
                       'snapshots_marked', (SELECT count(*) FROM dataset_snapshots WHERE %(id)s = ANY(deletions)),
                       'models_recorded', (SELECT count(*) FROM model_data_deletions WHERE deletion_id = %(id)s))
                    WHERE deletion_id = %(id)s""", {"id": input.deletion_id})
            await deletions.set_status(conn, input.deletion_id, "finishing")
        report = await verify_deletion(self.pool, self.store, input.deletion_id, activity.heartbeat)
        async with self.pool.connection() as conn, conn.transaction():
            await deletions.set_status(conn, input.deletion_id, "completed", verified=report.ok,
                                       verification=report.summary())
            row = await deletions.get(conn, input.deletion_id)
            assert row is not None
            await append_once(conn, action="deletion.completed", resource=f"deletions/{input.deletion_id}",
                              workflow_id=input.deletion_id, key_name=ACTOR, role=None,
                              details={"counts": row["counts"], "frames": row["frames_deleted"],
                                       "verified": report.ok})
        return progress_of(row)
