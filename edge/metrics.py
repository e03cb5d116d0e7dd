"""The agent's Prometheus metrics, on a registry of its own (an agent in a test or the demo shares its
process with other agents and with the API's metrics). Labels never carry frame or batch ids.

The gauges of the queue and of contact are set when scraped (`refresh`), from the queue itself, so
they are never stale."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class EdgeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.captured = Counter("sightline_edge_frames_captured", "frames taken into the durable queue",
                                ["source"], registry=r)
        self.refused = Counter("sightline_edge_frames_refused", "frames not taken, by reason (disk_bound: the "
                               "queue is at its disk bound; type, size, camera_id, redaction)", ["reason"],
                               registry=r)
        self.uploaded = Counter("sightline_edge_frames_uploaded", "frames the API accepted", registry=r)
        self.batches = Counter("sightline_edge_batches_uploaded", "batches the API accepted: created (202) or "
                               "existing (200, a retry of a batch it already had)", ["outcome"], registry=r)
        self.upload_failures = Counter("sightline_edge_upload_failures", "upload attempts that did not get the batch "
                                       "accepted, by reason (status code or connection error)", ["reason"],
                                       registry=r)
        self.queue_frames = Gauge("sightline_edge_queue_frames", "frames waiting for the API", registry=r)
        self.queue_bytes = Gauge("sightline_edge_queue_bytes", "bytes of the frames waiting for the API", registry=r)
        self.queue_max_bytes = Gauge("sightline_edge_queue_max_bytes", "the queue's disk bound", registry=r)
        self.oldest_age = Gauge("sightline_edge_oldest_frame_age_seconds", "age of the oldest waiting frame",
                                registry=r)
        self.upload_rate = Gauge("sightline_edge_upload_rate_frames_per_second",
                                 "frames accepted per second over the last minute", registry=r)
        self.last_contact = Gauge("sightline_edge_last_contact_timestamp_seconds",
                                  "when the API last answered (any status)", registry=r)
        self.model = Gauge("sightline_edge_model_info", "the model version the agent decides with (value 1)",
                           ["version"], registry=r)
        self.model_refusals = Counter("sightline_edge_model_refusals", "model versions refused (unsigned, untrusted, "
                                      "altered) while the last good one stayed", registry=r)
        self.decision_seconds = Histogram(
            "sightline_edge_decision_seconds", "POST /frames: from the request to the answer (queued and decided)",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 1.0), registry=r)
        self.reconciled = Counter("sightline_edge_predictions_compared", "uploaded frames whose local and central "
                                  "predictions were both recorded", registry=r)
        self.disagreements = Counter("sightline_edge_prediction_disagreements", "of those, frames whose local and "
                                     "central labels differ", registry=r)
        self._model_version: str | None = None

    def set_model(self, version: str | None) -> None:
        if self._model_version is not None:
            self.model.remove(self._model_version)
        self._model_version = version
        if version is not None:
            self.model.labels(version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
