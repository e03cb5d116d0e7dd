"""CameraStreamWorkflow: one per camera of a site (`camera:<site>:<camera>`), fed frame by frame by
signal-with-start.

It gathers frames into batches, by count (max_frames) or by time (max_wait_seconds after the oldest
waiting frame), and starts a FrameBatchWorkflow child for each. Children are abandoned: the stream never
waits for a batch, and a batch survives the stream's continue-as-new. Every signal is a history event,
so the stream continues as new before its history grows large, carrying the frames still waiting, the
sequence number and the epoch that make child ids unique.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

from workflows import search_attributes as sa
from workflows.batch_types import WORKFLOW_NAME as BATCH_WORKFLOW
from workflows.batch_types import BatchStatus, FrameBatchInput, SubmittedFrame
from workflows.camera_stream_types import (
    CLOSE_SIGNAL,
    FRAME_SIGNAL,
    STATUS_QUERY,
    CameraFrame,
    CameraStreamInput,
    CameraStreamResult,
    CameraStreamStatus,
    legacy_stream_batch_id,
    siteless_stream_batch_id,
    stream_batch_id,
)

# Patches, oldest first: each changes the ids a stream gives its batches. A run that began before one
# keeps its ids (its history replays); the run after its next continue-as-new takes the newest.
STREAM_NAMESPACE = "stream-namespace"
SITE_IN_BATCH_IDS = "site-in-batch-ids"


@workflow.defn
class CameraStreamWorkflow:
    @workflow.init
    def __init__(self, input: CameraStreamInput) -> None:
        self._pending: list[CameraFrame] = []
        self._arrived: list[float] = []
        self._closing = False
        self._batches_this_run = 0
        self._last_batch_id: str | None = input.last_batch_id
        self._input = input

    @workflow.signal(name=FRAME_SIGNAL)
    def frame(self, frame: CameraFrame) -> None:
        self._pending.append(frame)
        self._arrived.append(workflow.now().timestamp())

    @workflow.signal(name=CLOSE_SIGNAL)
    def close(self) -> None:
        """Batch whatever is waiting and finish; the next frame starts a new stream (a new epoch)."""
        self._closing = True

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> CameraStreamStatus:
        i = self._input
        return CameraStreamStatus(
            camera_id=i.camera_id,
            stream_epoch=i.stream_epoch,
            pending=len(self._pending),
            next_seq=i.next_seq,
            batches_started=i.batches_started,
            batches_this_run=self._batches_this_run,
            last_batch_id=self._last_batch_id,
            closing=self._closing,
        )

    @workflow.run
    async def run(self, input: CameraStreamInput) -> CameraStreamResult:
        # Frames signalled before the first task (signal-with-start) are already in self._pending; the
        # carried ones are older, so they go first.
        carried_at = input.pending_arrived_at
        if len(carried_at) != len(input.pending):
            carried_at = [workflow.now().timestamp()] * len(input.pending)
        self._pending[:0] = input.pending
        self._arrived[:0] = carried_at
        # max_frames below 1 would cut empty batches forever; a negative wait means "no wait".
        self._input = input = replace(input, pending=[], pending_arrived_at=[], max_frames=max(1, input.max_frames),
                                      max_wait_seconds=max(0.0, input.max_wait_seconds))
        if not input.stream_epoch:
            # Date for people, random part for uniqueness: a stream closed and restarted within the same
            # second must not reuse child ids. workflow.uuid4 is replay-safe.
            input.stream_epoch = f"{workflow.now():%Y%m%d}-{workflow.uuid4().hex[:8]}"
        if workflow.info().typed_search_attributes.get(sa.CAMERA) is None:
            workflow.upsert_search_attributes([sa.CAMERA.value_set(input.camera_id), sa.SITE.value_set(input.site_id)])

        while True:
            await workflow.wait_condition(lambda: bool(self._pending) or self._closing or self._history_full())
            if self._closing:
                while self._pending:
                    await self._start_batch()
                await workflow.wait_condition(workflow.all_handlers_finished)
                return CameraStreamResult(input.camera_id, input.batches_started, self._last_batch_id)
            if self._pending:
                await self._wait_until_batch_due()
                if self._closing:
                    continue  # the close branch batches everything
                await self._start_batch()
            if self._history_full():
                break

        # Signal handlers only append, but let any in flight finish before the state is copied; frames
        # signalled while this task completes make the server reject the completion, and the replay
        # that follows includes them in what is carried.
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(replace(input, pending=list(self._pending), pending_arrived_at=list(self._arrived),
                                         last_batch_id=self._last_batch_id))

    def _batch_full(self) -> bool:
        return len(self._pending) >= self._input.max_frames

    def _history_full(self) -> bool:
        # A run that has started no batch has nothing to shed: continuing would only loop (a tiny
        # max_history_events), and every signal it received is a frame that leads to a batch soon.
        if self._batches_this_run == 0:
            return False
        info = workflow.info()
        return (
            self._batches_this_run >= self._input.max_batches_per_run
            or info.get_current_history_length() >= self._input.max_history_events
            or info.is_continue_as_new_suggested()
        )

    async def _wait_until_batch_due(self) -> None:
        """Until the batch is full, or max_wait has passed since its oldest frame arrived."""
        if self._batch_full():
            return
        remaining = self._arrived[0] + self._input.max_wait_seconds - workflow.now().timestamp()
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._batch_full() or self._closing, timeout=timedelta(seconds=remaining)
            )

    @staticmethod
    def _batch_id(input: CameraStreamInput) -> str:
        if not workflow.patched(STREAM_NAMESPACE):
            return legacy_stream_batch_id(input.camera_id, input.stream_epoch, input.next_seq)
        if not workflow.patched(SITE_IN_BATCH_IDS):
            return siteless_stream_batch_id(input.camera_id, input.stream_epoch, input.next_seq)
        return stream_batch_id(input.site_id, input.camera_id, input.stream_epoch, input.next_seq)

    async def _start_batch(self) -> None:
        input = self._input
        take = input.max_frames
        frames, self._pending = self._pending[:take], self._pending[take:]
        self._arrived = self._arrived[take:]
        batch_id = self._batch_id(input)
        input.next_seq += 1
        template = input.batch_template or FrameBatchInput("", input.camera_id, input.site_id, [])
        child_input = replace(
            template,
            batch_id=batch_id,
            camera_id=input.camera_id,
            site_id=input.site_id,
            # Frame ids follow from the batch id and these positions (batch_types.make_frame_id).
            frames=[SubmittedFrame(f.object_key, f.size_bytes, f.filename, f.content_type) for f in frames],
        )
        try:
            await workflow.start_child_workflow(
                BATCH_WORKFLOW,
                child_input,
                id=batch_id,
                # ABANDON: the stream neither waits for its batches nor takes them down when it continues as new.
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=sa.at_start(input.camera_id, input.site_id, BatchStatus.RECEIVED.value),
            )
        except WorkflowAlreadyStartedError:
            # Only after a reset replays a start that had already happened: the batch exists, move on.
            workflow.logger.info("batch %s already started", batch_id)
        input.batches_started += 1
        self._batches_this_run += 1
        self._last_batch_id = batch_id
