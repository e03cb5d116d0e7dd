"""Replay every stored history against today's workflow code: a change that breaks determinism fails here.

Histories under tests/histories/ were recorded from real runs by the `record_history` fixture
(tests/history_recorder.py): this module records those of frame batches, camera streams and webhook
deliveries, tests/test_review_workflow.py those of review tasks. Keep old ones when a workflow changes:
runs started on old code must still replay; put new steps behind `workflow.patched(...)`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.worker import Replayer, Worker

from infra.settings import Settings
from infra.store import LocalStore
from tests.frames import jpeg_frame, multipart, truncated_jpeg
from tests.history_recorder import (
    HISTORIES,
    HistoryRecorder,
    load_history,
    name_prefix,
    registered_workflows,
    replay,
    stored_histories,
    workflow_type,
)
from tests.polling import eventually
from tests.stand_in_workflows import RecordingBatchWorkflow
from tests.webhook_receiver import Receiver
from workers.orchestration import WORKFLOW_RUNNER, orchestration_worker
from workflows.alert_delivery import WebhookDeliveryWorkflow
from workflows.alert_types import WebhookDeliveryInput, WebhookRetry, webhook_workflow_id
from workflows.batch_types import FrameBatchResult
from workflows.camera_stream import CameraStreamWorkflow
from workflows.camera_stream_types import (
    FRAME_SIGNAL,
    CameraFrame,
    CameraStreamInput,
    CameraStreamResult,
    camera_workflow_id,
)

# ---- every stored history -------------------------------------------------------------------------


@pytest.mark.parametrize("path", stored_histories(), ids=lambda p: p.stem)
async def test_stored_history_replays(path: Path):
    history = load_history(path)
    assert path.stem.startswith(name_prefix(workflow_type(history))), "the name says which workflow it is"
    await replay(history)


def test_every_registered_workflow_has_a_stored_history():
    covered = {workflow_type(load_history(path)) for path in stored_histories()}
    assert covered == set(registered_workflows())


async def test_a_history_of_an_unknown_workflow_type_fails_clearly():
    raw = json.loads(stored_histories()[0].read_text())
    raw["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"] = "RetiredWorkflow"
    with pytest.raises(LookupError, match="'RetiredWorkflow', which the orchestration worker does not register"):
        await replay(WorkflowHistory.from_json("retired", raw))


@workflow.defn(name="FrameBatchWorkflow", sandboxed=False)  # this module imports too much for the sandbox
class FrameBatchSkippingValidation:
    """A deliberately incompatible change: the same workflow type, but it records nothing."""

    @workflow.run
    async def run(self, input: dict) -> dict:
        return {}


async def test_a_changed_workflow_fails_replay():
    """The guard itself: replaying a stored history against different steps must fail."""
    history = load_history(sorted(p for p in stored_histories() if p.stem.startswith("frame_batch_"))[0])
    result = await Replayer(workflows=[FrameBatchSkippingValidation]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is not None


# ---- recording fresh histories ------------------------------------------------------------------

# Events a workflow's own commands produce; the rest (tasks, their timing, children's progress) vary.
COMMAND_EVENTS = ("activity_task_scheduled", "timer_started", "marker_recorded",
                  "start_child_workflow_execution_initiated", "upsert_workflow_search_attributes",
                  "workflow_execution_completed", "workflow_execution_failed")


def command_shape(history: WorkflowHistory) -> Counter[str]:
    kinds = (event.WhichOneof("attributes") for event in history.events)
    return Counter(kind.removesuffix("_event_attributes") for kind in kinds
                   if kind and kind.removesuffix("_event_attributes") in COMMAND_EVENTS)


async def test_frame_batch_taking_every_path(api, record_history: HistoryRecorder):
    """A batch that takes every path: a rejected frame, a review task, an unfamiliar frame, a defect.
    Batches of steps 1: one activity classifies, opens the reviews and closes (frame_batch_durable_every_path
    holds a run of steps 0, children and a close marker)."""
    name = "frame_batch_closed_by_classification_every_path"
    from infra.store import frame_key, sha256_hex

    files = [("a.jpg", jpeg_frame(1), "image/jpeg"), ("b.jpg", truncated_jpeg(), "image/jpeg"),
             ("c.jpg", jpeg_frame(2), "image/jpeg"), ("d.jpg", jpeg_frame(3), "image/jpeg"),
             ("e.jpg", jpeg_frame(4), "image/jpeg")]
    api.classifier.script(frame_key(sha256_hex(files[2][1])), "scratch", 0.5)
    api.classifier.script(frame_key(sha256_hex(files[3][1])), "dent", 0.99)
    api.classifier.script(frame_key(sha256_hex(files[4][1])), "dent", 1.0, unfamiliar=True)
    response = await api.http.post("/v1/batches", data={"camera_id": "replay", "idempotency_key": "r1"},
                                   files=multipart(files))
    handle = api.client.get_workflow_handle(response.json()["batch_id"], result_type=FrameBatchResult)
    result = await asyncio.wait_for(handle.result(), 60)
    # It took every path: otherwise the history stored under this name would not be what it says.
    assert (result.rejected, result.sent_to_review, result.defects, result.unfamiliar) == (1, 2, 1, 1)
    fresh = await record_history(handle, name)
    # The stored history is kept (runs begun on old code must replay); a run of today's code must still
    # take its shape, so a workflow change that issues other commands fails here until today's run is
    # recorded under a new name beside the old one.
    stored = load_history(HISTORIES / f"{name}.json")
    assert command_shape(fresh) == command_shape(stored), "the batch's commands changed: record a new history"


async def test_camera_stream_across_continue_as_new(temporal_client: Client, task_queue: str,
                                                    record_history: HistoryRecorder):
    """Two runs of one stream: the first cuts three full batches and continues as new carrying the seventh
    frame; the second batches it, cuts a later frame's batch by its max-wait timer, and closes."""
    camera = f"cam-replay-{uuid.uuid4().hex[:8]}"
    input = CameraStreamInput(camera, "plant-a", max_frames=2, max_wait_seconds=0.3, max_batches_per_run=3)

    async def send(n: int) -> None:  # what POST /v1/cameras/{id}/frames does: signal-with-start
        digest = uuid.uuid4().hex * 2
        frame = CameraFrame(f"frames/sha256/{digest[:2]}/{digest}", digest, 1000 + n, "image/jpeg",
                            filename=f"f{n}.jpg")
        await temporal_client.start_workflow(CameraStreamWorkflow.run, input, id=camera_workflow_id("plant-a", camera),
                                             task_queue=task_queue, start_signal=FRAME_SIGNAL,
                                             start_signal_args=[frame])

    async def batches_started(count: int) -> bool:
        return (await stream.query(CameraStreamWorkflow.status)).batches_started >= count

    # Signalled before any worker runs, so the first task sees all seven frames.
    for n in range(7):
        await send(n)
    stream = temporal_client.get_workflow_handle(camera_workflow_id("plant-a", camera), result_type=CameraStreamResult)
    first_run = temporal_client.get_workflow_handle(stream.id, run_id=(await stream.describe()).run_id)
    async with Worker(temporal_client, task_queue=task_queue, workflows=[CameraStreamWorkflow, RecordingBatchWorkflow],
                      workflow_runner=WORKFLOW_RUNNER):
        await eventually(lambda: batches_started(4), message="four batches over two runs")
        await send(7)
        await eventually(lambda: batches_started(5), message="the late frame's batch, cut by time")
        await stream.signal(CameraStreamWorkflow.close)
        result = await asyncio.wait_for(stream.result(), 30)
        # Inside the worker block: the stand-in children finish too.
        assert result.batches_started == 5 and result.last_batch_id
        await asyncio.wait_for(temporal_client.get_workflow_handle(result.last_batch_id).result(), 30)
    first = await record_history(first_run, "camera_stream_continued_as_new")
    assert first.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
    await record_history(stream, "camera_stream_carried_then_closed")


@pytest_asyncio.fixture
async def orchestration(temporal_client: Client, db_pool, local_store: LocalStore,
                        test_settings: Settings) -> AsyncIterator[str]:
    """The production orchestration worker (real Postgres and webhook activities) on this test's queue."""
    async with orchestration_worker(temporal_client, db_pool, local_store, test_settings):
        yield test_settings.orchestration_task_queue


FAST = WebhookRetry(initial_interval_s=0.2, maximum_interval_s=1.0, maximum_attempts=3, expiry_s=60)


async def deliver(client: Client, task_queue: str, url: str) -> WorkflowHandle:
    """Start delivering one webhook to `url`; `record_history` waits for the outcome."""
    delivery_id = f"replay-{uuid.uuid4().hex[:8]}.defect"
    return await client.start_workflow(
        WebhookDeliveryWorkflow.run,
        WebhookDeliveryInput(delivery_id, url, "defect.detected", {"frame_id": "batch-cam-1:0000"}, FAST),
        id=webhook_workflow_id(delivery_id), task_queue=task_queue,
    )


async def test_webhook_delivered(temporal_client: Client, orchestration: str, record_history: HistoryRecorder):
    with Receiver([]) as receiver:
        handle = await deliver(temporal_client, orchestration, receiver.url)
        history = await record_history(handle, "webhook_delivery_delivered")
    assert len(receiver.requests) == 1
    assert history.events[-1].HasField("workflow_execution_completed_event_attributes")


async def test_webhook_rejected(temporal_client: Client, orchestration: str, record_history: HistoryRecorder):
    with Receiver([404]) as receiver:
        handle = await deliver(temporal_client, orchestration, receiver.url)
        history = await record_history(handle, "webhook_delivery_rejected")
    assert len(receiver.requests) == 1, "a rejection is not retried"
    failed = history.events[-1]
    assert failed.HasField("workflow_execution_failed_event_attributes")
    assert "rejected the delivery" in failed.workflow_execution_failed_event_attributes.failure.cause.message
