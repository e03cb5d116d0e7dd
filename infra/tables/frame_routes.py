"""The `frame_routes` table: where each classified frame went (human review, QA sample, alert) and the
workflow started for it. Keyed by (frame, route), so a retried write updates in place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infra.db import DbConnection


@dataclass(frozen=True)
class Route:
    frame_id: str
    route: str   # review or alert
    reason: str  # low_confidence, qa_sample, defect, ...
    workflow_id: str | None


async def upsert(conn: DbConnection, routes: Sequence[Route]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            """
            INSERT INTO frame_routes (frame_id, route, reason, workflow_id) VALUES (%s, %s, %s, %s)
            ON CONFLICT (frame_id, route) DO UPDATE SET reason = EXCLUDED.reason, workflow_id = EXCLUDED.workflow_id
            """,
            [(r.frame_id, r.route, r.reason, r.workflow_id) for r in routes],
        )


async def of_frame(conn: DbConnection, frame_id: str) -> list[str]:
    """The frame's routes as 'route:reason', sorted."""
    cur = await conn.execute(
        "SELECT route || ':' || reason AS r FROM frame_routes WHERE frame_id = %s ORDER BY 1", (frame_id,))
    return [row["r"] for row in await cur.fetchall()]
