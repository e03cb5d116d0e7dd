"""`python -m workers.main`: one process serving the orchestration, inference, webhook, training and drift
task queues, as the local stack runs it. Production runs the same workers in separate processes per queue."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack

from activities.inference import Classifier
from infra.db import open_pool
from infra.log import configure_logging, get_logger
from infra.schema_migrations import require_migrated
from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from infra.telemetry import configure_tracing, flush_spans, tracing_options
from infra.temporal import connect, ensure_search_attributes
from serving.client import ServingClient, ServingHandleClient
from serving.cluster import join_stack
from vision.registry import ModelRegistry
from workers.batch_sweep import ensure_batch_sweep_schedule
from workers.drift import drift_worker
from workers.inference import inference_worker
from workers.loop import ensure_drift_schedule
from workers.orchestration import orchestration_worker
from workers.retention import ensure_retention_schedule
from workers.telemetry import sdk_runtime, serve_worker_metrics
from workers.training import training_worker
from workers.versioning import become_current
from workers.webhooks import webhook_worker
from workflows import search_attributes as sa

log = get_logger(__name__)


async def run_worker() -> None:
    settings = get_settings()
    url = database_url(settings)
    require_migrated(url)  # applied by `sightline migrate`, never by a worker
    tracing = configure_tracing(tracing_options(settings), "worker")
    metrics_server = serve_worker_metrics(settings)
    client = await connect(settings.temporal_address, settings.temporal_namespace, tracing=tracing,
                           runtime=sdk_runtime(settings))
    await ensure_search_attributes(client, settings.temporal_namespace, sa.ALL)
    store = store_from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(url))
        serving = await stack.enter_async_context(ServingClient(settings.serving_url))
        classifier: Classifier = serving
        if settings.serving_transport == "handle":
            await asyncio.to_thread(join_stack, settings)  # ray.init blocks for a few seconds
            classifier = ServingHandleClient()
        registry = ModelRegistry(url)
        await stack.enter_async_context(orchestration_worker(client, pool, store, settings, registry))
        await stack.enter_async_context(inference_worker(client, classifier, pool, settings))
        await stack.enter_async_context(webhook_worker(client, pool, settings))
        await stack.enter_async_context(training_worker(client, pool, store, settings, registry))
        await stack.enter_async_context(drift_worker(client, pool, store, settings, registry))
        # After the workers: the Schedules' first runs find a worker polling.
        await ensure_drift_schedule(client, settings)
        await ensure_batch_sweep_schedule(client, settings)
        await ensure_retention_schedule(client, settings)
        if settings.worker_build_id and settings.worker_becomes_current:
            promoting = asyncio.create_task(become_current(client, settings))
            stack.callback(promoting.cancel)
            try:  # this process polls every queue, so this is quick; in a rolling deployment it waits on
                # the other queues' workers, in the background
                await asyncio.wait_for(asyncio.shield(promoting), 30)
            except TimeoutError:
                log.warning("this build is not the current one yet; it becomes current in the background",
                            build_id=settings.worker_build_id)
        log.info("worker started", task_queues=[settings.orchestration_task_queue, settings.inference_task_queue,
                                                settings.training_task_queue, settings.drift_task_queue])
        await stop.wait()
    if metrics_server is not None:
        metrics_server.shutdown()
    flush_spans()
    log.info("worker stopped")


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_json, settings.log_level, service="worker")
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()
