"""The `review_escalations` table: one row per review task whose SLA passed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.db import DbConnection

COLUMNS = ("review_id", "frame_id", "batch_id", "camera_id", "site_id", "reason", "priority_before",
           "priority_after", "sla_due_at", "escalated_at", "webhook_workflow_id")

_UPSERT = (
    f"INSERT INTO review_escalations ({', '.join(COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in COLUMNS)})"
    " ON CONFLICT (review_id) DO UPDATE SET"
    " webhook_workflow_id = coalesce(EXCLUDED.webhook_workflow_id, review_escalations.webhook_workflow_id)"
)


async def upsert(conn: DbConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(_UPSERT, row)
