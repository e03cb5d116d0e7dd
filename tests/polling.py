"""Waiting for something to become true with a deadline, never a fixed sleep: the one polling helper
of the suite, for async predicates (`eventually`) and plain ones (`wait_until`); and `in_background`,
for load that runs while a test waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _expired(deadline: float, timeout: float, message: str) -> None:
    if time.monotonic() > deadline:
        raise AssertionError(f"timed out after {timeout}s waiting for {message}")


async def eventually(fn: Callable[[], Awaitable[T | None]], timeout: float = 30.0, message: str = "condition",
                     interval: float = 0.05) -> T:
    """Poll an async predicate without blocking the event loop the worker runs on; its truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        _expired(deadline, timeout, message)
        await asyncio.sleep(interval)


def wait_until(fn: Callable[[], T | None], timeout: float = 30.0, message: str = "condition",
               interval: float = 0.05) -> T:
    """Poll a plain predicate (no event loop involved, e.g. a process or a port); its truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        _expired(deadline, timeout, message)
        time.sleep(interval)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run `work` as a task for as long as the block runs, then cancel it and wait for it to stop."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
