"""The `batches` table: one row per frame batch (its id equals the FrameBatchWorkflow id).

Written when the API accepts a batch, when its workflow starts and completes, and whenever one of its
review tasks changes (the review totals). Totals are always recomputed from the rows they count, so
a retried write leaves the same numbers.
"""

from __future__ import annotations

from datetime import datetime

from infra.db import DbConnection, Row


async def insert_received(conn: DbConnection, *, batch_id: str, camera_id: str, site_id: str,
                          idempotency_key: str, frame_count: int, webhook_url: str | None) -> Row | None:
    """The new row, or None when a row with this id exists already (a resubmission)."""
    cur = await conn.execute(
        """
        INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count, webhook_url)
        VALUES (%s, %s, %s, %s, 'received', %s, %s)
        ON CONFLICT (batch_id) DO NOTHING RETURNING *
        """,
        (batch_id, camera_id, site_id, idempotency_key, frame_count, webhook_url),
    )
    return await cur.fetchone()


async def record_running(conn: DbConnection, *, batch_id: str, camera_id: str, site_id: str, frame_count: int,
                         run_id: str) -> None:
    """The workflow started: 'running', with its run id. Creates the row for batches that did not come
    through the API (a camera stream's)."""
    await conn.execute(
        """
        INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count, run_id, started_at)
        VALUES (%s, %s, %s, %s, 'running', %s, %s, now())
        ON CONFLICT (batch_id) DO UPDATE
           SET status = CASE WHEN batches.status = 'received' THEN 'running' ELSE batches.status END,
               run_id = EXCLUDED.run_id, updated_at = now(),
               started_at = coalesce(batches.started_at, now())
        """,
        (batch_id, camera_id, site_id, batch_id, frame_count, run_id),
    )


async def complete(conn: DbConnection, *, batch_id: str, status: str, model_version: str | None) -> None:
    """Close the batch with its totals, derived from its frames, routes and predictions."""
    await conn.execute(
        """
        UPDATE batches b SET status = %(status)s, model_version = %(model)s,
               completed_at = coalesce(b.completed_at, now()), updated_at = now(),
               accepted_count = (SELECT count(*) FROM frames f WHERE f.batch_id = b.batch_id AND f.status = 'accepted'),
               rejected_count = (SELECT count(*) FROM frames f WHERE f.batch_id = b.batch_id AND f.status = 'rejected'),
               sent_to_review = (SELECT count(*) FROM frame_routes r JOIN frames f USING (frame_id)
                                  WHERE f.batch_id = b.batch_id AND r.route = 'review'),
               defect_count = (SELECT count(*) FROM frame_routes r JOIN frames f USING (frame_id)
                                WHERE f.batch_id = b.batch_id AND r.route = 'alert'),
               label_counts = coalesce((SELECT jsonb_object_agg(label, n) FROM (
                                  SELECT p.label, count(*) AS n FROM predictions p JOIN frames f USING (frame_id)
                                   WHERE f.batch_id = b.batch_id AND p.model_version = %(model)s
                                     AND f.status = 'accepted'
                                   GROUP BY p.label) counts), '{}'::jsonb)
         WHERE batch_id = %(batch)s
        """,
        {"status": status, "model": model_version, "batch": batch_id},
    )


async def recount_reviews(conn: DbConnection, batch_id: str) -> None:
    """The batch's review totals from its review tasks. Run inside the transaction that changed a task,
    after `lock_for_recount`: concurrent tasks of one batch then recount one after another, and every
    recount sees the rows committed before it."""
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
        (batch_id, batch_id),
    )


async def lock_for_recount(conn: DbConnection, batch_id: str) -> None:
    await conn.execute("SELECT 1 FROM batches WHERE batch_id = %s FOR UPDATE", (batch_id,))


async def get(conn: DbConnection, batch_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM batches WHERE batch_id = %s", (batch_id,))
    return await cur.fetchone()


async def page(conn: DbConnection, *, camera_id: str | None = None, site_id: str | None = None,
               status: str | None = None, created_after: datetime | None = None,
               created_before: datetime | None = None, before: tuple[str, str] | None = None,
               limit: int = 50) -> list[Row]:
    """Newest first; `before` is the (created_at, batch_id) of the last row of the previous page."""
    where: list[str] = []
    params: list[object] = []
    for column, value in (("camera_id", camera_id), ("site_id", site_id), ("status", status)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if created_after:
        where.append("created_at >= %s")
        params.append(created_after)
    if created_before:
        where.append("created_at < %s")
        params.append(created_before)
    if before:
        where.append("(created_at, batch_id) < (%s::timestamptz, %s)")
        params += list(before)
    sql = "SELECT * FROM batches" + (" WHERE " + " AND ".join(where) if where else "")
    cur = await conn.execute(sql + " ORDER BY created_at DESC, batch_id DESC LIMIT %s", [*params, limit])
    return await cur.fetchall()
