"""The `retraining_runs` table: one row per RetrainingWorkflow, kept current by its activities.
Times are the workflow's: the drift policy's cooldown compares them with its own workflow time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row


async def start(conn: DbConnection, *, workflow_id: str, snapshot_id: str, trigger_kind: str,
                drift_report_id: str | None, requested_by: str, note: str, parameters: dict[str, Any],
                production_version: str | None, started_at: datetime) -> None:
    """The run is running. A retried start rewrites the same row; a new run of the same id (allowed
    after a failed or cancelled one) starts the row afresh."""
    await conn.execute(
        """
        INSERT INTO retraining_runs (workflow_id, snapshot_id, status, phase, trigger_kind, drift_report_id,
                                     requested_by, note, parameters, production_version, started_at)
        VALUES (%s, %s, 'running', 'starting', %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (workflow_id) DO UPDATE SET
            status = 'running', phase = 'starting', trigger_kind = EXCLUDED.trigger_kind,
            drift_report_id = EXCLUDED.drift_report_id, requested_by = EXCLUDED.requested_by,
            note = EXCLUDED.note, parameters = EXCLUDED.parameters,
            production_version = EXCLUDED.production_version, started_at = EXCLUDED.started_at,
            candidate_version = NULL, outcome = NULL, outcome_reason = NULL, evaluation = '{}'::jsonb,
            error = NULL, finished_at = NULL, updated_at = now()
        """,
        (workflow_id, snapshot_id, trigger_kind, drift_report_id, requested_by, note, Jsonb(parameters),
         production_version, started_at),
    )


async def finish(conn: DbConnection, workflow_id: str, *, status: str, phase: str, finished_at: datetime,
                 candidate_version: str | None, outcome: str | None, outcome_reason: str | None,
                 evaluation: dict[str, Any] | None, epochs_run: int | None, resumed_from_epoch: int | None,
                 error: str | None) -> None:
    await conn.execute(
        """
        UPDATE retraining_runs SET status = %s, phase = %s, finished_at = %s,
               candidate_version = coalesce(%s, candidate_version), outcome = %s, outcome_reason = %s,
               evaluation = coalesce(%s, evaluation), epochs_run = coalesce(%s, epochs_run),
               resumed_from_epoch = coalesce(%s, resumed_from_epoch), error = %s, updated_at = now()
         WHERE workflow_id = %s
        """,
        (status, phase, finished_at, candidate_version, outcome, outcome_reason,
         Jsonb(evaluation) if evaluation is not None else None, epochs_run, resumed_from_epoch, error, workflow_id),
    )


async def get(conn: DbConnection, workflow_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM retraining_runs WHERE workflow_id = %s", (workflow_id,))
    return await cur.fetchone()


async def listing(conn: DbConnection, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[Row]:
    cur = await conn.execute(
        "SELECT * FROM retraining_runs WHERE %(s)s::text IS NULL OR status = %(s)s"
        " ORDER BY started_at DESC, workflow_id LIMIT %(l)s OFFSET %(o)s",
        {"s": status, "l": limit, "o": offset},
    )
    return await cur.fetchall()


async def last_started_at(conn: DbConnection) -> datetime | None:
    """When the latest retraining run started (whatever became of it): the drift policy's cooldown."""
    cur = await conn.execute("SELECT max(started_at) AS at FROM retraining_runs")
    row = await cur.fetchone()
    return row["at"] if row else None
