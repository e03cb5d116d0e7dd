"""The `drift_reports` table: one row per site checked by a DriftCheckWorkflow (its id is the report
id), with the verdict, the HTML report's object key and, once the policy ran, its decision."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from infra.db import DbConnection, Row

COLUMNS = ("report_id", "run_id", "site_id", "model_version", "status", "drift_share", "drifted_columns",
           "total_columns", "reference_frames", "current_frames", "current_from", "current_until",
           "unfamiliar_rate_reference", "unfamiliar_rate_current", "html_key", "requested_by", "checked_at")



def keyed_upsert(table: str, columns: tuple[str, ...], key: str) -> str:
    """INSERT of a row bound by column name, replacing every other column of the row with that key:
    a retried write leaves the row one write would."""
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(f'%({c})s' for c in columns)})"
            f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key))


_UPSERT = keyed_upsert("drift_reports", COLUMNS, "report_id")


async def upsert(conn: DbConnection, row: Mapping[str, Any]) -> None:
    """The report's verdict; a retried check rewrites the same row."""
    await conn.execute(_UPSERT, row)


async def set_decision(conn: DbConnection, report_id: str, decision: str, reason: str,
                       retraining_workflow_id: str | None, webhook_workflow_id: str | None) -> None:
    await conn.execute(
        "UPDATE drift_reports SET decision = %s, decision_reason = %s, retraining_workflow_id = %s,"
        " webhook_workflow_id = %s WHERE report_id = %s",
        (decision, reason, retraining_workflow_id, webhook_workflow_id, report_id),
    )


async def get(conn: DbConnection, report_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM drift_reports WHERE report_id = %s", (report_id,))
    return await cur.fetchone()


async def listing(conn: DbConnection, *, site_id: str | None = None, status: str | None = None,
                  before: datetime | None = None, limit: int = 50) -> list[Row]:
    """Newest first; `before` (a checked_at) pages back."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    for column, value in (("site_id", site_id), ("status", status)):
        if value:
            where.append(f"{column} = %s")
            params.append(value)
    if before is not None:
        where.append("checked_at < %s")
        params.append(before)
    cur = await conn.execute(
        f"SELECT * FROM drift_reports WHERE {' AND '.join(where)} ORDER BY checked_at DESC, report_id LIMIT %s",
        (*params, limit),
    )
    return await cur.fetchall()
