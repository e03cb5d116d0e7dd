"""Waiting for something to become true with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time


async def eventually(fn, timeout: float = 30.0, message: str = "condition", interval: float = 0.05):
    """Poll an async predicate without blocking the event loop the worker runs on."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)
