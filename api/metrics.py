"""Prometheus metrics of the API process (served at /metrics by api.routes.prometheus, behind a key)."""

from __future__ import annotations

import time

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()
REQUESTS = Histogram(
    "sightline_http_request_seconds", "API request latency", ["method", "route", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCHES_SUBMITTED = Counter("sightline_batches_submitted_total", "batches that started a workflow", registry=REGISTRY)
FRAMES_SUBMITTED = Counter("sightline_frames_submitted_total", "frames in submitted batches", registry=REGISTRY)


async def timing_middleware(request: Request, call_next):
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    # The route template, not the raw path: ids in paths would make a series per batch.
    REQUESTS.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).observe(
        time.perf_counter() - started
    )
    return response
