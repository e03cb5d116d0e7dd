"""`python -m workers.health`: exit 0 when a worker polls the orchestration task queue, 1 otherwise.
Used by the compose healthcheck and by `sightline up`."""

from __future__ import annotations

import asyncio
import sys

from infra.settings import get_settings
from infra.temporal import connect, has_pollers


async def _check() -> bool:
    settings = get_settings()
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    return await has_pollers(client, settings.temporal_namespace, settings.orchestration_task_queue)


def main() -> None:
    try:
        healthy = asyncio.run(_check())
    except Exception as exc:  # unreachable Temporal is unhealthy, not a crash
        print(f"unhealthy: {exc}", file=sys.stderr)
        healthy = False
    print("healthy" if healthy else "no worker polls the orchestration task queue")
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
