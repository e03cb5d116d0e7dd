"""The `retraining_decisions` table: what the drift policy decided for a report, and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.db import DbConnection, Row
from infra.tables.drift_reports import keyed_upsert

COLUMNS = ("report_id", "site_id", "decision", "reason", "labels_available", "labels_required",
           "last_retraining_at", "cooldown_seconds", "snapshot_id", "retraining_workflow_id", "webhook_workflow_id",
           "decided_at")

_UPSERT = keyed_upsert("retraining_decisions", COLUMNS, "report_id")


async def upsert(conn: DbConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(_UPSERT, row)


async def of_report(conn: DbConnection, report_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM retraining_decisions WHERE report_id = %s", (report_id,))
    return await cur.fetchone()
