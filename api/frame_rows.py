"""Reading frames with their latest prediction and routes: one query shared by the batch routes."""

from __future__ import annotations

from api.schemas.batches import FrameResult, Prediction

_FRAMES_SQL = """
SELECT f.*, p.model_version AS p_model_version, p.label AS p_label, p.confidence AS p_confidence,
       p.probabilities AS p_probabilities, p.quality AS p_quality, p.created_at AS p_created_at,
       coalesce((SELECT array_agg(r.route || ':' || r.reason ORDER BY r.route, r.reason)
                   FROM frame_routes r WHERE r.frame_id = f.frame_id), '{}') AS routes
  FROM frames f
  LEFT JOIN LATERAL (SELECT * FROM predictions p WHERE p.frame_id = f.frame_id
                      ORDER BY p.created_at DESC LIMIT 1) p ON true
 WHERE f.batch_id = %s AND f.position > %s
 ORDER BY f.position
 LIMIT %s
"""


async def frame_results(conn, batch_id: str, after_position: int = -1, limit: int | None = None) -> list[FrameResult]:
    cur = await conn.execute(_FRAMES_SQL, (batch_id, after_position, limit))
    results = []
    for row in await cur.fetchall():
        prediction = None
        if row["p_label"] is not None:
            prediction = Prediction(
                model_version=row["p_model_version"], label=row["p_label"], confidence=row["p_confidence"],
                probabilities=row["p_probabilities"] or {}, quality=row["p_quality"] or {},
                created_at=row["p_created_at"],
            )
        results.append(FrameResult(**{k: v for k, v in row.items() if not k.startswith("p_")}, prediction=prediction))
    return results
