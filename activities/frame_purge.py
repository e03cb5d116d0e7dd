"""Removing frames for good, shared by deletion requests and retention: the open review tasks that show
them are cancelled (their workflows terminated with the reason), their objects leave the store (unless a
frame that stays has the same bytes), then their rows and every row that names them go in one transaction.

Idempotent: a retry after a crash between the store and the transaction finds the objects gone and
removes the rows; nothing is counted twice because counts are taken from the rows the transaction removes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from infra.db import DbConnection, DbPool, Row
from infra.log import get_logger
from infra.store import ObjectNotFoundError, ObjectStore, frame_key

log = get_logger(__name__)

# Tables of other features that carry a frame's sha256 (camera health, migration 0015): blanked when
# they exist, so a removed frame's digest is not left behind.
_SHA_COLUMNS = (("camera_health_samples", "leading_sha256"), ("camera_health_samples", "trailing_sha256"),
                ("camera_health", "last_sha256"))
# Tables of other features whose rows name a frame by id without a foreign key (labels imported from COCO
# files, migration 0018): their rows go with the frame when the table exists.
_FRAME_ID_TABLES = ("imported_labels",)


def frame_objects(rows: Sequence[Row]) -> set[str]:
    """Every store key a frame may have: its object (redacted or not) and its content address."""
    keys = {r["object_key"] for r in rows if r["object_key"]}
    keys |= {frame_key(r["sha256"]) for r in rows if r["sha256"]}
    return keys


async def end_review_workflows(pool: DbPool, temporal: Client, frame_ids: list[str], reason: str) -> int:
    """Terminate the workflows of the open review tasks of these frames; how many were running."""
    async with pool.connection() as conn:
        open_tasks = await (await conn.execute(
            "SELECT review_id FROM review_tasks WHERE frame_id = ANY(%s) AND status <> 'decided'",
            (frame_ids,))).fetchall()
    ended = 0
    for task in open_tasks:
        try:
            await temporal.get_workflow_handle(task["review_id"]).terminate(reason=reason)
            ended += 1
        except RPCError as exc:  # finished already, or never started: nothing to end
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
                raise
    return ended


async def delete_objects(pool: DbPool, store: ObjectStore, rows: Sequence[Row]) -> int:
    """Delete the frames' objects that no other frame refers to; how many keys that is."""
    frame_ids = [r["frame_id"] for r in rows]
    keys = frame_objects(rows)
    async with pool.connection() as conn:
        shared = await (await conn.execute(
            "SELECT DISTINCT object_key FROM frames WHERE object_key = ANY(%s) AND frame_id <> ALL(%s)",
            (list(keys), frame_ids))).fetchall()
        shared_digests = await (await conn.execute(
            "SELECT DISTINCT sha256 FROM frames WHERE sha256 = ANY(%s) AND frame_id <> ALL(%s)",
            ([r["sha256"] for r in rows if r["sha256"]], frame_ids))).fetchall()
    keep = {r["object_key"] for r in shared} | {frame_key(r["sha256"]) for r in shared_digests}
    doomed = sorted(keys - keep)

    def delete_all() -> None:
        for key in doomed:
            with contextlib.suppress(ObjectNotFoundError):
                store.delete(key)

    await asyncio.to_thread(delete_all)
    return len(doomed)


async def delete_rows(conn: DbConnection, rows: Sequence[Row]) -> dict[str, int]:
    """In the caller's transaction: every row that names these frames, then the frames, then the batches
    left without frames. Counts per kind."""
    frame_ids = [r["frame_id"] for r in rows]
    batch_ids = sorted({r["batch_id"] for r in rows})
    digests = [r["sha256"] for r in rows if r["sha256"]]

    async def count(sql: str) -> int:
        row = await (await conn.execute(sql, (frame_ids,))).fetchone()
        return int(row["n"]) if row else 0

    counts = {
        "predictions": await count("SELECT count(*) AS n FROM predictions WHERE frame_id = ANY(%s)"),
        "shadow_predictions": await count("SELECT count(*) AS n FROM shadow_predictions WHERE frame_id = ANY(%s)"),
    }
    counts["review_labels"] = (await conn.execute("DELETE FROM review_labels WHERE frame_id = ANY(%s)",
                                                  (frame_ids,))).rowcount
    await conn.execute("DELETE FROM review_escalations WHERE frame_id = ANY(%s)", (frame_ids,))
    counts["review_tasks"] = (await conn.execute("DELETE FROM review_tasks WHERE frame_id = ANY(%s)",
                                                 (frame_ids,))).rowcount
    # predictions, shadow predictions, prediction errors and frame routes go with the frame (ON DELETE CASCADE)
    counts["frames"] = (await conn.execute("DELETE FROM frames WHERE frame_id = ANY(%s)", (frame_ids,))).rowcount
    counts["batches"] = (await conn.execute(
        "DELETE FROM batches b WHERE b.batch_id = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM frames f WHERE f.batch_id = b.batch_id)", (batch_ids,))).rowcount
    await conn.execute("DELETE FROM snapshot_frames WHERE frame_id = ANY(%s)", (frame_ids,))
    for table in _FRAME_ID_TABLES:
        exists = await (await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS e", (table,))).fetchone()
        if exists and exists["e"]:
            counts[table] = (await conn.execute(f"DELETE FROM {table} WHERE frame_id = ANY(%s)",
                                                (frame_ids,))).rowcount
    for table, column in _SHA_COLUMNS:
        exists = await (await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS e", (table,))).fetchone()
        if exists and exists["e"] and digests:
            await conn.execute(f"UPDATE {table} SET {column} = '' WHERE {column} = ANY(%s)", (digests,))
    return counts
