"""The `frames` table: one row per frame of a batch (`<batch id>:<position>`), with what validation
and classification found. Inserts are keyed by frame id, so a retried write adds nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row
from infra.store import redacted_key_parts


@dataclass(frozen=True)
class NewFrame:
    frame_id: str
    position: int
    object_key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str = ""  # known for uploads (their key is their digest); filled by decoding otherwise
    # The privacy settings revision the stored bytes were redacted under; None: stored as received.
    # Both are read from a redacted frame's key when not given (a camera stream's frames carry keys only).
    redaction_revision: int | None = None

    def recorded(self) -> tuple[str, int | None]:
        """The sha256 of the bytes received and the redaction revision, as the row records them."""
        parts = redacted_key_parts(self.object_key)
        if parts is None:
            return self.sha256, self.redaction_revision
        return self.sha256 or parts[0], self.redaction_revision or parts[1]


@dataclass(frozen=True)
class Validation:
    """What decoding a frame found: accepted with its size and format, or rejected with the reason."""

    frame_id: str
    accepted: bool
    sha256: str
    reason: str | None = None
    width: int | None = None
    height: int | None = None
    image_format: str | None = None


async def insert(conn: DbConnection, batch_id: str, frames: Sequence[NewFrame]) -> None:
    """Record a batch's frames (one statement whatever their number); frames it has already are kept.
    Nothing is written unless the batch row exists, so it can follow an admission that refused."""
    recorded = [f.recorded() for f in frames]
    await conn.execute(
        """
        INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, filename, content_type, size_bytes,
                            redaction_revision)
        SELECT f.frame_id, %s, f.position, f.object_key, f.sha256, f.filename, f.content_type, f.size_bytes,
               f.redaction_revision
          FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[],
                      %s::bigint[])
               AS f(frame_id, position, object_key, sha256, filename, content_type, size_bytes, redaction_revision)
         WHERE EXISTS (SELECT 1 FROM batches WHERE batch_id = %s)
        ON CONFLICT (frame_id) DO NOTHING
        """,
        (batch_id, [f.frame_id for f in frames], [f.position for f in frames], [f.object_key for f in frames],
         [r[0] for r in recorded], [f.filename for f in frames], [f.content_type for f in frames],
         [f.size_bytes for f in frames], [r[1] for r in recorded], batch_id),
    )


async def in_positions(conn: DbConnection, batch_id: str, start: int, end: int) -> list[Row]:
    """frame_id and object_key of positions [start, end), in order."""
    cur = await conn.execute(
        "SELECT frame_id, object_key FROM frames WHERE batch_id = %s AND position >= %s AND position < %s"
        " ORDER BY position",
        (batch_id, start, end),
    )
    return await cur.fetchall()


async def record_validation(conn: DbConnection, outcomes: Sequence[Validation]) -> None:
    """Every frame's decode outcome, in one statement for the batch (its values as one JSON document:
    the cheapest hand-over, see infra.tables.predictions). A redacted frame keeps the sha256 it was
    received with: the decoder hashed the redacted bytes, which are not the frame's identity."""
    if not outcomes:
        return
    await conn.execute(
        """
        UPDATE frames f SET status = o.status, reject_reason = o.reason, width = o.width, height = o.height,
                            image_format = o.image_format,
                            sha256 = CASE WHEN f.redaction_revision IS NULL
                                          THEN coalesce(nullif(o.sha256, ''), f.sha256) ELSE f.sha256 END,
                            updated_at = now()
          FROM jsonb_to_recordset(%s::jsonb)
               AS o(frame_id text, status text, reason text, width int, height int, image_format text, sha256 text)
         WHERE f.frame_id = o.frame_id
        """,
        (Jsonb([{"frame_id": o.frame_id, "status": "accepted" if o.accepted else "rejected", "reason": o.reason,
                 "width": o.width, "height": o.height, "image_format": o.image_format, "sha256": o.sha256}
                for o in outcomes]),),
    )


async def reject(conn: DbConnection, rejections: Sequence[tuple[str, str | None]]) -> None:
    """(frame_id, reason) pairs: frames the classifier's preprocessing refused after validation."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "UPDATE frames SET status = 'rejected', reject_reason = %s, updated_at = now() WHERE frame_id = %s",
            [(reason, frame_id) for frame_id, reason in rejections],
        )


async def all_validated(conn: DbConnection, frame_ids: Sequence[str]) -> bool:
    """Whether every one of these frames was accepted or rejected (a classification recorded them)."""
    cur = await conn.execute("SELECT bool_and(status <> 'pending') AS done FROM frames WHERE frame_id = ANY(%s)",
                             (list(frame_ids),))
    row = await cur.fetchone()
    return bool(row and row["done"])


async def object_keys(conn: DbConnection, batch_id: str) -> list[str]:
    cur = await conn.execute("SELECT object_key FROM frames WHERE batch_id = %s ORDER BY position", (batch_id,))
    return [row["object_key"] for row in await cur.fetchall()]


async def get(conn: DbConnection, frame_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM frames WHERE frame_id = %s", (frame_id,))
    return await cur.fetchone()


async def with_latest_prediction(conn: DbConnection, batch_id: str, after_position: int = -1,
                                 limit: int | None = None) -> list[Row]:
    """A batch's frames in position order, each with its newest prediction (columns `p_*`, null when
    not classified) and its routes as 'route:reason' strings."""
    cur = await conn.execute(
        """
        SELECT f.*, p.model_version AS p_model_version, p.label AS p_label, p.confidence AS p_confidence,
               p.probabilities AS p_probabilities, p.quality AS p_quality, p.created_at AS p_created_at,
               p.novelty AS p_novelty, p.unfamiliar AS p_unfamiliar, p.boxes AS p_boxes,
               coalesce((SELECT array_agg(r.route || ':' || r.reason ORDER BY r.route, r.reason)
                           FROM frame_routes r WHERE r.frame_id = f.frame_id), '{}') AS routes
          FROM frames f
          LEFT JOIN LATERAL (SELECT * FROM predictions p WHERE p.frame_id = f.frame_id
                              ORDER BY p.created_at DESC LIMIT 1) p ON true
         WHERE f.batch_id = %s AND f.position > %s
         ORDER BY f.position
         LIMIT %s
        """,
        (batch_id, after_position, limit),
    )
    return await cur.fetchall()
