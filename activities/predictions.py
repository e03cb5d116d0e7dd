"""Recording predictions: an upsert keyed by (frame_id, model_version), so a retried activity, or one
replayed after a worker died mid-write, leaves exactly one row per frame and version."""

from __future__ import annotations

import psycopg
from temporalio import activity

from infra.db import DbPool
from infra.log import get_logger
from infra.tables import predictions
from workflows.failures import RecordFailure
from workflows.inference_types import RecordPredictionsInput

log = get_logger(__name__)


class PredictionActivities:
    def __init__(self, pool: DbPool) -> None:
        self.pool = pool

    @activity.defn
    async def record_predictions(self, input: RecordPredictionsInput) -> int:
        """Returns the number of predictions written (inserted or updated in place)."""
        if not input.predictions:
            return 0
        rows = [predictions.NewPrediction(p.frame_id, p.model_version, p.label, p.confidence, p.probabilities,
                                          p.quality, p.timings)
                for p in input.predictions]
        try:
            async with self.pool.connection() as conn:
                await predictions.upsert(conn, rows)
        except psycopg.errors.ForeignKeyViolation as exc:
            # A prediction for a frame that was never recorded is a bug upstream, not a transient fault.
            raise RecordFailure.UNKNOWN_FRAME.error(f"prediction for an unknown frame: {exc}") from exc
        log.info("predictions recorded", batch_id=input.batch_id, count=len(rows))
        return len(rows)
