"""Store and forward: batches cut from the durable queue, sent to POST /v1/batches at the rate cap, and
taken off the queue only when the API has accepted them.

One batch is in flight at a time, and a batch once cut is sent until accepted, under its own key,
before any other is cut (409 and a first 413 aside, below): after a lost response, a timeout or a
restart the same frames go again under the same key, and the API answers 200 with the batch it has.
What the API answers decides the wait:

- 202 or 200: accepted; the frames move to `sent`, the backoff resets.
- 429 or 503: the API (its admission, or a service behind it) says when to come back: Retry-After is
  obeyed, never shortened.
- no answer (connection refused or reset, timeout) or another 5xx: exponential backoff with jitter.
- 409: the key names other frames (a queue rebuilt under an old agent id); the frames get a new key.
- 413 on a batch's first attempt: more frames than the API takes a batch; they are cut again, smaller.
- 401, 403 and other 4xx: a configuration the agent cannot fix (a revoked key, a camera out of the key's
  scope, limits lower than the agent's): the batch is held, retried at the longest backoff, and the
  reason is in `sightline edge status`. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog

from edge.central_api import CentralApi
from edge.metrics import EdgeMetrics
from edge.pacing import Backoff, RateCap, pause
from edge.queue import FrameQueue, PendingBatch
from edge.settings import EdgeSettings

# A batch's frames stay well under the API's request cap (max_request_bytes, 128 MiB by default).
MAX_BATCH_BYTES = 96 * 1024 * 1024
IDLE_POLL_S = 0.1
RATE_WINDOW_S = 60.0
# A Retry-After longer than this (or "inf") is read as this: an answer must not stop uploads for good.
MAX_RETRY_AFTER_S = 300.0
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One upload attempt: when, which batch, what came back, and how long the uploader then waited."""

    at: float
    batch_key: str
    frames: int
    outcome: str  # the status code, or the connection error's name
    wait_s: float


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), at most MAX_RETRY_AFTER_S; None when
    absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


class Uploader:
    def __init__(self, queue: FrameQueue, api: CentralApi, settings: EdgeSettings, metrics: EdgeMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue, self.api, self.settings, self.metrics = queue, api, settings, metrics
        self.rate = RateCap(settings.rate_frames_per_s, settings.rate_bytes_per_s, clock)
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._jitter = random.Random()
        self.attempts: deque[Attempt] = deque(maxlen=500)
        self._accepted: deque[tuple[float, int]] = deque()
        self.last_error: str | None = None
        self.held: str | None = None  # why the batch at the head is held (a 4xx the agent cannot fix)
        self.next_attempt_at: float | None = None
        self.in_flight = False
        self.wake = asyncio.Event()
        self.frame_limit = max(settings.batch_max_frames, settings.backfill_batch_max_frames)

    def upload_rate(self) -> float:
        """Frames accepted per second over the last minute."""
        cutoff = time.monotonic() - RATE_WINDOW_S
        while self._accepted and self._accepted[0][0] < cutoff:
            self._accepted.popleft()
        return sum(n for _, n in self._accepted) / RATE_WINDOW_S

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                delay = await self.step()
            except Exception as exc:  # a broken file or disk: say so and try again later, never stop uploading
                log.exception("upload step failed")
                self.last_error = f"the upload step failed: {exc!r}"
                delay = self.settings.backoff_max_s
            if delay > 0:
                self.next_attempt_at = time.time() + delay
                self.wake.clear()
                await pause(stop, delay, self.wake if delay <= IDLE_POLL_S else None)
                self.next_attempt_at = None

    async def drain(self, seconds: float) -> None:
        """Upload what is queued, cut at once whatever its age, for up to `seconds` (shutdown)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (await asyncio.to_thread(self.queue.depth)).frames == 0:
                return
            delay = await self.step(flush=True)
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))

    async def step(self, flush: bool = False) -> float:
        """One attempt at the next batch; the seconds to wait before the next step."""
        s = self.settings
        batch = await asyncio.to_thread(self.queue.pending_batch)
        if batch is None:
            batch = await asyncio.to_thread(
                self.queue.cut_batch, max_frames=min(s.batch_max_frames, self.frame_limit), max_bytes=MAX_BATCH_BYTES,
                max_wait_s=0.0 if flush else s.batch_max_wait_s, order=s.drain_order, live_window_s=s.live_window_s,
                backlog_max_frames=min(s.backfill_batch_max_frames, self.frame_limit))
            if batch is None:
                return IDLE_POLL_S
        wait = self.rate.wait_for(len(batch.frames), batch.size_bytes)
        if wait > 0:
            return wait
        self.rate.take(len(batch.frames), batch.size_bytes)
        return await self._send(batch)

    async def _send(self, batch: PendingBatch) -> float:
        files = await asyncio.to_thread(lambda: [(f.filename, self.queue.read(f), f.content_type)
                                                 for f in batch.frames])
        await asyncio.to_thread(self.queue.begin_attempt, batch)
        self.in_flight = True
        try:
            response = await self.api.submit(batch, self.settings.site_id, files)
        except httpx.TransportError as exc:
            # No answer: the API may still have accepted the batch (a lost response); the same key
            # again finds it.
            return await self._failed(batch, type(exc).__name__, f"no answer from the API: {exc!r}",
                                      self.backoff.next_delay())
        finally:
            self.in_flight = False
        status = response.status_code
        if status in (200, 202):
            body = response.json()
            frames = await asyncio.to_thread(self.queue.accept, batch, body["batch_id"])
            self.metrics.uploaded.inc(frames)
            self.metrics.batches.labels("created" if body.get("created") else "existing").inc()
            self._accepted.append((time.monotonic(), frames))
            self.attempts.append(Attempt(time.time(), batch.idempotency_key, frames, str(status), 0.0))
            self.backoff.reset()
            self.last_error = self.held = None
            return 0.0
        detail = _detail(response)
        if status in (429, 503):
            told = retry_after_s(response.headers.get("retry-after"))
            delay = self.backoff.next_delay() if told is None else told * (1 + self._jitter.uniform(0, 0.1))
            return await self._failed(batch, str(status), f"the API answered {status}: {detail}", delay)
        if status == 413 and len(batch.frames) > 1 and batch.attempts == 0:
            # Too many frames for this API (its max_frames_per_batch is below ours), answered before it
            # recorded anything; only when no earlier attempt was ever sent (attempts are counted before
            # they go), so none of them can have been accepted with its answer lost.
            self.frame_limit = max(1, len(batch.frames) // 2)
            await asyncio.to_thread(self.queue.release, batch)
            return await self._failed(batch, "413", f"the API refused {len(batch.frames)} frames in one batch "
                                      f"({detail}); batches are cut at {self.frame_limit} frames from now on", 0.0)
        if status == 409:
            rekeyed = await asyncio.to_thread(self.queue.rekey, batch, detail)
            return await self._failed(batch, "409", f"key {batch.idempotency_key} names other frames; the frames go "
                                      f"again under {rekeyed.idempotency_key}", 0.0)
        if 400 <= status < 500:
            self.held = f"the API refuses batch {batch.idempotency_key} ({status}): {detail}"
            return await self._failed(batch, str(status), self.held, self.settings.backoff_max_s)
        return await self._failed(batch, str(status), f"the API answered {status}: {detail}", self.backoff.next_delay())

    async def _failed(self, batch: PendingBatch, reason: str, message: str, delay: float) -> float:
        self.last_error = message
        self.metrics.upload_failures.labels(reason).inc()
        self.attempts.append(Attempt(time.time(), batch.idempotency_key, len(batch.frames), reason, delay))
        if reason not in ("409", "413"):  # those batches are gone: re-keyed, or released to be cut again
            await asyncio.to_thread(self.queue.record_attempt, batch, message)
        return delay


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail if detail is not None else response.text)[:300]
