"""Waiting for something to become true with a deadline, never a fixed sleep: the one polling helper
of the suite, for async predicates (`eventually`) and plain ones (`wait_until`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
