"""The `predictions` table: one row per frame and model version, so a retried write (or a worker killed
mid-write) leaves exactly one row per frame and version, and versions can predict a frame side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from infra.db import DbConnection, Row

_UPSERT = """
INSERT INTO predictions (frame_id, model_version, label, confidence, probabilities, quality, timings)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (frame_id, model_version) DO UPDATE
   SET label = EXCLUDED.label, confidence = EXCLUDED.confidence, probabilities = EXCLUDED.probabilities,
       quality = EXCLUDED.quality, timings = EXCLUDED.timings
"""


@dataclass(frozen=True)
class NewPrediction:
    frame_id: str
    model_version: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    quality: dict[str, float]
    timings: dict[str, float]


async def upsert(conn: DbConnection, predictions: Sequence[NewPrediction]) -> None:
    """Raises psycopg.errors.ForeignKeyViolation for a frame that was never recorded."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(_UPSERT, [
            (p.frame_id, p.model_version, p.label, p.confidence, Jsonb(p.probabilities), Jsonb(p.quality),
             Jsonb(p.timings))
            for p in predictions
        ])


async def of_frame(conn: DbConnection, frame_id: str) -> list[Row]:
    """Every version's prediction of the frame, newest first."""
    cur = await conn.execute(
        "SELECT model_version, label, confidence, probabilities, quality, created_at FROM predictions"
        " WHERE frame_id = %s ORDER BY created_at DESC",
        (frame_id,),
    )
    return await cur.fetchall()
