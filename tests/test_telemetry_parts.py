"""The pieces of tracing and metrics that need no stack: capped camera labels, the array histogram
against prometheus_client's own, rejection-reason kinds, and the span files (written, rotated, read back
as a tree). tests/test_observability.py checks them all on the real stack."""

from __future__ import annotations

import numpy as np
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from activities.metrics import REJECTION_KINDS
from infra.metric_labels import OTHER, BulkHistogram, CameraLabels, reason_kind
from infra.span_files import SpanFileExporter, read_spans, span_tree, traces_of_batch


def test_cameras_past_the_cap_share_one_series_per_site():
    cameras = CameraLabels(limit=2)
    assert cameras("s1", "a") == ("s1", "a") and cameras("s1", "b") == ("s1", "b")
    assert cameras("s1", "c") == ("s1", OTHER) and cameras("s2", "d") == ("s2", OTHER)
    assert cameras("s1", "a") == ("s1", "a")  # the first ones keep theirs


def test_the_array_histogram_exposes_what_prometheus_clients_own_would():
    values = np.array([0.05, 0.31, 0.5, 0.5, 0.77, 0.93, 0.999, 1.0])
    buckets = (0.3, 0.5, 0.9, 0.99)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    BulkHistogram("h", "doc", ["site"], buckets, ours).observe_many(["s"], values[:3])
    bulk = next(c for c in ours._collector_to_names if isinstance(c, BulkHistogram))
    bulk.observe_many(["s"], values[3:])
    reference = Histogram("h", "doc", ["site"], registry=theirs, buckets=buckets)
    for v in values:
        reference.labels("s").observe(float(v))

    def samples(registry: CollectorRegistry) -> dict[str, float]:
        lines = [line for line in generate_latest(registry).decode().splitlines()
                 if line and not line.startswith("#") and "_created" not in line]
        return {line.rsplit(" ", 1)[0]: round(float(line.rsplit(" ", 1)[1]), 6) for line in lines}

    assert samples(ours) == samples(theirs)


def test_rejection_reasons_become_a_few_kinds():
    assert reason_kind("image too large: 9000x9000 exceeds 12000000 pixels", REJECTION_KINDS) == "image too large"
    assert reason_kind("not an image: the file is not a JPEG, PNG or WebP", REJECTION_KINDS) == "not an image"
    assert reason_kind("corrupt image: broken data stream", REJECTION_KINDS) == "corrupt image"
    assert reason_kind("something new and unforeseen", REJECTION_KINDS) == OTHER


def test_span_files_are_written_rotated_and_read_back_as_a_tree(tmp_path):
    exporter = SpanFileExporter(tmp_path, "unit", max_bytes=4096)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("unit")
    for _ in range(40):  # past the size: the file is rotated, once, so the directory stays bounded
        with tracer.start_as_current_span("filler", attributes={"padding": "x" * 200}):
            pass
    with tracer.start_as_current_span("request", attributes={"sightline.batch_id": "batch:s:c:k"}):
        with tracer.start_as_current_span("child"), tracer.start_as_current_span("grandchild"):
            pass
        with tracer.start_as_current_span("second child"):
            pass
    assert exporter.path.with_suffix(".jsonl.1").exists() and exporter.path.stat().st_size <= 4096 + 1024
    assert sum(1 for s in read_spans(tmp_path) if s.name == "filler") < 40  # the oldest were let go
    (tmp_path / "torn.jsonl").write_text('{"trace_id": "cut sh')  # a line a crash cut short is skipped

    [(trace_id, spans)] = traces_of_batch(tmp_path, "batch:s:c:k").items()
    [root] = span_tree(spans)
    assert root.name == "request" and [c.name for c in root.children] == ["child", "second child"]
    assert [g.name for g in root.children[0].children] == ["grandchild"]
    assert all(s.trace_id == trace_id and s.duration_ms >= 0 for s in spans) and len(spans) == 4


def test_a_worker_whose_metrics_ports_are_taken_keeps_running_without_them():
    """Two workers on one host (or a test's worker beside a stack's) must not kill each other over ports."""
    import socket

    from infra.settings import Settings
    from workers.telemetry import sdk_runtime, serve_worker_metrics

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = Settings(metrics_host="127.0.0.1", worker_metrics_port=taken, worker_sdk_metrics_port=taken)
        assert serve_worker_metrics(settings) is None
        assert sdk_runtime(settings) is None
    server = serve_worker_metrics(settings)  # the port free again: served
    assert server is not None
    server.shutdown()
