"""The `drift_report_columns` table: Evidently's test of each column of a drift report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infra.db import DbConnection, Row


@dataclass(frozen=True)
class ColumnResult:
    column_name: str
    column_type: str
    stattest: str
    threshold: float | None
    score: float | None
    drifted: bool


async def replace(conn: DbConnection, report_id: str, columns: Sequence[ColumnResult]) -> None:
    """The report's columns, exactly these (a retried check leaves no stale row)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("DELETE FROM drift_report_columns WHERE report_id = %s", (report_id,))
        await cur.executemany(
            "INSERT INTO drift_report_columns (report_id, column_name, column_type, stattest, threshold, score,"
            " drifted) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(report_id, c.column_name, c.column_type, c.stattest, c.threshold, c.score, c.drifted) for c in columns],
        )


async def of_report(conn: DbConnection, report_id: str) -> list[Row]:
    cur = await conn.execute(
        "SELECT column_name, column_type, stattest, threshold, score, drifted FROM drift_report_columns"
        " WHERE report_id = %s ORDER BY drifted DESC, column_name", (report_id,))
    return await cur.fetchall()
