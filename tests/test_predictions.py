"""Classification through the real Ray Serve app inside Temporal activities, and predictions recorded
exactly once per (frame, model version) even when activities are retried."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.inference import InferenceActivities
from activities.predictions import PredictionActivities
from infra.store import put_frame, sha256_hex
from serving.client import ServingClient
from vision.camera import generate_frames
from workflows.batch_types import FrameRef, make_frame_id
from workflows.inference_types import (
    ClassifyFramesInput,
    ClassifyFramesResult,
    FramePrediction,
    RecordPredictionsInput,
)

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]


async def _record_batch(db_pool, store, frames, extra: Sequence[tuple[str, bytes]] = ()) -> tuple[str, list[FrameRef]]:
    """A batch and its frames as the batch workflow would have recorded them (predictions reference frames)."""
    batch_id = f"batch-test-{uuid.uuid4().hex[:8]}"
    payloads = [f.jpeg() for f in frames] + [data for _, data in extra]
    refs = [FrameRef(frame_id=make_frame_id(batch_id, i), object_key=put_frame(store, data))
            for i, data in enumerate(payloads)]
    async with db_pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO batches (batch_id, camera_id, idempotency_key, frame_count)"
                           " VALUES (%s, 'test', %s, %s)", (batch_id, batch_id, len(refs)))
        for i, (r, data) in enumerate(zip(refs, payloads, strict=True)):
            await conn.execute(
                "INSERT INTO frames (frame_id, batch_id, position, object_key, sha256, size_bytes)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (r.frame_id, batch_id, i, r.object_key, sha256_hex(data), len(data)))
    return batch_id, refs


async def _prediction_rows(db_pool, batch_id: str) -> list[dict]:
    async with db_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT p.* FROM predictions p JOIN frames f USING (frame_id) WHERE f.batch_id = %s ORDER BY p.frame_id",
            (batch_id,))
        return await cur.fetchall()


@workflow.defn(sandboxed=False)
class ClassifyAndRecordWorkflow:
    """The classify-then-record part of the frame batch, as a test harness around the real activities."""

    @workflow.run
    async def run(self, input: ClassifyFramesInput) -> int:
        result: ClassifyFramesResult = await workflow.execute_activity(
            "classify_frames", input, result_type=ClassifyFramesResult,
            task_queue=workflow.info().task_queue + "-inference",
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5))
        return await workflow.execute_activity(
            "record_predictions", RecordPredictionsInput(input.batch_id, result.predictions), result_type=int,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5))


async def test_a_batch_through_ray_serve_is_recorded_once_even_when_activities_retry(
        temporal_client, task_queue, db_pool, serving_url, model_store, production_model):
    frames = generate_frames("e2e-line", 12, seed=31)
    batch_id, refs = await _record_batch(db_pool, model_store, frames, extra=[("corrupt", b"GIF89a broken")])
    attempts = {"classify": 0, "record": 0}
    client = ServingClient(serving_url)
    real_classify = InferenceActivities(client).classify_frames
    real_record = PredictionActivities(db_pool).record_predictions

    # The real activities, each failing its first attempt *after* its side effect, like a worker that
    # dies before reporting completion: Temporal retries, and the retry must not duplicate anything.
    @activity.defn(name="classify_frames")
    async def classify_then_crash(input: ClassifyFramesInput) -> ClassifyFramesResult:
        attempts["classify"] += 1
        result = await real_classify(input)
        if activity.info().attempt == 1:
            raise RuntimeError("worker lost before reporting the result")
        return result

    @activity.defn(name="record_predictions")
    async def record_then_crash(input: RecordPredictionsInput) -> int:
        attempts["record"] += 1
        written = await real_record(input)
        if activity.info().attempt == 1:
            raise RuntimeError("worker lost after the commit")
        return written

    try:
        async with Worker(temporal_client, task_queue=task_queue, workflows=[ClassifyAndRecordWorkflow],
                          activities=[record_then_crash], workflow_runner=UnsandboxedWorkflowRunner()), \
                   Worker(temporal_client, task_queue=f"{task_queue}-inference", activities=[classify_then_crash]):
            written = await temporal_client.execute_workflow(
                ClassifyAndRecordWorkflow.run, ClassifyFramesInput(batch_id, refs), id=f"wf-{batch_id}",
                task_queue=task_queue,
                execution_timeout=timedelta(minutes=2))
    finally:
        await client.aclose()

    assert attempts == {"classify": 2, "record": 2}
    assert written == 12
    rows = await _prediction_rows(db_pool, batch_id)
    assert [r["frame_id"] for r in rows] == [r.frame_id for r in refs[:12]]  # once each; the corrupt one not at all
    assert {r["model_version"] for r in rows} == {production_model.version}
    correct = sum(r["label"] == f.label for r, f in zip(rows, frames, strict=True))
    assert correct >= 0.65 * len(frames)
    assert all(set(r["quality"]) >= {"brightness", "sharpness"} and r["probabilities"] for r in rows)


async def test_classify_frames_reports_rejections_and_keeps_payloads_compact(serving_url, db_pool, model_store,
                                                                              production_model):
    from temporalio.converter import DataConverter

    frames = generate_frames("compact-line", 32, seed=32)
    batch_id, refs = await _record_batch(db_pool, model_store, frames, extra=[("empty", b"\x89PNG\r\n\x1a\n")])
    async with ServingClient(serving_url) as client:
        result = await ActivityEnvironment().run(InferenceActivities(client).classify_frames,
                                                 ClassifyFramesInput(batch_id, refs))
    assert result.model_version == production_model.version and len(result.predictions) == 32
    assert [(r.frame_id, r.accepted) for r in result.rejections] == [(refs[32].frame_id, False)]
    assert result.rejections[0].reason
    p = result.predictions[0]
    assert all(round(v, 4) == v for v in [p.confidence, *p.probabilities.values(), *p.quality.values()])
    # The classify result and the record input both land in history: 32 frames must stay far under 64 KB.
    size = len(DataConverter.default.payload_converter.to_payloads([result])[0].data)
    assert size < 20_000, size


async def test_serving_errors_become_retryable_or_not(serving_url, production_model):
    from infra.postgres_server import free_port

    frames = [FrameRef(frame_id="b:0000", object_key="frames/sha256/aa/" + "a" * 64)]
    async with ServingClient(f"http://127.0.0.1:{free_port()}") as down:
        with pytest.raises(ApplicationError) as unreachable:
            await ActivityEnvironment().run(InferenceActivities(down).classify_frames, ClassifyFramesInput("b", frames))
    assert not unreachable.value.non_retryable
    async with ServingClient(serving_url) as client:
        with pytest.raises(ApplicationError) as unknown_model:
            await ActivityEnvironment().run(InferenceActivities(client).classify_frames,
                                            ClassifyFramesInput("b", frames, model_alias="v999999"))
    assert unknown_model.value.non_retryable and "model_not_found" in str(unknown_model.value)


async def test_record_predictions_upserts_by_frame_and_version(db_pool, model_store):
    batch_id, refs = await _record_batch(db_pool, model_store, generate_frames("upsert-line", 2, seed=33))
    acts = PredictionActivities(db_pool)

    def pred(ref, version, label, conf):
        return FramePrediction(ref.frame_id, label, conf, {"ok": conf, "dent": round(1 - conf, 4)},
                               {"brightness": 0.5}, version)

    first = RecordPredictionsInput(batch_id, [pred(r, "v1", "ok", 0.9) for r in refs])
    assert await ActivityEnvironment().run(acts.record_predictions, first) == 2
    assert await ActivityEnvironment().run(acts.record_predictions, first) == 2  # a retry: same rows
    # Another version of the same frames is another row (shadow/canary predictions sit side by side).
    await ActivityEnvironment().run(acts.record_predictions,
                                    RecordPredictionsInput(batch_id, [pred(refs[0], "v2", "dent", 0.7)]))
    rows = await _prediction_rows(db_pool, batch_id)
    assert sorted((r["frame_id"], r["model_version"]) for r in rows) == sorted(
        [(refs[0].frame_id, "v1"), (refs[1].frame_id, "v1"), (refs[0].frame_id, "v2")])
    with pytest.raises(ApplicationError) as unknown:
        await ActivityEnvironment().run(acts.record_predictions, RecordPredictionsInput(
            batch_id, [FramePrediction("nope:0000", "ok", 1.0, {"ok": 1.0}, {}, "v1")]))
    assert unknown.value.non_retryable
