"""Heartbeating while an activity waits on something else: Temporal then learns within a heartbeat
timeout that the worker died, instead of after the whole start-to-close timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(every_s: float = 5.0) -> AsyncIterator[None]:
    """Heartbeat every `every_s` seconds for as long as the block runs, the first after `every_s`: the
    SDK sends a first heartbeat to the server at once (only later ones are throttled), and a block
    that ends within seconds, as a classification does, needs none. The heartbeat timeout must leave
    room for that first interval."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            activity.heartbeat()

    ticker = asyncio.create_task(beat())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
