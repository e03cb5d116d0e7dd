"""The `prediction_errors` table: frames a canary or shadow version failed to classify (production
answered a canary's frames instead). Keyed by (frame, version): a retried write leaves one row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infra.db import DbConnection


@dataclass(frozen=True)
class PredictionError:
    frame_id: str
    model_version: str
    shadow: bool
    error: str


async def upsert(conn: DbConnection, rows: Sequence[PredictionError]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            """
            INSERT INTO prediction_errors (frame_id, model_version, shadow, error) VALUES (%s, %s, %s, %s)
            ON CONFLICT (frame_id, model_version) DO UPDATE SET shadow = EXCLUDED.shadow, error = EXCLUDED.error
            """,
            [(r.frame_id, r.model_version, r.shadow, r.error[:2000]) for r in rows],
        )
