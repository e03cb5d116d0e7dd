"""The classification activity: one call to the inference service per chunk of frames (never one per
frame). Runs on the `inference` task queue so serving capacity is scaled apart from orchestration."""

from __future__ import annotations

from temporalio import activity

from infra.log import get_logger
from serving.client import ServingClient, ServingError
from workflows.batch_types import FrameOutcome
from workflows.failures import ServingFailure
from workflows.inference_types import (
    ClassifyFramesInput,
    ClassifyFramesResult,
    FramePrediction,
)

log = get_logger(__name__)


def _r4(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in values.items()}


class InferenceActivities:
    def __init__(self, client: ServingClient) -> None:
        self.client = client

    @activity.defn
    async def classify_frames(self, input: ClassifyFramesInput) -> ClassifyFramesResult:
        if not input.frames:
            return ClassifyFramesResult(model_version="", predictions=[], rejections=[])
        try:
            response = await self.client.classify([(f.frame_id, f.object_key) for f in input.frames], input.model_alias)
        except ServingError as exc:
            # Unreachable/overloaded/5xx: Temporal retries with backoff. Bad input (4xx): retrying cannot
            # help, so fail the activity at once with the service's reason.
            log.warning("classification failed", batch_id=input.batch_id, retryable=exc.retryable, status=exc.status,
                        error=str(exc))
            failure = ServingFailure.UNAVAILABLE if exc.retryable else ServingFailure.REJECTED
            raise failure.error(str(exc)) from exc
        version = response.model_version
        predictions = [
            FramePrediction(frame_id=p.frame_id, label=p.label, confidence=round(p.confidence, 4),
                            probabilities=_r4(p.probabilities), quality=_r4(p.quality), model_version=version,
                            timings=_r4({k: v for k, v in p.timings.items() if k in ("preprocess_ms", "infer_ms")}))
            for p in response.predictions
        ]
        rejections = [FrameOutcome(frame_id=r.frame_id, accepted=False, reason=r.reason) for r in response.rejections]
        log.info("frames classified", batch_id=input.batch_id, model_version=version, predictions=len(predictions),
                 rejections=len(rejections), total_ms=response.timings.get("total_ms"))
        return ClassifyFramesResult(model_version=version, predictions=predictions, rejections=rejections)
