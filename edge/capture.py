"""Taking frames in: the one path every source goes through (checks, redaction, the durable queue, the
local decision), and the sources besides POST /frames: a watched folder and the generated camera.

A frame is acknowledged (an HTTP answer, a watched file removed, the camera's index moved on) only once
its file and row are on disk. The local decision runs while the file is written, so the answer to
POST /frames carries it at the cost of the slower of the two, not their sum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge.metrics import EdgeMetrics
from edge.model import ModelKeeper
from edge.pacing import pause
from edge.queue import FrameQueue, LocalDecision, QueueFull, Staged
from edge.redaction import Redaction, RedactionUnavailable
from edge.settings import NAME_PATTERN, EdgeSettings
from infra.store import sha256_hex
from vision.decode import FrameRejected
from vision.formats import sniff_image_type
from vision.processing import Decision

log = structlog.get_logger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}
MAX_FILENAME = 255  # the API's limit on a frame's filename


class CaptureRefused(Exception):
    """The frame was not taken; `status` is the HTTP status POST /frames answers, `reason` the metric's
    label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Captured:
    seq: int
    camera_id: str
    filename: str
    sha256: str
    size_bytes: int
    decision: Decision | None
    model_version: str | None
    rejected: str | None  # the local decoder's reason, when the bytes are not a usable frame
    elapsed_s: float


class Capture:
    def __init__(self, queue: FrameQueue, models: ModelKeeper, redaction: Redaction, settings: EdgeSettings,
                 metrics: EdgeMetrics, on_queued: Callable[[], None]) -> None:
        self.queue, self.models, self.redaction = queue, models, redaction
        self.settings, self.metrics, self.on_queued = settings, metrics, on_queued

    def _refuse(self, status: int, reason: str, message: str) -> CaptureRefused:
        self.metrics.refused.labels(reason).inc()
        return CaptureRefused(status, reason, message)

    async def take(self, data: bytes, *, camera_id: str | None = None, filename: str = "", source: str = "http",
                   captured_at: float | None = None, meta: dict[str, str] | None = None) -> Captured:
        """Queue the frame durably and decide it locally; CaptureRefused when it is not taken."""
        started = time.perf_counter()
        camera = camera_id or self.settings.camera_id
        if not NAME_PATTERN.match(camera):
            raise self._refuse(422, "camera_id", f"camera_id {camera[:80]!r} must be 1-64 letters, digits, '.', '_' "
                                                 "or '-', starting with a letter or digit")
        if len(filename) > MAX_FILENAME:
            raise self._refuse(422, "filename", f"the filename is longer than {MAX_FILENAME} characters")
        if len(data) > self.settings.max_frame_bytes:
            raise self._refuse(413, "size", f"the frame has {len(data)} bytes; at most {self.settings.max_frame_bytes}")
        media = sniff_image_type(data)
        if media not in _SUFFIX:
            raise self._refuse(415, "type", "not a JPEG, PNG or WebP image")
        try:
            await self.redaction.refresh(camera)
            # Decoding and encoding in a thread of their own, only for cameras that are redacted.
            data = (await asyncio.to_thread(self.redaction.apply, data, camera) if self.redaction.redacts(camera)
                    else self.redaction.apply(data, camera))
            media = sniff_image_type(data) if sniff_image_type(data) in _SUFFIX else media  # redacted: a JPEG
        except RedactionUnavailable as exc:
            raise self._refuse(422, "redaction", str(exc)) from None
        captured_at = time.time() if captured_at is None else captured_at
        model = self.models.current
        stage = asyncio.to_thread(self.queue.stage, data, media)
        if model is None:
            staged_or_error, verdict = (await asyncio.gather(stage, return_exceptions=True))[0], None
        else:
            staged_or_error, verdict = await asyncio.gather(
                stage, asyncio.to_thread(model.decide, data), return_exceptions=True)
        if isinstance(staged_or_error, QueueFull):
            raise self._refuse(507, "disk_bound", str(staged_or_error))
        if isinstance(staged_or_error, OSError):  # the box's disk itself (full, read-only): not taken, said so
            raise self._refuse(507, "disk", f"the frame could not be written to the edge queue: {staged_or_error}")
        if isinstance(staged_or_error, BaseException):
            raise staged_or_error
        staged: Staged = staged_or_error
        decision, rejected = None, None
        if isinstance(verdict, FrameRejected):
            rejected = str(verdict)
        elif isinstance(verdict, BaseException):
            log.warning("local decision failed", error=repr(verdict))
        elif verdict is not None:
            decision = verdict
        local = None
        if decision is not None and model is not None:
            local = LocalDecision(decision.label, decision.confidence, decision.novelty, decision.unfamiliar,
                                  model.version)
        name = filename or f"{camera}-{int(captured_at * 1000)}{_SUFFIX[media]}"
        try:
            seq = await asyncio.to_thread(self.queue.commit, staged, camera, name, source, captured_at, local, meta)
        except BaseException:
            await asyncio.to_thread(self.queue.abort, staged)
            raise
        self.metrics.captured.labels(source).inc()
        self.on_queued()
        return Captured(seq, camera, name, staged.sha256, staged.size, decision, local.model_version if local else None,
                        rejected, time.perf_counter() - started)


def _render(camera_id: str, seed: int, index: int) -> bytes:
    from vision.camera import generate_frames

    return generate_frames(camera_id, 1, seed, start=index)[0].jpeg()


class GeneratedCamera:
    """The generated inspection-line camera at `fps`: frame i is `<camera>-<i:08d>.jpg`. The next index
    is kept in the queue with the frame that took it, so after a restart the camera goes on where the
    last acknowledged frame left it; a frame refused (the disk bound) is taken again at the next tick."""

    def __init__(self, capture: Capture, queue: FrameQueue, camera_id: str, fps: float, seed: int) -> None:
        self.capture, self.queue = capture, queue
        self.camera_id, self.period, self.seed = camera_id, 1.0 / fps, seed
        self.meta_key = f"camera:{camera_id}:next_index"

    def next_index(self) -> int:
        return int(self.queue.get_meta(self.meta_key) or 0)

    async def run(self, stop: asyncio.Event) -> None:
        index = await asyncio.to_thread(self.next_index)
        due = time.monotonic()
        while not stop.is_set():
            data = await asyncio.to_thread(_render, self.camera_id, self.seed, index)
            try:
                await self.capture.take(data, camera_id=self.camera_id, filename=f"{self.camera_id}-{index:08d}.jpg",
                                        source="camera", meta={self.meta_key: str(index + 1)})
                index += 1
            except CaptureRefused as exc:
                log.warning("generated frame refused", camera=self.camera_id, index=index, reason=str(exc))
            except Exception:  # the frame was not acknowledged: the same index is taken again next tick
                log.exception("generated frame not captured", camera=self.camera_id, index=index)
            due += self.period
            now = time.monotonic()
            if due < now - self.period:  # fell behind (a slow disk): keep the rate, skip the catch-up burst
                due = now
            await pause(stop, max(0.0, due - now))


class FolderWatcher:
    """Frames dropped into a folder: `<dir>/*.jpg` are the default camera's, `<dir>/<camera>/*.jpg` that
    camera's. A file is moved aside (`.taking/`) while it is taken and removed once queued; one found
    there at start is taken again unless the queue already has it. Dot files, `.tmp` and `.part` files
    and files modified within the settle time are left for a later scan (a writer may be at them). A file
    that is not a frame goes to `.rejected/` with its reason beside it."""

    def __init__(self, capture: Capture, queue: FrameQueue, root: Path, default_camera: str, interval_s: float,
                 settle_s: float) -> None:
        self.capture, self.queue, self.root = capture, queue, root
        self.default_camera, self.interval_s, self.settle_s = default_camera, interval_s, settle_s
        self.taking = root / ".taking"
        self.rejected = root / ".rejected"

    def _ready(self) -> list[tuple[Path, str, float]]:
        now = time.time()
        found = []
        for folder, camera in [(self.root, self.default_camera),
                               *((d, d.name) for d in sorted(self.root.iterdir())
                                 if d.is_dir() and not d.name.startswith("."))]:
            for path in folder.iterdir():
                if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                    continue
                mtime = path.stat().st_mtime
                if now - mtime >= self.settle_s:
                    found.append((path, camera, min(mtime, now)))
        return sorted(found, key=lambda f: f[2])

    async def _recover(self) -> None:
        """Files a killed agent was taking: queued already (then removed) or taken now."""
        if not self.taking.exists():
            return
        for path in sorted(self.taking.iterdir()):
            camera, _, name = path.name.partition("+")
            data = path.read_bytes()
            if await asyncio.to_thread(self.queue.knows, sha256_hex(data), name, "folder"):
                path.unlink()
            else:
                await self._take(path, camera, name, path.stat().st_mtime)

    async def _take(self, path: Path, camera: str, name: str, captured_at: float) -> bool:
        """False when the queue is full (the file stays where it is, for a later scan)."""
        try:
            await self.capture.take(path.read_bytes(), camera_id=camera, filename=name, source="folder",
                                    captured_at=captured_at)
        except CaptureRefused as exc:
            if exc.reason == "disk_bound":
                return False
            self.rejected.mkdir(exist_ok=True)
            path.rename(self.rejected / name)
            (self.rejected / f"{name}.reason.txt").write_text(f"{exc}\n")
            return True
        path.unlink()
        return True

    async def scan(self) -> int:
        """Take every ready file; how many were taken."""
        await self._recover()
        taken = 0
        for path, camera, captured_at in await asyncio.to_thread(self._ready):
            self.taking.mkdir(exist_ok=True)
            moved = self.taking / f"{camera}+{path.name}"  # "+" is outside the camera alphabet
            path.rename(moved)
            if not await self._take(moved, camera, path.name, captured_at):
                moved.rename(path)  # the queue is full: back where it was, for a later scan
                break
            taken += 1
        return taken

    async def run(self, stop: asyncio.Event) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            try:
                await self.scan()
            except OSError as exc:
                log.warning("watched folder scan failed", folder=str(self.root), error=str(exc))
            await pause(stop, self.interval_s)
