"""The `rollouts` table: one row per ModelRolloutWorkflow, kept current by its activities (the workflow's
state as it was when written); the lease that lets one rollout at a time hold a model line
(`rollout_leases`); and the stage figures its gates are judged on, read from the predictions serving
recorded (`predictions`, `shadow_predictions`, `prediction_errors`, reviewers' labels)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from infra.db import DbConnection, Row

LINE = "default"  # the one model line (vision.registry.LINE)


async def upsert(conn: DbConnection, *, rollout_id: str, candidate_version: str, previous_version: str | None,
                 status: str, stage: str, split: dict[str, Any], gates: list[Any], reason: str | None,
                 requested_by: str, started_at: datetime, finished_at: datetime | None) -> None:
    await conn.execute(
        """
        INSERT INTO rollouts (rollout_id, candidate_version, previous_version, status, stage, split, gates, reason,
                              requested_by, started_at, finished_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (rollout_id) DO UPDATE SET
            candidate_version = EXCLUDED.candidate_version,
            previous_version = coalesce(EXCLUDED.previous_version, rollouts.previous_version),
            status = EXCLUDED.status, stage = EXCLUDED.stage, split = EXCLUDED.split, gates = EXCLUDED.gates,
            reason = EXCLUDED.reason, requested_by = EXCLUDED.requested_by, started_at = EXCLUDED.started_at,
            finished_at = EXCLUDED.finished_at, updated_at = now()
        """,
        (rollout_id, candidate_version, previous_version, status, stage, Jsonb(split), Jsonb(gates), reason,
         requested_by, started_at, finished_at),
    )


async def get(conn: DbConnection, rollout_id: str) -> Row | None:
    return await (await conn.execute("SELECT * FROM rollouts WHERE rollout_id = %s", (rollout_id,))).fetchone()


async def listing(conn: DbConnection, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[Row]:
    cur = await conn.execute(
        "SELECT * FROM rollouts WHERE %(s)s::text IS NULL OR status = %(s)s"
        " ORDER BY started_at DESC, rollout_id LIMIT %(l)s OFFSET %(o)s",
        {"s": status, "l": limit, "o": offset},
    )
    return await cur.fetchall()


# ---- the lease: one rollout at a time per model line ----

async def take_lease(conn: DbConnection, *, rollout_id: str, run_id: str, candidate_version: str,
                     line: str = LINE) -> Row:
    """Take the line for this rollout unless another holds it: the holder afterwards (this rollout's
    row, or the other's). A later run of the same rollout id takes over: the earlier one has closed
    (Temporal runs one workflow per id at a time)."""
    for _ in range(3):  # the holder may let go between the insert and the read: ask again
        cur = await conn.execute(
            """INSERT INTO rollout_leases (line, rollout_id, run_id, candidate_version) VALUES (%s, %s, %s, %s)
               ON CONFLICT (line) DO UPDATE SET run_id = EXCLUDED.run_id, candidate_version = EXCLUDED.candidate_version
                   WHERE rollout_leases.rollout_id = EXCLUDED.rollout_id
               RETURNING *""", (line, rollout_id, run_id, candidate_version))
        taken = await cur.fetchone()
        if taken is not None:
            return taken
        holder = await lease_holder(conn, line)
        if holder is not None:
            return holder
    raise RuntimeError(f"the lease of model line {line!r} kept changing hands")


async def lease_holder(conn: DbConnection, line: str = LINE) -> Row | None:
    return await (await conn.execute("SELECT * FROM rollout_leases WHERE line = %s", (line,))).fetchone()


async def release_lease(conn: DbConnection, *, rollout_id: str, run_id: str, line: str = LINE) -> bool:
    """Let go of the line if this run of this rollout holds it; whether it did."""
    cur = await conn.execute("DELETE FROM rollout_leases WHERE line = %s AND rollout_id = %s AND run_id = %s",
                             (line, rollout_id, run_id))
    return cur.rowcount > 0


async def holder_running(client: Client, holder: Row) -> bool:
    """Whether the lease's holder still runs: one that was terminated or failed never let go."""
    handle = client.get_workflow_handle(holder["rollout_id"], run_id=holder["run_id"] or None)
    try:
        return (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise


# ---- the figures a stage's gates are judged on ----

_CANARY = """
SELECT count(*) AS frames,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY (p.timings->>'infer_ms')::float) AS p95_infer_ms,
       avg(p.unfamiliar::int) AS unfamiliar_rate,
       avg((p.confidence < %(low)s)::int) AS low_confidence_rate
  FROM predictions p WHERE p.model_version = %(v)s AND p.created_at >= %(since)s
"""

_SHADOW = """
SELECT count(*) AS frames,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY s.infer_ms) AS p95_infer_ms,
       avg(s.unfamiliar::int) AS unfamiliar_rate,
       avg((s.confidence < %(low)s)::int) AS low_confidence_rate,
       count(p.frame_id) AS compared,
       avg((s.label = p.label)::int) FILTER (WHERE p.frame_id IS NOT NULL) AS agreement,
       avg(p.unfamiliar::int) AS production_unfamiliar_rate,
       avg((p.confidence < %(low)s)::int) AS production_low_confidence_rate
  FROM shadow_predictions s
  LEFT JOIN predictions p ON p.frame_id = s.frame_id AND p.model_version = %(prod)s
 WHERE s.model_version = %(v)s AND s.created_at >= %(since)s
"""

# A detection shadow's box sets beside production's on the same frames (both detection versions).
_SHADOW_BOXES = """
SELECT s.boxes AS shadow_boxes, p.boxes AS production_boxes
  FROM shadow_predictions s
  JOIN predictions p ON p.frame_id = s.frame_id AND p.model_version = %(prod)s
 WHERE s.model_version = %(v)s AND s.created_at >= %(since)s AND s.boxes IS NOT NULL AND p.boxes IS NOT NULL
"""


async def shadow_box_pairs(conn: DbConnection, *, candidate: str, production: str, since: datetime) -> list[Row]:
    """(shadow_boxes, production_boxes) per frame both detection versions answered in the stage."""
    cur = await conn.execute(_SHADOW_BOXES, {"v": candidate, "prod": production, "since": since})
    return await cur.fetchall()


_ERRORS = """
SELECT count(*) AS errors FROM prediction_errors
 WHERE model_version = %(v)s AND shadow = %(shadow)s AND created_at >= %(since)s
"""

# Reviewers' corrections of a version's answers on frames it answered in the stage (`tbl` names where
# its answers are: predictions for a canary, shadow_predictions for a shadow).
_CORRECTIONS = """
SELECT count(*) AS labelled, avg((x.label <> r.label)::int) AS correction_rate
  FROM {tbl} x JOIN reviewed_frame_labels r ON r.frame_id = x.frame_id
 WHERE x.model_version = %(v)s AND x.created_at >= %(since)s
"""


async def _one(conn: DbConnection, sql: str, params: dict[str, Any]) -> Row:
    row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None  # aggregates always answer one row
    return row


async def stage_figures(conn: DbConnection, *, candidate: str, production: str, shadow: bool, since: datetime,
                        low_confidence: float) -> dict[str, Any]:
    """The candidate's figures since the stage began, and production's to compare with: on the same
    frames for a shadow stage, on the same window for a canary."""
    params = {"v": candidate, "prod": production, "since": since, "low": low_confidence, "shadow": shadow}
    figures = dict(await _one(conn, _SHADOW if shadow else _CANARY, params))
    if not shadow:
        theirs = await _one(conn, _CANARY, {**params, "v": production})
        figures["production_unfamiliar_rate"] = theirs["unfamiliar_rate"]
        figures["production_low_confidence_rate"] = theirs["low_confidence_rate"]
    figures["errors"] = (await _one(conn, _ERRORS, params))["errors"]
    mine = await _one(conn, _CORRECTIONS.format(tbl="shadow_predictions" if shadow else "predictions"), params)
    theirs = await _one(conn, _CORRECTIONS.format(tbl="predictions"), {**params, "v": production})
    figures["labelled"], figures["correction_rate"] = mine["labelled"], mine["correction_rate"]
    figures["production_correction_rate"] = theirs["correction_rate"]
    return figures
