"""GET /metrics: Prometheus metrics of the API process, for ops' scrapers, behind an ops key (the
review gauges are per site, and request counts say what is used). Prometheus sends the key with
`authorization: {type: Bearer, credentials: sl_...}` in its scrape config."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.callers import MetricsReader
from api.metrics import REGISTRY
from api.review_metrics import review_metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (an ops or admin key)")
async def metrics(request: Request, caller: MetricsReader) -> Response:
    await review_metrics(request.app.state.pool)  # the review gauges are read from Postgres per scrape
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
