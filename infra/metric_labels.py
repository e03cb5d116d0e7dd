"""Bounded Prometheus labels, and a histogram observed a whole array at a time.

Every process keeps the first `metrics_max_cameras` (site, camera) pairs it sees as their own series
and counts the rest under camera "other": a fleet of thousands of cameras cannot blow up the scrapes.
Rejection reasons are free text (they name the frame's problem in detail): only their kind, a known
prefix, is a label, and an unknown kind is "other".
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

OTHER = "other"


class CameraLabels:
    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, site_id: str, camera_id: str) -> tuple[str, str]:
        pair = (site_id, camera_id)
        if pair in self._seen:
            return pair
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(pair)
                return pair
        return site_id, OTHER


# The process's limiter; workers.telemetry sets its limit from the settings at start-up.
CAMERAS = CameraLabels()


def reason_kind(reason: str, known: Iterable[str]) -> str:
    """A rejection reason's kind: the first of `known` it starts with (e.g. 'image too large'), else 'other'."""
    text = reason.lower()
    return next((kind for kind in known if text.startswith(kind)), OTHER)


class BulkHistogram(Collector):
    """A labelled histogram that takes a whole array per observation: one numpy pass per chunk of
    frames, not a Python call per frame (prometheus_client's Histogram observes one value at a time)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.edges = np.asarray(sorted(buckets), dtype=np.float64)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, labels: Sequence[str], values: np.ndarray) -> None:
        if values.size == 0:
            return
        # Per bucket, the values at or below its upper edge: cumulative counts, with +Inf last.
        counts = np.searchsorted(np.sort(values), self.edges, side="right")
        key = tuple(labels)
        with self._lock:
            cumulative, total = self._series.setdefault(key, (np.zeros(len(self.edges) + 1, np.int64), [0.0]))
            cumulative[:-1] += counts
            cumulative[-1] += values.size
            total[0] += float(values.sum())

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            for key, (cumulative, total) in self._series.items():
                buckets = [(repr(float(e)), float(c)) for e, c in zip(self.edges, cumulative[:-1], strict=True)]
                buckets.append(("+Inf", float(cumulative[-1])))
                family.add_metric(list(key), buckets, total[0])
        yield family
