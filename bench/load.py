"""Load generators for the ingest benchmark and the fault suite: closed loop (N clients, each sending
its next batch when the last is answered) and open loop (batches at a fixed rate, whatever the
answers: how a camera fleet behaves). Every batch carries frames no earlier batch carried, so the
content-addressed store cannot make a repeat look cheap."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# (files for httpx's multipart, idempotency key) -> the response
Send = Callable[[list[Any], str], Awaitable[httpx.Response]]


def unique_jpeg(jpeg: bytes, nonce: int) -> bytes:
    """The same image with a comment segment holding `nonce` after its start marker: other bytes (so
    another content address), the same pixels."""
    comment = f"sightline-bench-{nonce}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


class FramePool:
    """Unique frames made from a few generated camera JPEGs."""

    def __init__(self, jpegs: list[bytes], seed: int = 0) -> None:
        self.jpegs = jpegs
        self.rng = random.Random(seed)
        self.counter = itertools.count(seed * 10_000_000)

    def files(self, count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [("frames", (f"f{i}.jpg", unique_jpeg(self.rng.choice(self.jpegs), next(self.counter)), "image/jpeg"))
                for i in range(count)]


@dataclass
class Outcomes:
    latencies: list[float] = field(default_factory=list)  # seconds from send to answer, accepted only
    responses: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0  # 429: admission control said "later"
    errors: list[str] = field(default_factory=list)

    def record(self, started: float, response: httpx.Response) -> None:
        if response.status_code == 429:
            self.refused += 1
            return
        try:
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.errors.append(f"{exc}: {response.text[:200]}")
            return
        self.latencies.append(time.perf_counter() - started)
        self.responses.append(response.json())


class Load(Outcomes):
    """N clients, each submitting one batch after another until the deadline (a closed loop)."""

    def __init__(self, frames: list[bytes], frames_per_batch: int, clients: int, seconds: float,
                 seed: int = 0) -> None:
        super().__init__()
        self.pool = FramePool(frames, seed)
        self.per_batch, self.clients, self.seconds = frames_per_batch, clients, seconds

    async def run(self, send: Send) -> float:
        deadline = time.monotonic() + self.seconds

        async def client(n: int) -> None:
            seq = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    self.record(started, await send(self.pool.files(self.per_batch), f"c{n}-{seq}"))
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                seq += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(self.clients)))
        return time.perf_counter() - started


class OpenLoop(Outcomes):
    """Batches sent at `rate` per second for `seconds`, each on its own task, whatever the answers."""

    def __init__(self, frames: list[bytes], frames_per_batch: int, rate: float, seconds: float, tag: str,
                 seed: int = 0) -> None:
        super().__init__()
        self.pool = FramePool(frames, seed)
        self.per_batch, self.rate, self.seconds, self.tag = frames_per_batch, rate, seconds, tag

    async def run(self, send: Send, on_tick: Callable[[], Awaitable[None]] | None = None) -> float:
        """Send at the rate; `on_tick` runs every half second (to sample the backlog)."""
        interval = 1.0 / self.rate
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        next_tick = started

        async def one(seq: int) -> None:
            sent = time.perf_counter()
            try:
                self.record(sent, await send(self.pool.files(self.per_batch), f"{self.tag}-{seq}"))
            except httpx.HTTPError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

        for seq in itertools.count():
            due = started + seq * interval
            if due - started >= self.seconds:
                break
            now = time.perf_counter()
            if on_tick and now >= next_tick:
                await on_tick()
                next_tick = now + 0.5
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            tasks.append(asyncio.create_task(one(seq)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - started
