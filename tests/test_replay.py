"""Replay stored histories against today's workflow code: a change that breaks determinism fails here.

Histories under tests/histories/ were recorded from real runs (see `record_history` below, run with
`SIGHTLINE_RECORD_HISTORY=1`). Keep old ones when the workflow changes: running workflows started
on old code must still replay; put new steps behind `workflow.patched(...)`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests.frames import jpeg_frame, multipart, truncated_jpeg
from workflows.frame_batch import FrameBatchWorkflow

HISTORIES = Path(__file__).parent / "histories"


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("frame_batch_*.json")), ids=lambda p: p.stem)
async def test_stored_history_replays(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=[FrameBatchWorkflow]).replay_workflow(history)


async def test_a_fresh_history_replays(api):
    """A batch that takes every path: a rejected frame, a review task started, a defect recorded."""
    from infra.store import frame_key, sha256_hex

    files = [("a.jpg", jpeg_frame(1), "image/jpeg"), ("b.jpg", truncated_jpeg(), "image/jpeg"),
             ("c.jpg", jpeg_frame(2), "image/jpeg"), ("d.jpg", jpeg_frame(3), "image/jpeg")]
    api.classifier.script(frame_key(sha256_hex(files[2][1])), "scratch", 0.5)
    api.classifier.script(frame_key(sha256_hex(files[3][1])), "dent", 0.99)
    response = await api.http.post("/v1/batches", data={"camera_id": "replay", "idempotency_key": "r1"},
                                   files=multipart(files))
    handle = api.client.get_workflow_handle(response.json()["batch_id"])
    await asyncio.wait_for(handle.result(), 60)
    history = await handle.fetch_history()
    if os.environ.get("SIGHTLINE_RECORD_HISTORY"):
        name = os.environ["SIGHTLINE_RECORD_HISTORY"]
        (HISTORIES / f"frame_batch_{name}.json").write_text(history.to_json())
    await Replayer(workflows=[FrameBatchWorkflow]).replay_workflow(history)


@workflow.defn(name="FrameBatchWorkflow")
class FrameBatchSkippingValidation:
    """A deliberately incompatible change: the same workflow type, but it records nothing."""

    @workflow.run
    async def run(self, input: dict) -> dict:
        return {}


async def test_a_changed_workflow_fails_replay():
    """The guard itself: replaying a stored history against different steps must fail."""
    path = sorted(HISTORIES.glob("frame_batch_*.json"))[0]
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await Replayer(workflows=[FrameBatchSkippingValidation]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
