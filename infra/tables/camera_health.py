"""The camera health tables (migration 0015): `camera_health` (one row per site and camera),
`camera_health_samples` (one per classified chunk: the evaluation's key and record) and
`camera_health_events` (every change of state).

A chunk is judged once: `claim_chunk` inserts its sample with the aggregates Postgres computes over the
chunk's accepted frames (the metrics of vision.camera_health, and the runs of identical sha256 in
position order) in the same statement, and returns nothing for a chunk judged before, so a retried
classification never judges it twice. `lock_camera` creates or locks the camera's row for the rest of the
transaction: chunks of one camera are judged one after another, each on the state the last one left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row
from infra.tables.batches import Scope

# One statement: the chunk's metrics per accepted frame (from its prediction's quality features), their
# moments, and its runs of identical frames (gaps and islands over the accepted frames in position
# order: a run is a stretch where the frame's rank minus its rank among frames of the same sha256 holds).
_CLAIM = """
WITH accepted AS (
    SELECT f.position, f.sha256, q.quality,
           row_number() OVER (ORDER BY f.position) AS rank
      FROM frames f
      LEFT JOIN LATERAL (SELECT p.quality FROM predictions p WHERE p.frame_id = f.frame_id LIMIT 1) q ON true
     WHERE f.batch_id = %(batch)s AND f.position >= %(start)s AND f.position < %(end)s AND f.status = 'accepted'
), features AS (
    SELECT (quality->>'brightness')::float8 AS b, (quality->>'contrast')::float8 AS c,
           (quality->>'sharpness')::float8 AS s
      FROM accepted
), metrics AS (
    SELECT b AS brightness,
           CASE WHEN c IS NOT NULL THEN c / greatest(b, 0.001) END AS rel_contrast,
           CASE WHEN s IS NOT NULL THEN s / greatest(c * c, 0.0001) END AS rel_sharpness
      FROM features WHERE b IS NOT NULL
), runs AS (
    SELECT sha256, count(*) AS n, min(rank) AS first, max(rank) AS last
      FROM (SELECT sha256, rank, rank - row_number() OVER (PARTITION BY sha256 ORDER BY position) AS island
              FROM accepted WHERE sha256 <> '') numbered
     GROUP BY sha256, island
), totals AS (
    SELECT count(*) AS frames, max(rank) AS last_rank FROM accepted
)
INSERT INTO camera_health_samples (batch_id, start_pos, end_pos, site_id, camera_id, frames, metrics,
                                   leading_sha256, leading_run, trailing_sha256, trailing_run, single_run)
SELECT %(batch)s, %(start)s, %(end)s, %(site)s, %(camera)s, t.frames,
       jsonb_build_object(
           'brightness', (SELECT jsonb_build_object('n', count(brightness), 'sum', coalesce(sum(brightness), 0),
                                                    'sumsq', coalesce(sum(brightness * brightness), 0)) FROM metrics),
           'rel_contrast', (SELECT jsonb_build_object('n', count(rel_contrast), 'sum', coalesce(sum(rel_contrast), 0),
                                                      'sumsq', coalesce(sum(rel_contrast * rel_contrast), 0))
                              FROM metrics),
           'rel_sharpness', (SELECT jsonb_build_object('n', count(rel_sharpness),
                                                       'sum', coalesce(sum(rel_sharpness), 0),
                                                       'sumsq', coalesce(sum(rel_sharpness * rel_sharpness), 0))
                               FROM metrics)),
       coalesce((SELECT sha256 FROM runs WHERE first = 1), ''), coalesce((SELECT n FROM runs WHERE first = 1), 0),
       coalesce((SELECT sha256 FROM runs WHERE last = t.last_rank), ''),
       coalesce((SELECT n FROM runs WHERE last = t.last_rank), 0),
       t.frames > 0 AND coalesce((SELECT n FROM runs WHERE first = 1), 0) = t.frames
  FROM totals t
ON CONFLICT (batch_id, start_pos) DO NOTHING
RETURNING *, (SELECT coalesce(max(n), 0) FROM runs) AS longest_run
"""


async def claim_chunk(conn: DbConnection, *, batch_id: str, start: int, end: int, site_id: str,
                      camera_id: str) -> Row | None:
    """The new sample of positions [start, end) with its aggregates, or None when it was judged before."""
    cur = await conn.execute(_CLAIM, {"batch": batch_id, "start": start, "end": end, "site": site_id,
                                      "camera": camera_id})
    return await cur.fetchone()


async def lock_camera(conn: DbConnection, *, site_id: str, camera_id: str, calibration_target: int,
                      batch_id: str, webhook_url: str | None) -> Row:
    """The camera's row, created when missing, locked until the transaction ends. Its webhook URL
    becomes the one this chunk's batch named, when it named one."""
    cur = await conn.execute(
        """
        INSERT INTO camera_health (site_id, camera_id, calibration_target, webhook_url)
        VALUES (%(site)s, %(camera)s, %(target)s,
                coalesce(%(url)s, (SELECT webhook_url FROM batches WHERE batch_id = %(batch)s)))
        ON CONFLICT (site_id, camera_id) DO UPDATE
           SET webhook_url = coalesce(EXCLUDED.webhook_url, camera_health.webhook_url)
        RETURNING *
        """,
        {"site": site_id, "camera": camera_id, "target": calibration_target, "url": webhook_url, "batch": batch_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return row


@dataclass(frozen=True)
class Update:
    """The camera's row after a chunk, and what the chunk's sample records."""

    state: str
    reasons: list[str]
    announced: str
    calibration: dict
    calibrated: bool
    recent: dict
    last_sha256: str
    repeated_frames: int
    state_changed: bool
    transitions: int


async def save(conn: DbConnection, *, site_id: str, camera_id: str, batch_id: str, start: int,
               update: Update) -> Row:
    """Write the camera's row and the chunk's sample in one statement; the row comes back."""
    cur = await conn.execute(
        """
        WITH sample AS (
            UPDATE camera_health_samples SET state = %(state)s, reasons = %(reasons)s,
                   degraded = %(state)s = 'degraded'
             WHERE batch_id = %(batch)s AND start_pos = %(start)s
        )
        UPDATE camera_health SET state = %(state)s, reasons = %(reasons)s, announced = %(announced)s,
               since = CASE WHEN %(changed)s THEN now() ELSE since END,
               calibration = %(calibration)s, recent = %(recent)s,
               calibrated_at = CASE WHEN %(calibrated)s THEN coalesce(calibrated_at, now()) END,
               last_sha256 = %(sha)s, repeated_frames = %(repeated)s, transitions = %(transitions)s,
               last_batch_id = %(batch)s, evaluated_at = now(), updated_at = now()
         WHERE site_id = %(site)s AND camera_id = %(camera)s
        RETURNING *
        """,
        {"state": update.state, "reasons": update.reasons, "announced": update.announced,
         "changed": update.state_changed, "calibration": Jsonb(update.calibration), "recent": Jsonb(update.recent),
         "calibrated": update.calibrated, "sha": update.last_sha256, "repeated": update.repeated_frames,
         "transitions": update.transitions, "batch": batch_id, "start": start, "site": site_id,
         "camera": camera_id},
    )
    row = await cur.fetchone()
    assert row is not None
    return row


@dataclass(frozen=True)
class NewEvent:
    site_id: str
    camera_id: str
    seq: int
    from_state: str
    to_state: str
    reasons: list[str]
    event: str | None
    details: dict
    batch_id: str | None = None
    start_pos: int | None = None
    actor: str | None = None
    webhook_workflow_ids: Sequence[str] = ()


async def record_event(conn: DbConnection, event: NewEvent) -> None:
    await conn.execute(
        "INSERT INTO camera_health_events (site_id, camera_id, seq, from_state, to_state, reasons, event, details,"
        " batch_id, start_pos, actor, webhook_workflow_ids)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (event.site_id, event.camera_id, event.seq, event.from_state, event.to_state, event.reasons, event.event,
         Jsonb(event.details), event.batch_id, event.start_pos, event.actor, list(event.webhook_workflow_ids)),
    )


async def event_of_chunk(conn: DbConnection, batch_id: str, start: int) -> Row | None:
    """The event a chunk caused, if it caused one (what a retried activity announces again)."""
    cur = await conn.execute("SELECT * FROM camera_health_events WHERE batch_id = %s AND start_pos = %s",
                             (batch_id, start))
    return await cur.fetchone()


async def get(conn: DbConnection, site_id: str, camera_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM camera_health WHERE site_id = %s AND camera_id = %s",
                             (site_id, camera_id))
    return await cur.fetchone()


async def listed(conn: DbConnection, site_id: str | None = None, within: Scope | None = None,
                 state: str | None = None) -> list[Row]:
    """Cameras' health rows within a key's scope, degraded first."""
    where: list[str] = ["true"]
    params: list[object] = []
    if within and within.site_ids:
        where.append("site_id = ANY(%s)")
        params.append(list(within.site_ids))
    if within and within.camera_ids:
        where.append("camera_id = ANY(%s)")
        params.append(list(within.camera_ids))
    if site_id is not None:
        where.append("site_id = %s")
        params.append(site_id)
    if state is not None:
        where.append("state = %s")
        params.append(state)
    cur = await conn.execute(
        "SELECT * FROM camera_health WHERE " + " AND ".join(where)
        + " ORDER BY state = 'degraded' DESC, since DESC, site_id, camera_id", params)
    return await cur.fetchall()


async def events(conn: DbConnection, site_id: str, camera_id: str, limit: int = 20) -> list[Row]:
    cur = await conn.execute(
        "SELECT * FROM camera_health_events WHERE site_id = %s AND camera_id = %s ORDER BY seq DESC LIMIT %s",
        (site_id, camera_id, limit))
    return await cur.fetchall()


async def recalibrate(conn: DbConnection, site_id: str, camera_id: str, calibration_target: int) -> Row | None:
    """Forget the camera's calibration: it calibrates again on its next frames (state 'calibrating').
    What receivers were told stays: a degraded camera is announced recovered once it is seen well. The
    run of identical frames stays too, so a frozen camera stays frozen. Locks the row; None if missing."""
    cur = await conn.execute(
        """
        UPDATE camera_health h SET state = 'calibrating', reasons = '{}', since = now(), calibration = '{}',
               calibration_target = %s, calibrated_at = NULL, recent = '{}', transitions = h.transitions + 1,
               updated_at = now()
          FROM (SELECT site_id, camera_id, state FROM camera_health WHERE site_id = %s AND camera_id = %s
                FOR UPDATE) before
         WHERE h.site_id = before.site_id AND h.camera_id = before.camera_id
        RETURNING h.*, before.state AS previous_state
        """,
        (calibration_target, site_id, camera_id),
    )
    return await cur.fetchone()
