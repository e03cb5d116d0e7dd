"""The `review_tasks` table: the review queue, a projection of every ReviewTaskWorkflow.

The workflow writes whole rows (`upsert_projection`), each with a version that only grows, so a late
or retried write of an older state never wins. The API writes only a seconds-long reservation while it
confirms a "next task" claim with the workflow (`reserve_next`), so two concurrent pickers never try
the same task; the workflow still decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row

# Every column the workflow owns; `upsert_projection` binds each by name from the row it is given.
PROJECTION_COLUMNS = (
    "review_id", "version", "run_id", "frame_id", "batch_id", "object_key", "camera_id", "site_id", "reason",
    "predicted_label", "confidence", "model_version", "classes", "reviews_required", "status", "stage",
    "priority", "escalated", "escalated_at", "claimed_by", "claimed_by_name", "claim_expires_at", "sla_due_at",
    "decided_by", "final_label", "corrected", "created_at", "decided_at",
    "boxes", "final_boxes",  # detection tasks (migration 0018): the model's boxes, the decided set (jsonb)
)
# What a task never changes after it opens.
_FIXED = {"review_id", "frame_id", "batch_id", "object_key", "camera_id", "site_id", "reason", "predicted_label",
          "confidence", "model_version", "classes", "reviews_required", "created_at", "boxes"}

_UPSERT = (
    f"INSERT INTO review_tasks ({', '.join(PROJECTION_COLUMNS)})"
    f" VALUES ({', '.join(f'%({c})s' for c in PROJECTION_COLUMNS)})"
    " ON CONFLICT (review_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in PROJECTION_COLUMNS if c not in _FIXED)
    + ", updated_at = now() WHERE review_tasks.version < EXCLUDED.version"
)

_BOX_COLUMNS = ("boxes", "final_boxes")


def _jsonb(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, list) else value


# Fields of a "next task" scope; each narrows the candidates to one value.
SCOPE_FIELDS = ("camera_id", "site_id", "batch_id", "reason")


@dataclass
class QueueFilters:
    status: str | None = None        # pending, claimed, decided, open (pending + claimed; the default)
    camera_id: str | None = None
    site_id: str | None = None
    batch_id: str | None = None
    reason: str | None = None
    escalated: bool | None = None
    limit: int = 50
    offset: int = 0
    # The caller's key scope (empty: any): only tasks at these sites and cameras are listed.
    allowed_sites: Sequence[str] = ()
    allowed_cameras: Sequence[str] = ()


def _key_scope(sites: Sequence[str], cameras: Sequence[str]) -> tuple[str, dict[str, list[str]]]:
    """SQL conditions (to AND in) limiting tasks to a key's sites and cameras, and their parameters."""
    sql = (" AND site_id = ANY (%(key_sites)s)" if sites else "") + (
        " AND camera_id = ANY (%(key_cameras)s)" if cameras else "")
    return sql, {"key_sites": list(sites), "key_cameras": list(cameras)}


async def upsert_projection(conn: DbConnection, row: Mapping[str, Any]) -> bool:
    """Write the row unless a newer version is there; True when it was written. `row` holds at least
    PROJECTION_COLUMNS (other keys are ignored)."""
    row = {**row, **{c: _jsonb(row.get(c)) for c in _BOX_COLUMNS}}  # absent on a classification task's row
    missing = [c for c in PROJECTION_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"projection row lacks {', '.join(missing)}")
    cur = await conn.execute(_UPSERT, row)
    return cur.rowcount > 0


async def get(conn: DbConnection, review_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM review_tasks WHERE review_id = %s", (review_id,))
    return await cur.fetchone()


async def listing(conn: DbConnection, filters: QueueFilters) -> list[Row]:
    """Pending first, then claimed, then decided; within each, highest priority, then oldest."""
    where: list[str] = []
    status = filters.status or "open"
    params: dict[str, object] = {"status": status, "escalated": filters.escalated, "limit": filters.limit,
                                 "offset": filters.offset}
    where.append("status <> 'decided'" if status == "open" else "status = %(status)s")
    for column in SCOPE_FIELDS:
        value = getattr(filters, column)
        if value:
            where.append(f"{column} = %({column})s")
            params[column] = value
    if filters.escalated is not None:
        where.append("escalated = %(escalated)s")
    key_scope, key_params = _key_scope(filters.allowed_sites, filters.allowed_cameras)
    sql = (
        "SELECT * FROM review_tasks WHERE " + " AND ".join(where) + key_scope
        + " ORDER BY CASE status WHEN 'pending' THEN 0 WHEN 'claimed' THEN 1 ELSE 2 END,"
        " priority DESC, created_at, review_id LIMIT %(limit)s OFFSET %(offset)s"
    )
    cur = await conn.execute(sql, {**params, **key_params})
    return await cur.fetchall()


async def reserve_next(conn: DbConnection, reviewer_id: str, *, hold_seconds: float, skip: Sequence[str],
                       scope: Mapping[str, str], allowed_sites: Sequence[str] = (),
                       allowed_cameras: Sequence[str] = ()) -> str | None:
    """Reserve the most urgent task this reviewer may take for `hold_seconds`, within the asked scope and
    the key's own (allowed sites and cameras; empty: any); its id, or None."""
    key_scope, key_params = _key_scope(allowed_sites, allowed_cameras)
    scoped = "".join(f" AND {field} = %({field})s" for field in SCOPE_FIELDS if scope.get(field)) + key_scope
    cur = await conn.execute(
        """
        UPDATE review_tasks SET reserved_by = %(me)s,
               reserved_until = clock_timestamp() + make_interval(secs => %(hold)s)
         WHERE review_id = (
               SELECT review_id FROM review_tasks
                WHERE status <> 'decided'
                  AND (status = 'pending' OR claim_expires_at < now())
                  AND NOT (%(me)s = ANY (decided_by))
                  AND (reserved_until IS NULL OR reserved_until < clock_timestamp())
                  AND review_id <> ALL (%(skip)s)""" + scoped + """
                ORDER BY priority DESC, created_at, review_id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
        RETURNING review_id
        """,
        {"me": reviewer_id, "hold": hold_seconds, "skip": list(skip),
         **{field: scope.get(field) for field in SCOPE_FIELDS}, **key_params},
    )
    row = await cur.fetchone()
    return row["review_id"] if row else None


async def release_reservation(conn: DbConnection, review_id: str, reviewer_id: str) -> None:
    await conn.execute("UPDATE review_tasks SET reserved_until = NULL WHERE review_id = %s AND reserved_by = %s",
                       (review_id, reviewer_id))


async def claimed_by(conn: DbConnection, reviewer_id: str) -> str | None:
    """A task this reviewer holds an unexpired claim on, the one expiring first."""
    cur = await conn.execute(
        "SELECT review_id FROM review_tasks WHERE claimed_by = %s AND status = 'claimed'"
        " AND claim_expires_at > now() ORDER BY claim_expires_at LIMIT 1",
        (reviewer_id,),
    )
    row = await cur.fetchone()
    return row["review_id"] if row else None


async def claims_held(conn: DbConnection, reviewer_id: str, *, besides: str | None = None) -> int:
    """How many tasks this reviewer holds an unexpired claim on, not counting `besides`."""
    cur = await conn.execute(
        "SELECT count(*) AS held FROM review_tasks WHERE claimed_by = %s AND status = 'claimed'"
        " AND claim_expires_at > now() AND review_id IS DISTINCT FROM %s",
        (reviewer_id, besides),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["held"])


async def open_counts(conn: DbConnection) -> Row:
    """pending, claimed and escalated open tasks, and the oldest open task's creation time."""
    cur = await conn.execute(
        """
        SELECT count(*) FILTER (WHERE status = 'pending' OR claim_expires_at < now()) AS pending,
               count(*) FILTER (WHERE status = 'claimed' AND claim_expires_at >= now()) AS claimed,
               count(*) FILTER (WHERE escalated) AS escalated,
               min(created_at) AS oldest_created_at
          FROM review_tasks WHERE status <> 'decided'
        """
    )
    row = await cur.fetchone()
    assert row is not None  # an aggregate always returns a row
    return row


async def decided_stats(conn: DbConnection, window_hours: float) -> Row:
    """Tasks decided within the window: how many, latency p50/p95, labelled, corrected, unusable, escalated."""
    cur = await conn.execute(
        """
        SELECT count(*) AS decided,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - created_at)) AS p95,
               count(*) FILTER (WHERE final_label <> 'unusable') AS labelled,
               count(*) FILTER (WHERE corrected) AS corrected,
               count(*) FILTER (WHERE final_label = 'unusable') AS unusable,
               count(*) FILTER (WHERE escalated) AS escalated
          FROM review_tasks
         WHERE status = 'decided' AND decided_at >= now() - make_interval(secs => %s)
        """,
        (window_hours * 3600,),
    )
    row = await cur.fetchone()
    assert row is not None
    return row
