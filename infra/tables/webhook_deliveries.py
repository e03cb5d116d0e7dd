"""The `webhook_deliveries` table: every attempt of every delivery, keyed by (delivery, attempt)."""

from __future__ import annotations

from dataclasses import dataclass

from infra.db import DbConnection


@dataclass(frozen=True)
class Attempt:
    delivery_id: str
    attempt: int
    subscription_id: str
    event: str
    url: str
    workflow_id: str | None
    status_code: int | None  # None: no response came (connection error, timeout)
    error: str | None        # None on success
    duration_ms: float


async def record(conn: DbConnection, a: Attempt) -> None:
    await conn.execute(
        """
        INSERT INTO webhook_deliveries
               (delivery_id, attempt, subscription_id, event, url, workflow_id, status_code, error, duration_ms)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (delivery_id, attempt) DO UPDATE
           SET status_code = EXCLUDED.status_code, error = EXCLUDED.error, duration_ms = EXCLUDED.duration_ms,
               at = now()
        """,
        (a.delivery_id, a.attempt, a.subscription_id, a.event, a.url, a.workflow_id, a.status_code, a.error,
         a.duration_ms),
    )
