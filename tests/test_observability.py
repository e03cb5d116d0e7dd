"""Traces and metrics on the real stack (issue 23): a batch submitted to the API, run by real workers
through the real Ray Serve application, is one trace whose spans are parented from the API request
through the workflow and the classify activity into serving; every part's /metrics endpoint answers
with the metrics the README lists; and every Grafana dashboard asks only for metrics some part exports.

One stack for the module (the API app, an orchestration and an inference worker on a client with the
TracingInterceptor and a Prometheus SDK runtime, the session's Serve application) and one batch of 8
frames: the tests read what it left."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from api.main import create_app
from infra.postgres_server import free_port
from infra.settings import Settings
from infra.span_files import BATCH_ATTRIBUTE, SpanRecord, span_tree, traces_of_batch
from infra.telemetry import TracingOptions, configure_tracing, flush_spans
from infra.temporal import connect
from serving.client import ServingClient
from tests.polling import eventually
from tests.serving_fixtures import serving_traces_dir
from vision.camera import generate_frames
from workers.inference import inference_worker
from workers.orchestration import orchestration_worker
from workers.telemetry import sdk_runtime, serve_worker_metrics

pytest_plugins = ["tests.serving_fixtures"]

DASHBOARDS = Path(__file__).resolve().parent.parent / "infra" / "grafana" / "dashboards"

# What each part must export once a batch went through (README, "Metrics").
REQUIRED = {
    "api": ["sightline_http_request_seconds_bucket", "sightline_batches_submitted_total",
            "sightline_frames_submitted_total"],
    "worker": ["sightline_classify_chunk_seconds_bucket", "sightline_frames_classified_total",
               "sightline_frames_rejected_total", "sightline_predictions_total",
               "sightline_prediction_confidence_bucket",
               "sightline_unfamiliar_frames_total", "sightline_low_confidence_frames_total",
               "sightline_image_quality", "sightline_reviews_opened_total", "sightline_alerts_sent_total",
               "sightline_review_decisions_total", "sightline_review_time_to_decision_seconds", "sightline_drift_score",
               "sightline_retraining_epochs_total"],
    "temporal_sdk": ["temporal_workflow_task_schedule_to_start_latency_bucket",
                     "temporal_activity_schedule_to_start_latency_bucket", "temporal_worker_task_slots_available",
                     "temporal_sticky_cache_size", "temporal_activity_execution_latency_bucket"],
    "serving": ["ray_serve_deployment_processing_latency_ms_bucket", "ray_serve_replica_processing_queries",
                "ray_sightline_serving_pass_frames_bucket", "ray_sightline_serving_stage_ms_bucket"],
}


@dataclass
class Observed:
    batch_id: str
    accepted: dict
    detail: dict
    spans: list[SpanRecord]
    metrics: dict[str, str]  # part -> its /metrics text


def exported_names(text: str) -> set[str]:
    """Every sample name in a Prometheus exposition, and the names of the families it declares (a
    labelled metric nothing was observed in yet is declared, with no sample)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            names.add(line.split()[2])
            if line.startswith("# TYPE ") and line.split()[3:4] == ["histogram"]:
                names.update(line.split()[2] + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


@pytest_asyncio.fixture(scope="module")
async def observed(postgres_url, temporal_env, db_pool, api_keys, serving_url, serving_metrics_url, model_store,
                   production_model, serving_tmp, tmp_path_factory) -> AsyncIterator[Observed]:
    traces = serving_traces_dir(serving_tmp)
    configure_tracing(TracingOptions("file", str(traces)), "tests")
    queue = f"obs-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        _env_file=None, data_dir=tmp_path_factory.mktemp("obs"), database_url=postgres_url,
        object_store_url=f"file://{model_store.root}", serving_url=serving_url,
        temporal_address=temporal_env.client.service_client.config.target_host,
        orchestration_task_queue=queue, inference_task_queue=f"{queue}-inference",
        training_task_queue=f"{queue}-training", drift_task_queue=f"{queue}-drift", qa_sample_rate=0.0,
        worker_metrics_port=free_port(), worker_sdk_metrics_port=free_port())
    # The worker's own start-up: a client with the TracingInterceptor on the SDK runtime that exports metrics.
    client = await connect(settings.temporal_address, settings.temporal_namespace, tracing=True,
                           runtime=sdk_runtime(settings))
    metrics_server = serve_worker_metrics(settings)
    assert metrics_server is not None
    app = create_app(settings, temporal_client=client)
    frames = [f.jpeg() for f in generate_frames("obs-line", 8, seed=23)] + [b"GIF89a not a frame"]
    try:
        async with app.router.lifespan_context(app), ServingClient(serving_url) as serving, \
                orchestration_worker(client, db_pool, app.state.store, settings), \
                inference_worker(client, serving, db_pool, settings), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://sightline.test", timeout=60) as http:
            ingest = {"Authorization": f"Bearer {api_keys['ingest']}"}
            response = await http.post("/v1/batches", headers=ingest, data={"camera_id": "obs-cam", "site_id": "obs"},
                                       files=[("frames", (f"{i}.jpg", data, "image/jpeg"))
                                              for i, data in enumerate(frames)])
            assert response.status_code == 202, response.text
            batch_id = response.json()["batch_id"]

            async def finished() -> dict | None:
                body = (await http.get(f"/v1/batches/{batch_id}", headers=ingest)).json()
                return body if body["status"] in ("completed", "failed") else None

            detail = await eventually(finished, 90, f"batch {batch_id} to finish")

            async def whole_trace() -> list[SpanRecord] | None:
                flush_spans()  # this process's; the replica exports its own within a second
                found = traces_of_batch(traces, batch_id)
                spans = next(iter(found.values()), [])
                # Whole: the replica's spans there and none whose parent is not. A span is exported when it
                # ends, so a replica's inner spans can reach the file a batch before the span they hang under.
                ids = {s.span_id for s in spans}
                whole = all(s.parent_id is None or s.parent_id in ids for s in spans)
                return spans if whole and any(s.service == "serving" for s in spans) else None

            spans = await eventually(whole_trace, 30, "the batch's spans, the serving replica's included")
            ops = {"Authorization": f"Bearer {api_keys['ops']}"}
            api_metrics = await http.get("/metrics", headers=ops)
            assert api_metrics.status_code == 200
            texts = {"api": api_metrics.text}
            async with httpx.AsyncClient(timeout=10) as plain:
                texts["worker"] = (await plain.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics")).text
                texts["temporal_sdk"] = (await plain.get(
                    f"http://127.0.0.1:{settings.worker_sdk_metrics_port}/metrics")).text

                async def serving_metrics() -> str | None:
                    # Replicas report to Ray's agent every few seconds: wait for our histogram to arrive.
                    text = (await plain.get(serving_metrics_url)).text
                    return text if all(n in exported_names(text) for n in REQUIRED["serving"]) else None

                texts["serving"] = await eventually(serving_metrics, 60, "Serve's metrics on Ray's export port",
                                                    interval=1.0)
            yield Observed(batch_id, response.json(), detail, spans, texts)
    finally:
        metrics_server.shutdown()


def _one(spans: list[SpanRecord], name: str) -> SpanRecord:
    found = [s for s in spans if s.name == name]
    assert found, f"no span {name!r} among {sorted({s.name for s in spans})}"
    return found[0]


def _ancestors(span: SpanRecord, spans: list[SpanRecord]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    names, current = [], by_id.get(span.parent_id or "")
    while current is not None:
        names.append(current.name)
        current = by_id.get(current.parent_id or "")
    return names


async def test_one_batch_is_one_trace_from_the_api_request_into_serving(observed):
    spans = observed.spans
    trace_ids = {s.trace_id for s in spans}
    assert len(trace_ids) == 1
    # Recorded on the batch: the API's answer, GET /v1/batches/{id}.
    assert observed.accepted["trace_id"] == observed.detail["trace_id"] == trace_ids.pop()
    assert observed.detail["status"] == "completed" and observed.detail["accepted_count"] == 8

    request = next(s for s in spans if s.kind == "server" and s.service == "tests" and s.parent_id is None)
    assert request.attributes.get(BATCH_ATTRIBUTE) == observed.batch_id
    assert span_tree(spans) == [request]  # one root: every other span hangs under the request
    start = _one(spans, "StartWorkflow:FrameBatchWorkflow")
    workflow = _one(spans, "RunWorkflow:FrameBatchWorkflow")
    activity = _one(spans, "RunActivity:classify_batch")
    call = _one(spans, "serving.classify")
    replica = _one(spans, "serving.preprocessor")
    assert start.parent_id == request.span_id
    # The interceptor hangs the workflow's run and what it schedules under its start (its spans carry
    # the context the start put in the workflow's headers); the activity's run under its scheduling.
    assert workflow.parent_id == start.span_id
    assert _ancestors(activity, spans)[:2] == ["StartActivity:classify_batch", "StartWorkflow:FrameBatchWorkflow"]
    assert activity.attributes.get(BATCH_ATTRIBUTE) == observed.batch_id
    assert call.parent_id == activity.span_id
    assert replica.parent_id == call.span_id and replica.service == "serving"
    for inside_serving in ("preprocess", "model.classify"):
        assert _one(spans, inside_serving).parent_id == replica.span_id
    assert _one(spans, "store.fetch").parent_id == _one(spans, "preprocess").span_id
    for recorded in ("db.read_frames", "db.record_classification", "db.close_batch"):
        assert _one(spans, recorded).parent_id == activity.span_id
    # Durations nest: the call into serving takes at least as long as the replica's work.
    assert call.duration_ms >= replica.duration_ms > 0


async def test_the_trace_id_is_in_the_workflow_memo(observed, temporal_client):
    description = await temporal_client.get_workflow_handle(observed.batch_id).describe()
    assert await description.memo_value("trace_id") == observed.detail["trace_id"]


def test_sightline_trace_prints_the_batch_tree(observed, serving_tmp):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["trace", observed.batch_id, "--dir", str(serving_traces_dir(serving_tmp))],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert observed.detail["trace_id"] in lines[0]
    order = [next(i for i, line in enumerate(lines) if name in line)
             for name in ("POST /v1/batches", "RunActivity:classify_batch", "serving.classify", "model.classify")]
    assert order == sorted(order)  # parents above their children
    assert re.search(r"serving\.preprocessor \d+\.\d ms", result.output)
    missing = CliRunner().invoke(app, ["trace", "batch:nowhere:none:x", "--dir", str(serving_traces_dir(serving_tmp))])
    assert missing.exit_code == 1 and "no spans of batch" in missing.output


@pytest.mark.parametrize("part", sorted(REQUIRED))
def test_every_part_exports_its_metrics(observed, part):
    names = exported_names(observed.metrics[part])
    assert not [n for n in REQUIRED[part] if n not in names], part


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample of this name whose labels include these (in any order), if there is one."""
    for line in text.splitlines():
        found = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$", line)
        if found and found.group(1) == name:
            have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2)))
            if all(have.get(k) == v for k, v in labels.items()):
                return float(found.group(3))
    return None


def test_vision_metrics_are_labelled_by_site_camera_and_model_version(observed):
    worker = observed.metrics["worker"]
    batch = {"site": "obs", "camera": "obs-cam"}
    version = observed.detail["model_version"]
    assert sample(worker, "sightline_frames_classified_total", **batch, model_version=version) == 8
    assert sample(worker, "sightline_frames_rejected_total", **batch, reason="not an image") == 1
    assert sample(worker, "sightline_prediction_confidence_count", **batch, model_version=version) == 8
    assert sum(sample(worker, "sightline_predictions_total", **batch, model_version=version, label=label) or 0
               for label in observed.detail["label_counts"]) == 8
    assert sample(worker, "sightline_image_quality", **batch, feature="sharpness") is not None
    assert "batch:" not in worker and observed.batch_id not in worker  # never a batch (or frame) id


def _queries(dashboard: dict) -> list[str]:
    exprs = []
    for panel in dashboard.get("panels", []):
        exprs += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
        exprs += _queries(panel)  # rows hold panels
    return exprs


def test_every_dashboard_query_names_a_metric_some_part_exports(observed):
    exported = set().union(*(exported_names(text) for text in observed.metrics.values()))
    paths = sorted(DASHBOARDS.glob("*.json"))
    assert {p.stem for p in paths} >= {"sightline-vision", "temporal-sdk", "ray-serve"}
    for path in paths:
        dashboard = json.loads(path.read_text())
        queries = _queries(dashboard)
        assert queries, f"{path.name} has no queries"
        for expr in queries:
            names = re.findall(r"\b(?:sightline|temporal|ray)_[a-zA-Z0-9_:]+", expr)
            assert names, f"{path.name}: {expr!r} names no metric"
            unknown = [n for n in names if n not in exported]
            assert not unknown, f"{path.name}: {expr!r} asks for {unknown}, which no part exports"
