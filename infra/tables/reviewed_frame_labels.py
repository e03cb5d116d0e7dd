"""Reads of the `reviewed_frame_labels` view (migration 0005): each reviewed frame's final label, the
ground truth dataset snapshots take. Written by nobody here: review tasks' projection feeds it."""

from __future__ import annotations

from datetime import datetime

from infra.db import DbConnection, Row


async def decided_until(conn: DbConnection, until: datetime) -> list[Row]:
    """Every reviewed frame whose final label was decided up to `until`, with the sha256 validation
    recorded for its bytes: (frame_id, object_key, sha256, label, boxes), ordered by frame id; `boxes` is
    the decided box set of a detection review or an import (migration 0018), None for a class decision."""
    cur = await conn.execute(
        "SELECT l.frame_id, l.object_key, coalesce(f.sha256, '') AS sha256, l.label, l.boxes"
        "  FROM reviewed_frame_labels l LEFT JOIN frames f ON f.frame_id = l.frame_id"
        " WHERE l.decided_at <= %s ORDER BY l.frame_id",
        (until,),
    )
    return await cur.fetchall()


async def count_decided_since(conn: DbConnection, since: datetime | None) -> int:
    """Reviewed frames whose final label was decided after `since` (all of them when None)."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM reviewed_frame_labels WHERE %(since)s::timestamptz IS NULL"
        " OR decided_at > %(since)s", {"since": since})
    row = await cur.fetchone()
    return int(row["n"]) if row else 0
