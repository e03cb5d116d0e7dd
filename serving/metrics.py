"""Sightline's own metrics of a Serve replica, through Ray's metrics (ray.serve.metrics): Ray exports them,
prefixed `ray_`, beside its `ray_serve_*` metrics (per-deployment latency, queue length, replica health)
on each node's metrics export port (settings.serving_metrics_port on the head the local stack starts).

Observed once per request, with the request's numbers: never per frame."""

from __future__ import annotations

from typing import Any

# Frames per model pass: the batch sizes actually formed (the fused layout's chunks of a request, the
# pair's @serve.batch passes across requests).
PASS_FRAMES_BOUNDARIES: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
STAGE_MS_BOUNDARIES: list[float] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]


class ReplicaMetrics:
    def __init__(self) -> None:
        from ray.serve import metrics

        self.pass_frames = metrics.Histogram(
            "sightline_serving_pass_frames", description="frames per model pass (batch sizes formed)",
            boundaries=PASS_FRAMES_BOUNDARIES)
        self.stage_ms = metrics.Histogram(
            "sightline_serving_stage_ms", description="a classify request's stages: fetch+decode, infer, total",
            boundaries=STAGE_MS_BOUNDARIES, tag_keys=("stage",))
        self.frames = metrics.Counter("sightline_serving_frames", description="frames answered",
                                      tag_keys=("outcome",))

    def observe(self, body: dict[str, Any]) -> None:
        timings = body.get("timings") or {}
        for stage in ("preprocess_ms", "infer_ms", "total_ms"):
            if stage in timings:
                self.stage_ms.observe(float(timings[stage]), tags={"stage": stage.removesuffix("_ms")})
        if timings.get("batch_frames"):
            self.pass_frames.observe(float(timings["batch_frames"]))
        accepted, rejected = len(body.get("predictions") or ()), len(body.get("rejections") or ())
        if accepted:
            self.frames.inc(accepted, tags={"outcome": "classified"})
        if rejected:
            self.frames.inc(rejected, tags={"outcome": "rejected"})
