"""Classification through the real Ray Serve app inside a Temporal activity that also records what
came back: predictions exactly once per (frame, model version) even when the activity is retried after
its side effects, decode outcomes on the frames, compact results, serving errors classified."""

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
from infra.db import DbPool, Row
from infra.store import ObjectStore, put_frame
from infra.tables import frames as frame_rows
from infra.tables import predictions
from serving.client import ServingClient
from vision.camera import GeneratedFrame, generate_frames
from workflows.batch_types import ClassifiedFrames, ClassifyBatchInput, RoutingRules, make_frame_id

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]

RULES = RoutingRules(qa_sample_rate=0.0)


async def _record_batch(db_pool: DbPool, store: ObjectStore, frames: Sequence[GeneratedFrame],
                        extra: Sequence[bytes] = ()) -> str:
    """A batch and its frames as the API records them before the workflow starts."""
    batch_id = f"batch-test-{uuid.uuid4().hex[:8]}"
    payloads = [f.jpeg() for f in frames] + list(extra)
    new = [frame_rows.NewFrame(make_frame_id(batch_id, i), i, put_frame(store, data), f"{i}.jpg", "image/jpeg",
                               len(data)) for i, data in enumerate(payloads)]
    async with db_pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO batches (batch_id, camera_id, idempotency_key, frame_count)"
                           " VALUES (%s, 'test', %s, %s)", (batch_id, batch_id, len(new)))
        await frame_rows.insert(conn, batch_id, new)
    return batch_id


async def _rows(db_pool: DbPool, sql: str, batch_id: str) -> list[Row]:
    async with db_pool.connection() as conn:
        cur = await conn.execute(sql, (batch_id,))
        return await cur.fetchall()


def _input(batch_id: str, end: int, model: str = "production") -> ClassifyBatchInput:
    return ClassifyBatchInput(batch_id, "test", "default", 0, end, RULES, model)


@workflow.defn(sandboxed=False)
class ClassifyWorkflow:
    """The classification step of the frame batch, as a test harness around the real activity."""

    @workflow.run
    async def run(self, input: ClassifyBatchInput) -> ClassifiedFrames:
        return await workflow.execute_activity(
            "classify_batch", input, result_type=ClassifiedFrames, start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5))


async def test_a_batch_through_ray_serve_is_recorded_once_even_when_the_activity_retries(
        temporal_client, task_queue, db_pool, serving_url, model_store, production_model):
    frames = generate_frames("e2e-line", 12, seed=31)
    batch_id = await _record_batch(db_pool, model_store, frames, extra=[b"GIF89a broken"])
    attempts = 0
    client = ServingClient(serving_url)
    real = InferenceActivities(client, db_pool).classify_batch

    # The real activity, failing its first attempt *after* it recorded everything, like a worker that
    # dies before reporting completion: Temporal retries, and the retry must not duplicate anything.
    @activity.defn(name="classify_batch")
    async def classify_then_crash(input: ClassifyBatchInput) -> ClassifiedFrames:
        nonlocal attempts
        attempts += 1
        result = await real(input)
        if activity.info().attempt == 1:
            raise RuntimeError("worker lost before reporting the result")
        return result

    try:
        async with Worker(temporal_client, task_queue=task_queue, workflows=[ClassifyWorkflow],
                          activities=[classify_then_crash], workflow_runner=UnsandboxedWorkflowRunner()):
            result = await temporal_client.execute_workflow(
                ClassifyWorkflow.run, _input(batch_id, 13), id=f"wf-{batch_id}", task_queue=task_queue,
                execution_timeout=timedelta(minutes=2))
    finally:
        await client.aclose()

    assert attempts == 2
    assert (result.classified, result.rejected, result.model_version) == (12, 1, production_model.version)
    rows = await _rows(db_pool, "SELECT p.* FROM predictions p JOIN frames f USING (frame_id)"
                                " WHERE f.batch_id = %s ORDER BY p.frame_id", batch_id)
    # Once each; the corrupt file not at all.
    assert [r["frame_id"] for r in rows] == [make_frame_id(batch_id, i) for i in range(12)]
    assert {r["model_version"] for r in rows} == {production_model.version}
    # The model's own answers, not noise: well above chance (a quarter, four classes). The tiny model's
    # accuracy on a dozen frames moves with the threads it was trained on (7 to 9 of 12 seen).
    correct = sum(r["label"] == f.label for r, f in zip(rows, frames, strict=True))
    assert correct >= 0.5 * len(frames)
    assert all(set(r["quality"]) >= {"brightness", "sharpness"} and r["probabilities"] for r in rows)
    # The one decode (in the preprocessor) is on the frame rows: size and format, or the reason.
    recorded = await _rows(db_pool, "SELECT * FROM frames WHERE batch_id = %s ORDER BY position", batch_id)
    assert all(f["status"] == "accepted" and f["width"] == 160 and f["image_format"] == "JPEG" and f["sha256"]
               for f in recorded[:12])
    assert recorded[12]["status"] == "rejected" and "not an image" in recorded[12]["reject_reason"]
    batch = await _rows(db_pool, "SELECT status FROM batches WHERE batch_id = %s", batch_id)
    assert batch[0]["status"] == "running"


async def test_a_classification_result_stays_compact(serving_url, db_pool, model_store, production_model):
    from temporalio.converter import DataConverter

    batch_id = await _record_batch(db_pool, model_store, generate_frames("compact-line", 256, seed=32))
    async with ServingClient(serving_url) as client:
        result = await ActivityEnvironment().run(InferenceActivities(client, db_pool).classify_batch,
                                                 _input(batch_id, 256))
    assert result.classified == 256 and sum(result.label_counts.values()) == 256
    # Only the frames that go somewhere come back, each with the version that answered it; predictions
    # stay in Postgres.
    assert all(r.route in ("review", "alert") and r.model_version == "v1" for r in result.routed)
    size = len(DataConverter.default.payload_converter.to_payloads([result])[0].data)
    assert size < 200 + 280 * len(result.routed), size


async def test_serving_errors_become_retryable_or_not(serving_url, db_pool, model_store, production_model):
    from infra.postgres_server import free_port

    batch_id = await _record_batch(db_pool, model_store, generate_frames("errors-line", 1, seed=34))
    async with ServingClient(f"http://127.0.0.1:{free_port()}") as down:
        with pytest.raises(ApplicationError) as unreachable:
            await ActivityEnvironment().run(InferenceActivities(down, db_pool).classify_batch, _input(batch_id, 1))
    assert not unreachable.value.non_retryable
    async with ServingClient(serving_url) as client:
        with pytest.raises(ApplicationError) as unknown_model:
            await ActivityEnvironment().run(InferenceActivities(client, db_pool).classify_batch,
                                            _input(batch_id, 1, model="v999999"))
        assert unknown_model.value.non_retryable and "model_not_found" in str(unknown_model.value)
        with pytest.raises(ApplicationError) as missing:
            await ActivityEnvironment().run(InferenceActivities(client, db_pool).classify_batch,
                                            _input(f"{batch_id}-never-recorded", 4))
        assert missing.value.non_retryable and missing.value.type == "MissingFrames"


async def test_predictions_upsert_by_frame_and_version(db_pool, model_store):
    batch_id = await _record_batch(db_pool, model_store, generate_frames("upsert-line", 2, seed=33))
    ids = [make_frame_id(batch_id, i) for i in range(2)]

    def pred(frame_id: str, version: str, label: str, conf: float) -> predictions.NewPrediction:
        return predictions.NewPrediction(frame_id, version, label, conf, {"ok": conf, "dent": round(1 - conf, 4)},
                                         {"brightness": 0.5}, {})

    async with db_pool.connection() as conn:
        first = [pred(f, "v1", "ok", 0.9) for f in ids]
        await predictions.upsert(conn, first)
        await predictions.upsert(conn, first)  # a retry: the same rows
        # Another version of the same frames is another row (shadow/canary predictions sit side by side).
        await predictions.upsert(conn, [pred(ids[0], "v2", "dent", 0.7)])
    rows = await _rows(db_pool, "SELECT p.* FROM predictions p JOIN frames f USING (frame_id)"
                                " WHERE f.batch_id = %s", batch_id)
    assert sorted((r["frame_id"], r["model_version"]) for r in rows) == sorted(
        [(ids[0], "v1"), (ids[1], "v1"), (ids[0], "v2")])


async def test_a_retried_classification_leaves_only_its_own_answers(db_pool, model_store):
    """An attempt that died after writing (v1 for both frames, the shadow's v2 for one) and its retry under a
    moved split (v2 for the first frame, v1 for the second, no shadow): each frame keeps the retry's one."""
    from infra.tables import shadow_predictions

    batch_id = await _record_batch(db_pool, model_store, generate_frames("retry-line", 2, seed=34))
    ids = [make_frame_id(batch_id, i) for i in range(2)]

    def pred(frame_id: str, version: str) -> predictions.NewPrediction:
        return predictions.NewPrediction(frame_id, version, "ok", 0.9, {"ok": 0.9}, {}, {})

    async with db_pool.connection() as conn:
        await predictions.replace_of_frames(conn, ids, [pred(ids[0], "v1"), pred(ids[1], "v1")])
        await shadow_predictions.replace_of_frames(conn, ids, [shadow_predictions.ShadowPrediction(
            ids[1], "v2", "ok", 0.8, None, False, 3.0)])
        retry = [pred(ids[0], "v2"), pred(ids[1], "v1")]
        await predictions.replace_of_frames(conn, ids, retry)
        await predictions.replace_of_frames(conn, ids, retry)  # and a retry of that: the same rows
        await shadow_predictions.replace_of_frames(conn, ids, [])
    rows = await _rows(db_pool, "SELECT p.* FROM predictions p JOIN frames f USING (frame_id)"
                                " WHERE f.batch_id = %s", batch_id)
    assert sorted((r["frame_id"], r["model_version"]) for r in rows) == [(ids[0], "v2"), (ids[1], "v1")]
    shadows = await _rows(db_pool, "SELECT s.* FROM shadow_predictions s JOIN frames f USING (frame_id)"
                                   " WHERE f.batch_id = %s", batch_id)
    assert shadows == []
