"""Deletion requests (`deletion_requests`) and the ledger of the frames each one named (`deletion_frames`):
migration 0016. The ledger holds identifiers only (frame id, sha256, object key), the verifier's input."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row


async def create(conn: DbConnection, *, deletion_id: str, idempotency_key: str, fingerprint: str,
                 scope: dict[str, Any], force: bool, reason: str, requested_by: str) -> Row:
    """The request's row: the one just inserted, or the one already there under this id (a resubmission)."""
    await conn.execute(
        "INSERT INTO deletion_requests (deletion_id, idempotency_key, fingerprint, scope, force, reason, requested_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (deletion_id) DO NOTHING",
        (deletion_id, idempotency_key, fingerprint, Jsonb(scope), force, reason, requested_by))
    row = await get(conn, deletion_id)
    assert row is not None
    return row


async def get(conn: DbConnection, deletion_id: str) -> Row | None:
    return await (await conn.execute("SELECT * FROM deletion_requests WHERE deletion_id = %s",
                                     (deletion_id,))).fetchone()


async def set_status(conn: DbConnection, deletion_id: str, status: str, **extra: Any) -> None:
    sets = ", ".join(f"{k} = %({k})s" for k in extra)
    finished = ", finished_at = coalesce(finished_at, now())" if status in ("completed", "failed") else ""
    await conn.execute(
        f"UPDATE deletion_requests SET status = %(status)s, updated_at = now(){', ' + sets if sets else ''}{finished}"
        " WHERE deletion_id = %(id)s",
        {"status": status, "id": deletion_id, **{k: Jsonb(v) if isinstance(v, dict) else v for k, v in extra.items()}})


async def add_counts(conn: DbConnection, deletion_id: str, counts: dict[str, int], frames: int) -> Row:
    """Add a chunk's counts to the request's (in the chunk's transaction, so each is added once)."""
    row = await (await conn.execute(
        "SELECT counts FROM deletion_requests WHERE deletion_id = %s FOR UPDATE", (deletion_id,))).fetchone()
    assert row is not None
    total = dict(row["counts"])
    for key, n in counts.items():
        total[key] = int(total.get(key, 0)) + n
    updated = await (await conn.execute(
        "UPDATE deletion_requests SET counts = %s, frames_deleted = frames_deleted + %s, updated_at = now()"
        " WHERE deletion_id = %s RETURNING *", (Jsonb(total), frames, deletion_id))).fetchone()
    assert updated is not None
    return updated


# ---- the ledger ----

async def ledger_size(conn: DbConnection, deletion_id: str) -> int:
    row = await (await conn.execute("SELECT count(*) AS n FROM deletion_frames WHERE deletion_id = %s",
                                    (deletion_id,))).fetchone()
    return int(row["n"]) if row else 0


async def fill_ledger(conn: DbConnection, deletion_id: str, scope: dict[str, Any]) -> int:
    """Name the scope's frames in the ledger (frames recorded after it are not named: a deletion is of
    what existed when it was planned). Idempotent; the ledger's size."""
    await conn.execute(
        f"""INSERT INTO deletion_frames (deletion_id, frame_id, batch_id, sha256, object_key, site_id, created_at)
            SELECT %(id)s, f.frame_id, f.batch_id, f.sha256, f.object_key, b.site_id, f.created_at
              FROM frames f JOIN batches b ON b.batch_id = f.batch_id
             WHERE {scope_condition()}
            ON CONFLICT DO NOTHING""",
        {"id": deletion_id, **scope_params(scope)})
    return await ledger_size(conn, deletion_id)


def scope_condition() -> str:
    """The SQL condition (over frames f joined to batches b) of a scope's parameters (scope_params)."""
    return ("(%(site_id)s::text IS NULL OR b.site_id = %(site_id)s)"
            " AND (%(camera_id)s::text IS NULL OR b.camera_id = %(camera_id)s)"
            " AND (%(created_from)s::timestamptz IS NULL OR f.created_at >= %(created_from)s)"
            " AND (%(created_until)s::timestamptz IS NULL OR f.created_at < %(created_until)s)"
            " AND (cardinality(%(batch_ids)s::text[]) = 0 OR b.batch_id = ANY(%(batch_ids)s))")


def scope_params(scope: dict[str, Any]) -> dict[str, Any]:
    return {"site_id": scope.get("site_id"), "camera_id": scope.get("camera_id"),
            "created_from": scope.get("created_from"), "created_until": scope.get("created_until"),
            "batch_ids": list(scope.get("batch_ids") or [])}


async def count_in_scope(conn: DbConnection, scope: dict[str, Any]) -> int:
    row = await (await conn.execute(
        f"SELECT count(*) AS n FROM frames f JOIN batches b ON b.batch_id = f.batch_id WHERE {scope_condition()}",
        scope_params(scope))).fetchone()
    return int(row["n"]) if row else 0


async def pending(conn: DbConnection, deletion_id: str, limit: int) -> list[Row]:
    cur = await conn.execute(
        "SELECT frame_id, batch_id, sha256, object_key FROM deletion_frames"
        " WHERE deletion_id = %s AND purged_at IS NULL ORDER BY frame_id LIMIT %s", (deletion_id, limit))
    return await cur.fetchall()


async def mark_purged(conn: DbConnection, deletion_id: str, frame_ids: list[str]) -> int:
    cur = await conn.execute(
        "UPDATE deletion_frames SET purged_at = now() WHERE deletion_id = %s AND frame_id = ANY(%s)"
        " AND purged_at IS NULL", (deletion_id, frame_ids))
    return cur.rowcount


async def remaining(conn: DbConnection, deletion_id: str) -> int:
    row = await (await conn.execute(
        "SELECT count(*) AS n FROM deletion_frames WHERE deletion_id = %s AND purged_at IS NULL",
        (deletion_id,))).fetchone()
    return int(row["n"]) if row else 0


async def ledger(conn: DbConnection, deletion_id: str) -> list[Row]:
    cur = await conn.execute("SELECT frame_id, batch_id, sha256, object_key FROM deletion_frames"
                             " WHERE deletion_id = %s ORDER BY frame_id", (deletion_id,))
    return await cur.fetchall()
