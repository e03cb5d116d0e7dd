"""The `review_labels` table: one row per reviewer decision, the ground truth retraining reads.
Keyed by (review, reviewer), so a retried write is a no-op."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.db import DbConnection

COLUMNS = ("review_id", "frame_id", "batch_id", "object_key", "label", "reviewer_id", "reviewer_name", "decided_at",
           "predicted_label", "model_confidence", "model_version", "is_correction", "note", "stage",
           "boxes")  # a detection task's box set (jsonb, migration 0018), None for a class decision

_INSERT = (
    f"INSERT INTO review_labels ({', '.join(COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in COLUMNS)})"
    " ON CONFLICT (review_id, reviewer_id) DO NOTHING"
)


async def insert(conn: DbConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(_INSERT, row)
