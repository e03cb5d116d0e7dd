"""Review metrics: latency from creation to decision (p50/p95), correction rate, tasks pending and
escalated. Computed from the review projection in Postgres; exported as JSON and to Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.metrics import REGISTRY
from infra.db import DbPool
from infra.tables import review_tasks
from workflows.review_types import ReviewStatus, ReviewTaskView

REVIEW_LATENCY = Histogram(
    "sightline_review_latency_seconds", "review task creation to final decision, observed by the API",
    registry=REGISTRY, buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800),
)


async def review_metrics(pool: DbPool, window_hours: float = 24.0) -> dict[str, Any]:
    """Open tasks now, and the tasks decided within the window."""
    async with pool.connection() as conn:
        open_ = await review_tasks.open_counts(conn)
        done = await review_tasks.decided_stats(conn, window_hours)
    oldest = open_["oldest_created_at"]
    metrics = {
        "window_hours": window_hours,
        "pending": open_["pending"],
        "claimed": open_["claimed"],
        "escalated": open_["escalated"],
        "oldest_pending_age_seconds": (datetime.now(UTC) - oldest).total_seconds() if oldest else None,
        "decided": done["decided"],
        "latency_p50_seconds": done["p50"],
        "latency_p95_seconds": done["p95"],
        # Among decisions that gave a class (unusable frames say nothing about the model's label).
        "correction_rate": (done["corrected"] / done["labelled"]) if done["labelled"] else None,
        "corrected": done["corrected"],
        "unusable": done["unusable"],
        "decided_after_escalation": done["escalated"],
    }
    _COLLECTOR.last = metrics
    return metrics


class _ReviewCollector(Collector):
    """Serves the last computed snapshot at /metrics; each GET /v1/reviews/metrics refreshes it (and
    so can `await review_metrics(pool)` anywhere, e.g. in the /metrics handler)."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self.last
        if m is None:
            return
        yield GaugeMetricFamily("sightline_review_tasks_pending", "review tasks waiting for a reviewer",
                                value=m["pending"])
        yield GaugeMetricFamily("sightline_review_tasks_claimed", "review tasks claimed now", value=m["claimed"])
        yield GaugeMetricFamily("sightline_review_tasks_escalated", "open review tasks past their SLA",
                                value=m["escalated"])
        quantiles = GaugeMetricFamily("sightline_review_latency_quantile_seconds",
                                      "creation to decision over the window", labels=["quantile"])
        for q, key in (("0.5", "latency_p50_seconds"), ("0.95", "latency_p95_seconds")):
            if m[key] is not None:
                quantiles.add_metric([q], m[key])
        yield quantiles
        if m["correction_rate"] is not None:
            yield GaugeMetricFamily("sightline_review_correction_rate",
                                    "share of reviewed labels that corrected the model", value=m["correction_rate"])


_COLLECTOR = _ReviewCollector()
REGISTRY.register(_COLLECTOR)


def observe_decision(view: ReviewTaskView) -> None:
    """Record a task's latency when a decision closed it (called with the decide Update's result)."""
    if view.status == ReviewStatus.DECIDED and view.decided_at and view.created_at:
        latency = datetime.fromisoformat(view.decided_at) - datetime.fromisoformat(view.created_at)
        REVIEW_LATENCY.observe(max(0.0, latency.total_seconds()))
