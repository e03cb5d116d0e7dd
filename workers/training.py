"""The training worker: the `training` task queue (dataset snapshots, training, evaluation,
registration). In the local stack it runs in the worker process next to the other queues; on GPU hosts
it runs on its own (`python -m workers.training`), one job at a time per GPU."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.training import TrainingActivities
from infra.db import DbPool, open_pool
from infra.log import configure_logging, get_logger
from infra.schema_migrations import require_migrated
from infra.settings import Settings, get_settings
from infra.stack_urls import database_url
from infra.store import ObjectStore, store_from_settings
from infra.telemetry import configure_tracing, tracing_options
from infra.temporal import connect
from vision.registry import ModelRegistry
from vision.signatures import signer_from_settings
from workers.telemetry import sdk_runtime, serve_worker_metrics
from workers.versioning import deployment_config

log = get_logger(__name__)


def training_worker(client: Client, pool: DbPool, store: ObjectStore, settings: Settings,
                    registry: ModelRegistry | None = None) -> Worker:
    activities = TrainingActivities(client, pool, store, registry or ModelRegistry(database_url(settings)), settings,
                                    signer_from_settings(settings))
    return Worker(
        client,
        task_queue=settings.training_task_queue,
        activities=[activities.materialize_snapshot, activities.train_candidate, activities.evaluate_candidate,
                    activities.register_candidate],
        # One job at a time: a training run uses every core (or the GPU) it is given.
        max_concurrent_activities=1,
        # Heartbeats reach the server at least every second, so a cancel reaches a training run within
        # about a second rather than within most of its heartbeat timeout.
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        default_heartbeat_throttle_interval=timedelta(seconds=1),
        graceful_shutdown_timeout=timedelta(seconds=5),
        deployment_config=deployment_config(settings),
    )


async def run_training_worker() -> None:
    settings = get_settings()
    url = database_url(settings)
    require_migrated(url)
    # The GPU queue's own process exports what the main worker does (ports of its own, from its settings).
    tracing = configure_tracing(tracing_options(settings), "training-worker")
    serve_worker_metrics(settings)
    client = await connect(settings.temporal_address, settings.temporal_namespace, tracing=tracing,
                           runtime=sdk_runtime(settings))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with open_pool(url) as pool, training_worker(client, pool, store_from_settings(settings), settings,
                                                       ModelRegistry(url)):
        log.info("training worker started", task_queue=settings.training_task_queue)
        await stop.wait()
    log.info("training worker stopped")


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_json, settings.log_level, service="training-worker")
    asyncio.run(run_training_worker())


if __name__ == "__main__":
    main()
