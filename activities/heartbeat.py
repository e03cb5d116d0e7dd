"""Heartbeating while an activity waits on something else: Temporal then learns within a heartbeat
timeout that the worker died, instead of after the whole start-to-close timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity


@contextlib.asynccontextmanager
async def heartbeating(every_s: float = 5.0) -> AsyncIterator[None]:
    """Heartbeat every `every_s` seconds for as long as the block runs (the SDK throttles what reaches
    the server, so a short block costs nothing)."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every_s)

    ticker = asyncio.create_task(beat())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
