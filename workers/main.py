"""`python -m workers.main`: one process serving every task queue, as the local stack runs it."""

from __future__ import annotations

import asyncio
import signal

from infra.db import apply_migrations, open_pool
from infra.log import configure_logging, get_logger
from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from infra.temporal import connect
from workers.orchestration import orchestration_worker

log = get_logger(__name__)


async def run_worker() -> None:
    settings = get_settings()
    url = database_url(settings)
    apply_migrations(url)
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    store = store_from_settings(settings)
    async with open_pool(url) as pool:
        worker = orchestration_worker(client, pool, store, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("worker started", task_queue=settings.orchestration_task_queue)
        async with worker:
            await stop.wait()
        log.info("worker stopped")


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_json, settings.log_level, service="worker")
    asyncio.run(run_worker())


if __name__ == "__main__":
    main()
