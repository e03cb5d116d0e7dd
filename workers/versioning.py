"""Worker Versioning for our workers: the deployment a worker of this build joins, the workflow classes
it registers (declared with their versioning behaviour, workflows/versioned.py), and making this build
the deployment's current version once its workers poll every task queue the current version has.

Off when the settings name no build id: then workers are unversioned and register the plain classes,
because Temporal refuses a versioning behaviour from an unversioned worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import temporalio.api.workflowservice.v1 as wsv1
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from infra.log import get_logger
from infra.settings import Settings
from workflows.versioned import VERSIONED

log = get_logger(__name__)


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    if not settings.worker_build_id:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(settings.worker_deployment_name, settings.worker_build_id),
        use_worker_versioning=True,
        # Every workflow of ours declares its own; a workflow registered without one is pinned.
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def workflow_classes(workflows: Sequence[type], settings: Settings) -> list[type]:
    """The classes a worker of these settings registers for these workflow types."""
    if not settings.worker_build_id:
        return list(workflows)
    return [VERSIONED.get(cls, cls) for cls in workflows]


async def current_build(client: Client, deployment: str) -> str | None:
    try:
        described = await client.workflow_service.describe_worker_deployment(
            wsv1.DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    current = described.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None


async def become_current(client: Client, settings: Settings, retry_every_s: float = 2.0) -> None:
    """Make this build the deployment's current version: new workflows start on it, and auto-upgrading
    ones move to it; pinned runs stay on the build that started them. Retries while the server refuses
    (the version not registered yet, or a task queue of the current version that no worker of this
    build polls yet, as while a rolling deployment brings up the other queues' workers)."""
    deployment, build = settings.worker_deployment_name, settings.worker_build_id
    while True:
        try:
            if await current_build(client, deployment) == build:
                return
            await client.workflow_service.set_worker_deployment_current_version(
                wsv1.SetWorkerDeploymentCurrentVersionRequest(namespace=client.namespace, deployment_name=deployment,
                                                              build_id=build, identity=f"sightline worker {build}"))
            log.info("worker build is current", deployment=deployment, build_id=build)
            return
        except RPCError as exc:
            if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION,
                                  RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
            log.info("worker build not current yet", deployment=deployment, build_id=build, reason=exc.message)
        await asyncio.sleep(retry_every_s)
