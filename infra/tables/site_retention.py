"""Per-site retention overrides (`site_retention`, migration 0016): days per kind of record, NULL for the
settings' default, 0 for kept for ever."""

from __future__ import annotations

from infra.db import DbConnection, Row

KINDS = ("frames", "predictions", "review_tasks", "drift_reports")


async def get(conn: DbConnection, site_id: str) -> Row | None:
    return await (await conn.execute("SELECT * FROM site_retention WHERE site_id = %s", (site_id,))).fetchone()


async def put(conn: DbConnection, site_id: str, days: dict[str, int | None], updated_by: str) -> Row:
    row = await (await conn.execute(
        """INSERT INTO site_retention (site_id, frames_days, predictions_days, review_tasks_days, drift_reports_days,
                                       updated_by)
           VALUES (%(site)s, %(frames)s, %(predictions)s, %(review_tasks)s, %(drift_reports)s, %(by)s)
           ON CONFLICT (site_id) DO UPDATE SET
               frames_days = EXCLUDED.frames_days, predictions_days = EXCLUDED.predictions_days,
               review_tasks_days = EXCLUDED.review_tasks_days, drift_reports_days = EXCLUDED.drift_reports_days,
               updated_by = EXCLUDED.updated_by, updated_at = now()
           RETURNING *""",
        {"site": site_id, "by": updated_by, **{k: days.get(k) for k in KINDS}})).fetchone()
    assert row is not None
    return row
