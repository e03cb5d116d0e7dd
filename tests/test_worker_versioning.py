"""Worker Versioning on the dev server, with the production workers (workers.orchestration) of two builds:
a short-lived workflow (a review task) stays pinned to the build that started it and finishes there after
the next build became current, new runs start on the new build, and a long-lived one (a camera stream)
moves to the new build with its next task. Unversioned workers (every other test's) keep working beside."""

from __future__ import annotations

import asyncio
import uuid

from temporalio.api.enums.v1 import VersioningBehavior
from temporalio.client import Client, WorkflowHandle

from tests.polling import eventually
from tests.review_support import fetch_one, review_input
from workers.orchestration import orchestration_worker
from workers.versioning import become_current, current_build
from workflows.camera_stream import CameraStreamWorkflow
from workflows.camera_stream_types import FRAME_SIGNAL, CameraFrame, CameraStreamInput, camera_workflow_id
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import ClaimRequest, DecisionRequest, review_workflow_id


async def version_of(handle: WorkflowHandle) -> tuple[str, int]:
    """(build id, versioning behaviour) of the run, as the server records it."""
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id, info.behavior


def frame(n: int) -> CameraFrame:
    digest = uuid.uuid4().hex * 2
    return CameraFrame(f"frames/sha256/{digest[:2]}/{digest}", digest, 1000 + n, "image/jpeg")


async def open_review(client: Client, pool, task_queue: str) -> WorkflowHandle:
    input = review_input()
    review_id = review_workflow_id(input.frame_id, input.reason)
    handle = await client.start_workflow(ReviewTaskWorkflow.run, input, id=review_id, task_queue=task_queue)

    async def listed():
        return await fetch_one(pool, "SELECT 1 AS ok FROM review_tasks WHERE review_id = %s", review_id)

    await eventually(listed, 30, f"{review_id} in the queue")
    return handle


async def test_pinned_runs_finish_on_their_build_and_streams_move_to_the_new_one(temporal_client, db_pool,
                                                                                 local_store, settings_factory):
    deployment = f"sightline-test-{uuid.uuid4().hex[:8]}"
    b1 = settings_factory(worker_deployment_name=deployment, worker_build_id="b1")
    b2 = settings_factory(worker_deployment_name=deployment, worker_build_id="b2")
    queue = b1.orchestration_task_queue
    async with orchestration_worker(temporal_client, db_pool, local_store, b1):
        await asyncio.wait_for(become_current(temporal_client, b1, retry_every_s=0.2), 30)
        assert await current_build(temporal_client, deployment) == "b1"
        first = await open_review(temporal_client, db_pool, queue)
        assert await version_of(first) == ("b1", VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)
        stream_input = CameraStreamInput("cam-versions", "plant-v", max_frames=100, max_wait_seconds=3600)
        stream = await temporal_client.start_workflow(
            CameraStreamWorkflow.run, stream_input, id=camera_workflow_id("plant-v", f"cam-{uuid.uuid4().hex[:6]}"),
            task_queue=queue, start_signal=FRAME_SIGNAL, start_signal_args=[frame(0)])

        async def stream_on(build: str) -> bool:
            return (await version_of(stream))[0] == build

        await eventually(lambda: stream_on("b1"), 30, "the stream's first task on b1")
        assert (await version_of(stream))[1] == VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE

        async with orchestration_worker(temporal_client, db_pool, local_store, b2):
            await asyncio.wait_for(become_current(temporal_client, b2, retry_every_s=0.2), 30)
            assert await current_build(temporal_client, deployment) == "b2"
            second = await open_review(temporal_client, db_pool, queue)
            assert (await version_of(second))[0] == "b2", "new runs start on the current build"
            # The first task is decided on the build that started it.
            await first.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-v", "v"))
            await first.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-v", "ok"))
            await asyncio.wait_for(first.result(), 30)
            assert (await version_of(first))[0] == "b1"
            # The stream is long-lived: its next task runs on the new build.
            await stream.signal(FRAME_SIGNAL, frame(1))
            await eventually(lambda: stream_on("b2"), 30, "the stream moved to b2")
            await stream.terminate("test over")
            await second.terminate("test over")
