"""Recording predictions: an upsert keyed by (frame_id, model_version), so a retried activity, or one
replayed after a worker died mid-write, leaves exactly one row per frame and version."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from temporalio import activity
from temporalio.exceptions import ApplicationError

from infra.log import get_logger
from workflows.inference_types import RecordPredictionsInput

log = get_logger(__name__)

_UPSERT = """
INSERT INTO predictions (frame_id, model_version, label, confidence, probabilities, quality, timings)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (frame_id, model_version) DO UPDATE
   SET label = EXCLUDED.label, confidence = EXCLUDED.confidence, probabilities = EXCLUDED.probabilities,
       quality = EXCLUDED.quality, timings = EXCLUDED.timings
"""


class PredictionActivities:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @activity.defn
    async def record_predictions(self, input: RecordPredictionsInput) -> int:
        """Returns the number of predictions written (inserted or updated in place)."""
        if not input.predictions:
            return 0
        rows = [(p.frame_id, p.model_version, p.label, p.confidence, Jsonb(p.probabilities), Jsonb(p.quality), Jsonb(p.timings))
                for p in input.predictions]
        try:
            async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_UPSERT, rows)
        except psycopg.errors.ForeignKeyViolation as exc:
            # A prediction for a frame that was never recorded is a bug upstream, not a transient fault.
            raise ApplicationError(f"prediction for an unknown frame: {exc}", type="UnknownFrame", non_retryable=True) from exc
        log.info("predictions recorded", batch_id=input.batch_id, count=len(rows))
        return len(rows)
