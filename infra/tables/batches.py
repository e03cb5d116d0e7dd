"""The `batches` table: one row per frame batch (its id equals the FrameBatchWorkflow id).

Written when the API accepts a batch, when its workflow starts and completes, and whenever one of its
review tasks changes (the review totals). Totals are always recomputed from the rows they count, so
a retried write leaves the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from infra.db import DbConnection, Row


async def admit(conn: DbConnection, *, batch_id: str, camera_id: str, site_id: str, idempotency_key: str,
                frame_count: int, webhook_url: str | None, fingerprint: str, max_in_flight: int,
                trace_id: str | None = None, model: str = "production") -> Row | None:
    """Record a new batch as 'received' unless its site already has `max_in_flight` batches received
    or running. The row comes back with `created` true; a batch of this id that exists already comes
    back as it is with `created` false (its frames and status untouched); None means admission refused
    a new batch. One statement, so a site's count and the insert cannot race apart by much. `model`: the
    alias or version the batch asked to be classified with (migration 0019)."""
    cur = await conn.execute(
        """
        INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count, webhook_url,
                             request_fingerprint, trace_id, model)
        SELECT %(batch)s, %(camera)s, %(site)s, %(key)s, 'received', %(frames)s, %(webhook)s, %(fingerprint)s,
               %(trace)s, %(model)s
         WHERE (SELECT count(*) FROM batches WHERE site_id = %(site)s AND status IN ('received', 'running'))
               < %(limit)s
        ON CONFLICT (batch_id) DO UPDATE SET batch_id = batches.batch_id  -- no change: returns the row
        RETURNING *, (xmax = 0) AS created
        """,
        {"batch": batch_id, "camera": camera_id, "site": site_id, "key": idempotency_key, "frames": frame_count,
         "webhook": webhook_url, "fingerprint": fingerprint, "limit": max_in_flight, "trace": trace_id,
         "model": model},
    )
    return await cur.fetchone()


async def reopen_failed(conn: DbConnection, batch_id: str) -> Row | None:
    """A failed batch back to 'received' for another run (its frames, and any predictions an earlier
    run recorded, stay: the next run upserts over them). None unless it had failed."""
    cur = await conn.execute(
        "UPDATE batches SET status = 'received', failure_reason = NULL, completed_at = NULL, updated_at = now()"
        " WHERE batch_id = %s AND status = 'failed' RETURNING *, false AS created",
        (batch_id,),
    )
    return await cur.fetchone()


async def in_flight(conn: DbConnection, site_id: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM batches WHERE site_id = %s AND status IN ('received', 'running')", (site_id,))
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def record_running(conn: DbConnection, *, batch_id: str, camera_id: str, site_id: str, frame_count: int,
                         run_id: str | None) -> None:
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


async def mark_running(conn: DbConnection, batch_id: str, run_id: str | None,
                       model_version: str | None = None) -> None:
    """The first classification of a batch the API recorded: 'received' becomes 'running', with the
    production version that classified it when given (a retried closing step reads it back)."""
    await conn.execute(
        "UPDATE batches SET status = 'running', run_id = %s, started_at = coalesce(started_at, now()),"
        " model_version = coalesce(%s, model_version), updated_at = now()"
        " WHERE batch_id = %s AND status IN ('received', 'running')",
        (run_id, model_version, batch_id),
    )


async def complete(conn: DbConnection, *, batch_id: str, status: str, model_version: str | None,
                   failure: str | None = None) -> None:
    """Close the batch ('completed' or 'failed', with the reason) with its totals, derived from its
    frames, routes and predictions. Each accepted frame has the one prediction of the version that
    answered it (a traffic split sends some frames to a canary): the totals count every one of them,
    and `version_counts` says how many each version answered."""
    await conn.execute(
        """
        UPDATE batches b SET status = %(status)s, model_version = %(model)s, failure_reason = %(failure)s,
               completed_at = coalesce(b.completed_at, now()), updated_at = now(),
               accepted_count = (SELECT count(*) FROM frames f WHERE f.batch_id = b.batch_id AND f.status = 'accepted'),
               rejected_count = (SELECT count(*) FROM frames f WHERE f.batch_id = b.batch_id AND f.status = 'rejected'),
               sent_to_review = (SELECT count(*) FROM frame_routes r JOIN frames f USING (frame_id)
                                  WHERE f.batch_id = b.batch_id AND r.route = 'review'),
               defect_count = (SELECT count(*) FROM frame_routes r JOIN frames f USING (frame_id)
                                WHERE f.batch_id = b.batch_id AND r.route = 'alert'),
               unfamiliar_count = (SELECT count(*) FROM predictions p JOIN frames f USING (frame_id)
                                    WHERE f.batch_id = b.batch_id AND f.status = 'accepted' AND p.unfamiliar),
               label_counts = coalesce((SELECT jsonb_object_agg(label, n) FROM (
                                  SELECT p.label, count(*) AS n FROM predictions p JOIN frames f USING (frame_id)
                                   WHERE f.batch_id = b.batch_id AND f.status = 'accepted'
                                   GROUP BY p.label) counts), '{}'::jsonb),
               version_counts = coalesce((SELECT jsonb_object_agg(model_version, n) FROM (
                                  SELECT p.model_version, count(*) AS n
                                    FROM predictions p JOIN frames f USING (frame_id)
                                   WHERE f.batch_id = b.batch_id AND f.status = 'accepted'
                                   GROUP BY p.model_version) counts), '{}'::jsonb)
         WHERE batch_id = %(batch)s
        """,
        {"status": status, "model": model_version, "batch": batch_id, "failure": failure},
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


async def per_camera(conn: DbConnection, window_hours: float, site_id: str | None = None,
                     within: Scope | None = None) -> list[Row]:
    """Each camera's batches created within the window, with their frame totals, busiest first."""
    where, params = _scoped(within)
    where.append("created_at >= now() - make_interval(secs => %s)")
    params.append(window_hours * 3600)
    if site_id is not None:
        where.append("site_id = %s")
        params.append(site_id)
    cur = await conn.execute(
        "SELECT camera_id, site_id, count(*) AS batches, sum(frame_count) AS frames,"
        "       sum(accepted_count) AS classified, sum(rejected_count) AS rejected,"
        "       sum(unfamiliar_count) AS unfamiliar, sum(defect_count) AS defects,"
        "       sum(sent_to_review) AS sent_to_review, max(created_at) AS last_batch_at"
        "  FROM batches WHERE " + " AND ".join(where)
        + " GROUP BY camera_id, site_id ORDER BY sum(frame_count) DESC, camera_id",
        params,
    )
    return await cur.fetchall()


@dataclass(frozen=True)
class Scope:
    """The sites and cameras a scoped API key may see; an empty tuple is no limit on that dimension."""

    site_ids: tuple[str, ...] = ()
    camera_ids: tuple[str, ...] = ()


def _scoped(within: Scope | None) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if within and within.site_ids:
        where.append("site_id = ANY(%s)")
        params.append(list(within.site_ids))
    if within and within.camera_ids:
        where.append("camera_id = ANY(%s)")
        params.append(list(within.camera_ids))
    return where, params


async def get(conn: DbConnection, batch_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM batches WHERE batch_id = %s", (batch_id,))
    return await cur.fetchone()


async def get_many(conn: DbConnection, batch_ids: list[str]) -> list[Row]:
    cur = await conn.execute("SELECT * FROM batches WHERE batch_id = ANY(%s)", (batch_ids,))
    return await cur.fetchall()


async def stale_received(conn: DbConnection, older_than_s: float, limit: int) -> list[Row]:
    """Batches still 'received' this long after they were last touched: their request recorded them and
    then died (or Temporal was away) before their workflow started, or their workflow has not run its
    first step yet. Oldest first."""
    cur = await conn.execute(
        "SELECT * FROM batches WHERE status = 'received' AND updated_at < now() - make_interval(secs => %s)"
        " ORDER BY updated_at LIMIT %s",
        (older_than_s, limit),
    )
    return await cur.fetchall()


async def release(conn: DbConnection, batch_id: str, reason: str) -> bool:
    """A 'received' batch that can never run (its frames were never stored) to 'failed' with the reason:
    it no longer holds one of its site's slots, and resubmitting the request runs it again."""
    cur = await conn.execute(
        "UPDATE batches SET status = 'failed', failure_reason = %s, completed_at = now(), updated_at = now()"
        " WHERE batch_id = %s AND status = 'received'",
        (reason, batch_id),
    )
    return cur.rowcount == 1


async def touch(conn: DbConnection, batch_id: str) -> None:
    """The sweep started this batch's workflow: it is not stale again until another sweep interval passes."""
    await conn.execute("UPDATE batches SET updated_at = now() WHERE batch_id = %s AND status = 'received'",
                       (batch_id,))


async def page(conn: DbConnection, *, camera_id: str | None = None, site_id: str | None = None,
               status: str | None = None, created_after: datetime | None = None,
               created_before: datetime | None = None, before: tuple[str, str] | None = None,
               limit: int = 50, within: Scope | None = None) -> list[Row]:
    """Newest first; `before` is the (created_at, batch_id) of the last row of the previous page;
    `within` keeps to the sites and cameras a scoped key may see."""
    where, params = _scoped(within)
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
