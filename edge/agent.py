"""The edge agent: one site's cameras beside the line, a durable queue, uploads at a rate cap, local
decisions from the production model. `sightline edge run` (or `python -m edge`) runs one.

Parts, each its own task on one event loop: the loopback endpoint (edge.server), the capture sources
(edge.capture), the uploader (edge.uploader), the model keeper (edge.model) and the reconciler of local
and central predictions (edge.reconcile). On SIGTERM capture stops first, then the endpoint, then the
uploader gets `shutdown_drain_s` to send what is queued; whatever is left waits on disk for the next
start. A SIGKILL loses nothing that was acknowledged: the queue is the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator

import structlog
import uvicorn

from edge.capture import Capture, FolderWatcher, GeneratedCamera
from edge.central_api import CentralApi
from edge.metrics import EdgeMetrics
from edge.model import ModelKeeper
from edge.queue import FrameQueue
from edge.reconcile import Reconciler
from edge.redaction import Redaction, Redactor
from edge.server import EdgeHttp
from edge.settings import EdgeSettings
from edge.status import EdgeStatus, queue_database, recent_disagreements
from edge.uploader import Uploader

log = structlog.get_logger(__name__)


class EdgeAgent:
    def __init__(self, settings: EdgeSettings, redactor: Redactor | None = None) -> None:
        self.settings = settings
        root = settings.resolved_data_dir
        self.metrics = EdgeMetrics()
        self.metrics.queue_max_bytes.set(settings.max_queue_bytes)
        self.queue = FrameQueue(root / "queue", settings.max_queue_bytes)
        self.api = CentralApi(settings.api_url, settings.api_key.get_secret_value(), settings.request_timeout_s)
        self.models = ModelKeeper(self.api, settings, self.metrics)
        self.uploader = Uploader(self.queue, self.api, settings, self.metrics)
        # Redaction under each camera's central privacy settings (vision.redaction), kept in the queue's database.
        redaction = Redaction(settings.redact_cameras, redactor,
                              central=lambda camera: self.api.privacy(settings.site_id, camera),
                              meta=(self.queue.get_meta, self.queue.set_meta), refresh_s=settings.privacy_refresh_s,
                              max_pixels=settings.max_frame_pixels)
        self.capture = Capture(self.queue, self.models, redaction, settings, self.metrics, self.uploader.wake.set)
        self.reconciler = Reconciler(self.queue, self.api, settings, self.metrics)
        self.camera = (GeneratedCamera(self.capture, self.queue, settings.camera_id, settings.camera_fps,
                                       settings.camera_seed) if settings.camera_fps > 0 else None)
        self.watcher = (FolderWatcher(self.capture, self.queue, settings.watch_dir, settings.camera_id,
                                      settings.watch_interval_s, settings.watch_settle_s)
                        if settings.watch_dir is not None else None)
        self.local_url = settings.local_url
        self.ready = asyncio.Event()
        self._server: uvicorn.Server | None = None

    # ---- what it reports ----

    def status(self) -> EdgeStatus:
        depth = self.queue.depth()
        agreement = self.queue.agreement()
        model = self.models.current
        next_at = self.uploader.next_attempt_at
        return EdgeStatus(
            running=True, site_id=self.settings.site_id, api_url=self.settings.api_url, agent_id=self.queue.agent_id,
            queue_frames=depth.frames, queue_bytes=depth.bytes, max_queue_bytes=self.settings.max_queue_bytes,
            batches_cut=depth.batches_cut,
            oldest_frame_age_s=None if depth.oldest_captured_at is None else max(0.0, time.time()
                                                                                 - depth.oldest_captured_at),
            upload_rate_fps=round(self.uploader.upload_rate(), 2), last_contact_at=self.api.last_contact,
            last_error=self.uploader.last_error, held=self.uploader.held,
            next_attempt_in_s=None if next_at is None else max(0.0, next_at - time.time()),
            model_ref=self.models.ref, model_version=model.version if model else None, model_since=self.models.since,
            model_refusal=self.models.refusal, model_error=self.models.last_error, compared=agreement.reconciled,
            disagreements=agreement.disagreements, awaiting_central=agreement.awaiting,
            version_pairs=agreement.pairs,
            cameras={self.camera.camera_id: self.camera.next_index()} if self.camera else {},
            recent_disagreements=recent_disagreements(queue_database(self.settings)))

    def render_metrics(self) -> bytes:
        depth = self.queue.depth()
        m = self.metrics
        m.queue_frames.set(depth.frames)
        m.queue_bytes.set(depth.bytes)
        m.oldest_age.set(0.0 if depth.oldest_captured_at is None else max(0.0, time.time() - depth.oldest_captured_at))
        m.upload_rate.set(self.uploader.upload_rate())
        if self.api.last_contact is not None:
            m.last_contact.set(self.api.last_contact)
        return m.render()

    # ---- running ----

    async def _start_server(self) -> asyncio.Task[None]:
        """The endpoint, listening when this returns (its port known, for listen_port 0)."""
        config = uvicorn.Config(EdgeHttp(self), host=self.settings.listen_host, port=self.settings.listen_port,
                                log_config=None, access_log=False, lifespan="off")
        self._server = server = _Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()  # raises why it could not listen
                raise RuntimeError(f"the edge endpoint did not start on {self.settings.local_url}")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{self.settings.listen_host}]" if ":" in self.settings.listen_host else self.settings.listen_host
        self.local_url = f"http://{host}:{port}"
        return serving

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down in order (see the module's docstring)."""
        await asyncio.to_thread(self.models.load_last_good)
        stop_capture, stop_upload = asyncio.Event(), asyncio.Event()
        server = await self._start_server()
        background = [asyncio.create_task(self.models.run(stop)), asyncio.create_task(self.reconciler.run(stop))]
        uploads = asyncio.create_task(self.uploader.run(stop_upload))
        sources = [asyncio.create_task(s.run(stop_capture)) for s in (self.camera, self.watcher) if s is not None]
        log.info("edge agent running", url=self.local_url, api=self.settings.api_url, site=self.settings.site_id,
                 agent_id=self.queue.agent_id)
        self.ready.set()
        try:
            await stop.wait()
        finally:
            stop_capture.set()
            await asyncio.gather(*sources, return_exceptions=True)
            if self._server is not None:
                self._server.should_exit = True
            await asyncio.gather(server, return_exceptions=True)
            stop_upload.set()
            await asyncio.gather(uploads, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.uploader.drain(self.settings.shutdown_drain_s)
            await asyncio.gather(*background, return_exceptions=True)
            await self.api.close()
            left = self.queue.depth().frames
            self.queue.close()
            log.info("edge agent stopped", queued=left)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The agent handles SIGTERM and SIGINT (capture stops first, then the endpoint, then uploads).
        yield


@contextlib.asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[EdgeAgent]:
    """The agent running on this event loop for the block (the demo's and the tests' in-process agent)."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    ready = asyncio.create_task(agent.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises why it did not start
    try:
        yield agent
    finally:
        stop.set()
        await task


def configure_logging(level: str = "INFO") -> None:
    """JSON lines off a terminal, readable ones on it (infra.log's format, without its Temporal context:
    the edge runs without Temporal)."""
    renderer: structlog.typing.Processor = (structlog.dev.ConsoleRenderer() if sys.stdout.isatty()
                                            else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[lambda _l, _m, ev: {"service": "edge", **ev}, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.format_exc_info,
                    renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(), cache_logger_on_first_use=False)
    logging.basicConfig(level=level.upper(), stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def main(settings: EdgeSettings | None = None) -> None:
    """Run an agent in the foreground until SIGTERM or SIGINT."""
    configure_logging()
    settings = settings or EdgeSettings()

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await EdgeAgent(settings).run(stop)

    asyncio.run(serve())
