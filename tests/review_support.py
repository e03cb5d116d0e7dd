"""What the review tests share: task inputs, an async poll with a deadline, one-row queries."""

from __future__ import annotations

import uuid
from typing import Any

from infra.db import DbPool, Row
from vision.camera import CLASSES
from workflows.review_types import REVIEW_STEPS, ReviewTaskInput


def review_input(batch_id: str | None = None, position: int = 0, **overrides: Any) -> ReviewTaskInput:
    batch_id = batch_id or f"batch-cam1-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = dict(
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
        steps_version=REVIEW_STEPS,  # as start_review_task starts every task now
    )
    values.update(overrides)
    return ReviewTaskInput(**values)


async def fetch_one(pool: DbPool, sql: str, *params: object) -> Row | None:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()


async def fetch_all(pool: DbPool, sql: str, *params: object) -> list[Row]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def insert_batch(pool: DbPool, batch_id: str, camera_id: str = "cam1", site_id: str = "plant-a") -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO batches (batch_id, camera_id, site_id, idempotency_key, status, frame_count)"
            " VALUES (%s, %s, %s, %s, 'running', 1) ON CONFLICT DO NOTHING",
            (batch_id, camera_id, site_id, batch_id),
        )
