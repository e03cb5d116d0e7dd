"""How fast the agent may upload and how long it waits after a failure: a rate cap of frames and bytes
per second (two token buckets), and exponential backoff with full jitter.

The cap holds for every upload, live or backlog: a site that comes back from an outage with an hour of
frames drains them at the cap, and the API's admission of every other site keeps its room. Each bucket
holds at most one second of its rate (or one batch, if a batch is bigger) and may go into debt by one
batch: a batch waits until both buckets hold what it costs (or are full), then takes it. Over any
window of T seconds the agent sends at most rate x T plus one second's and one batch's worth.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = capacity, now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until the bucket holds `cost` (or is full, for a cost above its capacity)."""
        self._refill(now)
        shortfall = min(cost, self.capacity) - self.tokens
        # A shortfall of rounding error is none: a wait of 1e-17 s would not move any clock.
        return shortfall / self.rate if shortfall > 1e-9 * max(1.0, cost) else 0.0

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.tokens -= cost


class RateCap:
    """Frames per second and bytes per second, both held."""

    def __init__(self, frames_per_s: float, bytes_per_s: float, clock: Callable[[], float]) -> None:
        now = clock()
        self.clock = clock
        self.frames = TokenBucket(frames_per_s, max(frames_per_s, 1.0), now)
        self.bytes = TokenBucket(bytes_per_s, bytes_per_s, now)

    def wait_for(self, frames: int, size: int) -> float:
        """Seconds to wait before a batch of `frames` frames and `size` bytes may go."""
        now = self.clock()
        return max(self.frames.wait_for(frames, now), self.bytes.wait_for(size, now))

    def take(self, frames: int, size: int) -> None:
        now = self.clock()
        self.frames.take(frames, now)
        self.bytes.take(size, now)


class Backoff:
    """Exponential backoff with full jitter (a uniform draw below the ceiling), so a site's agents do
    not come back in step; `reset` after a success."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.failures = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.failures = 0


async def pause(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Wait `seconds`, or less when `stop` (or `wake`) is set meanwhile: the loops' sleep, which a
    shutdown cuts short."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
