"""What the review tests share: task inputs, an async poll with a deadline, one-row queries."""

from __future__ import annotations

import uuid

from tests.polling import eventually  # noqa: F401  (the review tests import it from here)
from workflows.review_types import ReviewTaskInput

CLASSES = ["ok", "scratch", "dent"]


def review_input(batch_id: str | None = None, position: int = 0, **overrides) -> ReviewTaskInput:
    batch_id = batch_id or f"batch-cam1-{uuid.uuid4().hex[:8]}"
    values = dict(
        frame_id=f"{batch_id}:{position:04d}",
        batch_id=batch_id,
        object_key=f"frames/sha256/ab/{uuid.uuid4().hex}",
        camera_id="cam1",
        site_id="plant-a",
        reason="low_confidence",
        predicted_label="scratch",
        confidence=0.41,
        classes=list(CLASSES),
        priority="normal",
        reviews_required=1,
    )
    values.update(overrides)
    return ReviewTaskInput(**values)


async def fetch_one(pool, sql: str, *params) -> dict | None:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()


async def fetch_all(pool, sql: str, *params) -> list[dict]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def insert_batch(pool, batch_id: str, camera_id: str = "cam1", site_id: str = "plant-a") -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count)"
            " VALUES (%s, %s, %s, %s, 'running', 1) ON CONFLICT DO NOTHING",
            (batch_id, camera_id, site_id, batch_id),
        )
