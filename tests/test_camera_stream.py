"""CameraStreamWorkflow against the dev Temporal server: frames arrive by signal-with-start, as the API
sends them, and become child batches by count and by time; the stream continues as new carrying the
frames still waiting. The batch child is a stand-in registered under FrameBatchWorkflow's name that
returns its input, so each test reads exactly which frames went into which batch."""

from __future__ import annotations

import asyncio
import time
import uuid

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from tests.polling import eventually
from tests.stand_in_workflows import RecordingBatchWorkflow
from workflows import search_attributes as sa
from workflows.batch_types import FrameBatchInput, RoutingRules, make_frame_id
from workflows.camera_stream import CameraStreamWorkflow
from workflows.camera_stream_types import (
    FRAME_SIGNAL,
    CameraFrame,
    CameraStreamInput,
    CameraStreamResult,
    camera_workflow_id,
    stream_batch_id,
)


def _frame(n: int) -> CameraFrame:
    digest = uuid.uuid4().hex * 2
    return CameraFrame(f"frames/sha256/{digest[:2]}/{digest}", digest, 1000 + n, "image/jpeg", filename=f"f{n}.jpg")


async def _send(client: Client, task_queue: str, input: CameraStreamInput, frame: CameraFrame):
    """What POST /v1/cameras/{id}/frames does: signal-with-start (the input only matters for a new run)."""
    return await client.start_workflow(
        CameraStreamWorkflow.run, input, id=camera_workflow_id(input.site_id, input.camera_id), task_queue=task_queue,
        start_signal=FRAME_SIGNAL, start_signal_args=[frame],
    )


def _worker(client: Client, task_queue: str) -> Worker:
    return Worker(client, task_queue=task_queue, workflows=[CameraStreamWorkflow, RecordingBatchWorkflow])


async def _batches(client: Client, camera_id: str, count: int, site_id: str = "default") -> list[FrameBatchInput]:
    stream = client.get_workflow_handle(camera_workflow_id(site_id, camera_id))

    async def started():
        status = await stream.query(CameraStreamWorkflow.status)
        return status if status.batches_started >= count else None

    status = await eventually(started, message=f"{count} batches")
    assert status.batches_started == count
    ids = [stream_batch_id(site_id, camera_id, status.stream_epoch, seq) for seq in range(count)]
    return [await _batch(client, i) for i in ids]


async def _batch(client: Client, batch_id: str) -> FrameBatchInput:
    """A child batch's result (the stand-in returns its input); bounded, so a bug fails instead of hanging."""
    return await asyncio.wait_for(client.get_workflow_handle(batch_id, result_type=FrameBatchInput).result(), 30)


async def _runs_in_chain(client: Client, workflow_id: str, first_run_id: str) -> int:
    """Runs from the first one along its continue-as-new links, read from the histories themselves."""
    runs, run_id = 1, first_run_id
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        last = history.events[-1]
        if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
            return runs
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        runs += 1


def _keys(batch: FrameBatchInput) -> list[str]:
    return [f.object_key for f in batch.frames]


async def test_frames_become_batches_by_count(temporal_client, task_queue):
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    template = FrameBatchInput("", camera, "plant-a", [], durable_path=True, chunk_size=8, webhook_url="http://hooks.example/x",
                               rules=RoutingRules(review_below=0.5))
    # max_wait is far beyond the test's timeout: only the count can cut these batches.
    input = CameraStreamInput(camera, "plant-a", max_frames=4, max_wait_seconds=3600, batch_template=template)
    frames = [_frame(n) for n in range(9)]
    async with _worker(temporal_client, task_queue):
        for frame in frames:
            await _send(temporal_client, task_queue, input, frame)
        first, second = await _batches(temporal_client, camera, 2, "plant-a")
        stream = temporal_client.get_workflow_handle(camera_workflow_id("plant-a", camera))
        status = await stream.query(CameraStreamWorkflow.status)
        assert status.pending == 1, "the ninth frame waits for more"

    assert _keys(first) == [f.object_key for f in frames[:4]]
    assert _keys(second) == [f.object_key for f in frames[4:8]]
    assert first.frames[2].size_bytes == frames[2].size_bytes and first.frames[2].content_type == "image/jpeg"
    # Frame ids come from the child's batch id and the frame's position in it.
    assert first.batch_id.startswith(f"stream:plant-a:{camera}:") and first.batch_id.endswith(":000000")
    assert make_frame_id(first.batch_id, 3) == f"{first.batch_id}:0003"
    # The template's options reach every batch; the per-batch fields are the stream's.
    assert (first.camera_id, first.site_id, first.chunk_size) == (camera, "plant-a", 8)
    assert first.webhook_url == "http://hooks.example/x" and first.rules.review_below == 0.5

    # Children are findable by camera and site like any submitted batch.
    child = await temporal_client.get_workflow_handle(first.batch_id).describe()
    assert child.typed_search_attributes.get(sa.CAMERA) == camera
    assert child.typed_search_attributes.get(sa.SITE) == "plant-a"
    await temporal_client.get_workflow_handle(camera_workflow_id("plant-a", camera)).terminate("test over")


async def test_frames_become_a_batch_after_max_wait(temporal_client, task_queue):
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    input = CameraStreamInput(camera, max_frames=100, max_wait_seconds=1.5)
    frames = [_frame(n) for n in range(3)]
    async with _worker(temporal_client, task_queue):
        sent_at = time.time()
        for frame in frames:
            await _send(temporal_client, task_queue, input, frame)
        (batch,) = await _batches(temporal_client, camera, 1)
        started = (await temporal_client.get_workflow_handle(batch.batch_id).describe()).start_time
        # A later frame opens a new pending batch with its own deadline.
        late = _frame(3)
        await _send(temporal_client, task_queue, input, late)
        _, later = await _batches(temporal_client, camera, 2)

    assert _keys(batch) == [f.object_key for f in frames]
    waited = started.timestamp() - sent_at
    assert 1.4 <= waited < 10, f"the batch started {waited:.2f}s after its first frame"
    assert _keys(later) == [late.object_key] and later.batch_id.endswith(":000001")
    await temporal_client.get_workflow_handle(camera_workflow_id("default", camera)).terminate("test over")


async def test_continue_as_new_carries_pending_frames_and_sequence(temporal_client, task_queue):
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    input = CameraStreamInput(camera, max_frames=2, max_wait_seconds=1.0, max_batches_per_run=2)
    frames = [_frame(n) for n in range(5)]
    # Every frame is signalled before a worker runs, so the first task sees all five: two batches fill
    # the first run, and the fifth frame must cross continue-as-new to reach a batch.
    for frame in frames:
        await _send(temporal_client, task_queue, input, frame)
    stream = temporal_client.get_workflow_handle(camera_workflow_id("default", camera))
    first_run_id = (await stream.describe()).run_id
    async with _worker(temporal_client, task_queue):
        batches = await _batches(temporal_client, camera, 3)
        status = await stream.query(CameraStreamWorkflow.status)

    assert [_keys(b) for b in batches] == [[f.object_key for f in frames[i : i + 2]] for i in (0, 2, 4)]
    assert [b.batch_id[-6:] for b in batches] == ["000000", "000001", "000002"]
    first_run = await temporal_client.get_workflow_handle(stream.id, run_id=first_run_id).describe()
    assert first_run.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    current = await stream.describe()
    assert current.run_id != first_run_id and current.status == WorkflowExecutionStatus.RUNNING
    assert (status.batches_started, status.batches_this_run, status.next_seq, status.pending) == (3, 1, 3, 0)
    # The first run's batches were abandoned, not terminated, when it continued as new.
    first_batch = await temporal_client.get_workflow_handle(batches[0].batch_id).describe()
    assert first_batch.status == WorkflowExecutionStatus.COMPLETED
    await stream.terminate("test over")


async def test_history_limit_triggers_continue_as_new(temporal_client, task_queue):
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    # An event budget every run exceeds at once: each run must still start a batch before it rolls
    # over (never continue as new empty-handed, in a loop), and no frame may be lost across the runs.
    input = CameraStreamInput(camera, max_frames=1, max_wait_seconds=60, max_history_events=1)
    # Few frames: the server delays the first task of a run that follows a sub-second run by ~1 s.
    frames = [_frame(n) for n in range(4)]
    async with _worker(temporal_client, task_queue):
        first_run_id = (await _send(temporal_client, task_queue, input, frames[0])).result_run_id
        for frame in frames[1:]:
            await _send(temporal_client, task_queue, input, frame)
        batches = await _batches(temporal_client, camera, 4)
        stream = temporal_client.get_workflow_handle(camera_workflow_id("default", camera))
        status = await stream.query(CameraStreamWorkflow.status)
        runs = await _runs_in_chain(temporal_client, stream.id, first_run_id)
    assert [_keys(b) for b in batches] == [[f.object_key] for f in frames]
    assert len({b.batch_id for b in batches}) == 4
    # Each run started exactly one batch and then continued as new; the latest run has started none.
    assert runs == 5 and (status.batches_started, status.batches_this_run, status.next_seq) == (4, 0, 4)
    await stream.terminate("test over")


async def test_close_flushes_and_a_restarted_stream_gets_new_ids(temporal_client, task_queue):
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    input = CameraStreamInput(camera, max_frames=2, max_wait_seconds=3600)
    frames = [_frame(n) for n in range(3)]
    async with _worker(temporal_client, task_queue):
        for frame in frames:
            await _send(temporal_client, task_queue, input, frame)
        stream = temporal_client.get_workflow_handle(camera_workflow_id("default", camera),
                                                     result_type=CameraStreamResult)
        await eventually(lambda: _has_batches(stream, 1), message="first batch")
        await stream.signal(CameraStreamWorkflow.close)
        result = await asyncio.wait_for(stream.result(), timeout=30)
        first_epoch_batches = await _batch_ids_of_run(temporal_client, camera, result)

        # The next frame starts a fresh stream whose batch ids cannot collide with the closed one's.
        again = _frame(9)
        await _send(temporal_client, task_queue, input, again)
        await temporal_client.get_workflow_handle(stream.id).signal(CameraStreamWorkflow.close)
        second = await asyncio.wait_for(
            temporal_client.get_workflow_handle(stream.id, result_type=CameraStreamResult).result(), timeout=30
        )
        # Inside the worker block: the child may not have run yet when the stream finishes.
        last = await _batch(temporal_client, second.last_batch_id)

    assert result.batches_started == 2 and result.last_batch_id.endswith(":000001")
    assert [f.object_key for f in first_epoch_batches[1].frames] == [frames[2].object_key]
    assert second.batches_started == 1 and second.last_batch_id.endswith(":000000")
    assert second.last_batch_id != first_epoch_batches[0].batch_id
    assert _keys(last) == [again.object_key]


async def _has_batches(stream, count: int) -> bool:
    return (await stream.query(CameraStreamWorkflow.status)).batches_started >= count


async def _batch_ids_of_run(client: Client, camera: str, result: CameraStreamResult) -> list[FrameBatchInput]:
    assert result.last_batch_id is not None
    prefix = result.last_batch_id.rsplit(":", 1)[0]
    ids = [f"{prefix}:{seq:06d}" for seq in range(result.batches_started)]
    return [await _batch(client, i) for i in ids]
