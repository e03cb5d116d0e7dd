"""Lineage: which stored frames each dataset snapshot names, and so which a model trained on it holds.

A snapshot's manifest lists its reviewed frames by frame id (vision.datasets); they are indexed into
`snapshot_frames` the first time lineage is asked about that snapshot. A registered model that is not
retired holds its snapshot's frames against retention (never against a deletion request, which removes
them and records it on the model: `model_data_deletions`)."""

from __future__ import annotations

import asyncio
from typing import Any

from infra.db import DbConnection, Row
from infra.store import ObjectNotFoundError, ObjectStore
from vision.datasets import REVIEWED, SnapshotManifest

# Frames a model that is not retired was trained on (its snapshot's reviewed frames).
HELD_FRAMES = """
    SELECT sf.frame_id FROM snapshot_frames sf
      JOIN model_versions mv ON mv.dataset_snapshot_id = sf.snapshot_id
      LEFT JOIN model_retirements r ON r.version = mv.version
     WHERE r.version IS NULL"""


async def index_snapshots(conn: DbConnection, store: ObjectStore) -> int:
    """Index every snapshot not indexed yet; how many were. A manifest missing from the store (a plan
    that never got built) indexes as empty."""
    rows = await (await conn.execute(
        "SELECT snapshot_id, manifest_key FROM dataset_snapshots WHERE frames_indexed_at IS NULL")).fetchall()
    for row in rows:
        try:
            body = await asyncio.to_thread(store.get, row["manifest_key"])
            entries = [e for e in SnapshotManifest.from_json(body).entries if e.source == REVIEWED]
        except ObjectNotFoundError:
            entries = []
        async with conn.transaction():
            if entries:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO snapshot_frames (snapshot_id, frame_id, sha256) VALUES (%s, %s, %s)"
                        " ON CONFLICT DO NOTHING", [(row["snapshot_id"], e.name, e.sha256) for e in entries])
            await conn.execute("UPDATE dataset_snapshots SET frames_indexed_at = now() WHERE snapshot_id = %s",
                               (row["snapshot_id"],))
    return len(rows)


async def rollouts_holding(conn: DbConnection, scope_condition: str, params: dict[str, Any]) -> list[Row]:
    """Running rollouts (running, paused, awaiting approval) whose candidate was trained on frames of the
    scope (`scope_condition` over frames f joined to batches b), with how many."""
    cur = await conn.execute(
        f"""SELECT r.rollout_id, r.candidate_version, count(DISTINCT f.frame_id) AS frames
              FROM rollouts r
              JOIN model_versions mv ON mv.version = r.candidate_version
              JOIN snapshot_frames sf ON sf.snapshot_id = mv.dataset_snapshot_id
              JOIN frames f ON f.frame_id = sf.frame_id
              JOIN batches b ON b.batch_id = f.batch_id
             WHERE r.status IN ('running', 'paused', 'awaiting_approval') AND {scope_condition}
             GROUP BY r.rollout_id, r.candidate_version ORDER BY r.rollout_id""", params)
    return await cur.fetchall()


async def retire(conn: DbConnection, version: str, retired_by: str, reason: str) -> Row:
    await conn.execute("INSERT INTO model_retirements (version, retired_by, reason) VALUES (%s, %s, %s)"
                       " ON CONFLICT (version) DO NOTHING", (version, retired_by, reason))
    row = await (await conn.execute("SELECT * FROM model_retirements WHERE version = %s", (version,))).fetchone()
    assert row is not None
    return row


async def model_data(conn: DbConnection, store: ObjectStore, version: str,
                     snapshot_id: str | None) -> dict[str, Any]:
    """What the model card shows of its data's life: the frames it holds against retention (while not
    retired), its retirement, and every deletion that removed frames it was trained on."""
    await index_snapshots(conn, store)
    retired = await (await conn.execute("SELECT retired_at, retired_by, reason FROM model_retirements"
                                        " WHERE version = %s", (version,))).fetchone()
    held = 0
    if snapshot_id and retired is None:
        row = await (await conn.execute(
            "SELECT count(*) AS n FROM snapshot_frames sf JOIN frames f ON f.frame_id = sf.frame_id"
            " WHERE sf.snapshot_id = %s", (snapshot_id,))).fetchone()
        held = int(row["n"]) if row else 0
    deletions = await (await conn.execute(
        "SELECT deletion_id, frames, requested_by, deleted_at FROM model_data_deletions WHERE version = %s"
        " ORDER BY deleted_at", (version,))).fetchall()
    return {
        "retention_hold": {"frames_held": held, "snapshot_id": snapshot_id, "active": retired is None and held > 0},
        "retired": dict(retired) if retired else None,
        "deletions": [dict(d) for d in deletions],
    }
