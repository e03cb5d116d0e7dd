"""The `shadow_predictions` table: what the shadow version said about a frame production classified.
Stored apart from `predictions`, so nothing that routes, alerts or reports reads it by accident; keyed
by (frame, version), so a retried write leaves one row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from infra.db import DbConnection


@dataclass(frozen=True)
class ShadowPrediction:
    frame_id: str
    model_version: str
    label: str
    confidence: float
    novelty: float | None
    unfamiliar: bool
    infer_ms: float | None
    boxes: list[dict] | None = None  # a detection version's (vision.boxes.Box.as_dict())


async def replace_of_frames(conn: DbConnection, frame_ids: Sequence[str], rows: Sequence[ShadowPrediction]) -> None:
    """The shadow's answers for these frames become exactly `rows` (as infra.tables.predictions.
    replace_of_frames: an attempt that died, under another split, leaves nothing behind)."""
    await conn.execute(
        "DELETE FROM shadow_predictions t WHERE t.frame_id = ANY(%s) AND (t.frame_id, t.model_version)"
        " NOT IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (list(frame_ids), [r.frame_id for r in rows], [r.model_version for r in rows]))
    await upsert(conn, rows)


async def upsert(conn: DbConnection, rows: Sequence[ShadowPrediction]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            """
            INSERT INTO shadow_predictions (frame_id, model_version, label, confidence, novelty, unfamiliar, infer_ms,
                                            boxes)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (frame_id, model_version) DO UPDATE
               SET label = EXCLUDED.label, confidence = EXCLUDED.confidence, novelty = EXCLUDED.novelty,
                   unfamiliar = EXCLUDED.unfamiliar, infer_ms = EXCLUDED.infer_ms, boxes = EXCLUDED.boxes
            """,
            [(r.frame_id, r.model_version, r.label, r.confidence, r.novelty, r.unfamiliar, r.infer_ms,
              None if r.boxes is None else Jsonb(r.boxes)) for r in rows],
        )
