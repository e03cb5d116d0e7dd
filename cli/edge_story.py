"""The demo's edge chapter: an edge agent with a generated camera at 10 frames a second sends through a
link to the local stack's API; the link drops, frames pile up at the edge while the agent still
decides locally; the link returns, the backlog drains at the rate cap, and every frame arrives, once.

The agent runs on the demo's event loop and the link is a loopback relay (edge.link) that the story
cuts and restores: the API itself stays up for the rest of the stack.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import structlog
from rich.console import Console

from edge.agent import EdgeAgent, running
from edge.link import LinkProxy
from edge.settings import EdgeSettings
from edge.status import offline_status
from infra.settings import Settings
from vision.camera import generate_frames
from vision.signatures import trusted_keys_from_settings

CAMERA = "edge-line"
FPS, CAP = 10.0, 30.0


class EdgeChapterFailed(Exception):
    pass


async def _wait(what: str, check: Any, timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise EdgeChapterFailed(f"{what} did not happen within {timeout:.0f} s")
        await asyncio.sleep(interval)


async def _accepted_names(http: httpx.AsyncClient, site: str) -> Counter[str]:
    """How often the API holds each frame name of the site's batches."""
    names: Counter[str] = Counter()
    cursor = None
    while True:
        page = (await http.get("/v1/batches", params={"site_id": site, "limit": 200,
                                                      **({"cursor": cursor} if cursor else {})})).json()
        for batch in page["items"]:
            detail = (await http.get(f"/v1/batches/{batch['batch_id']}")).json()
            names.update(f["filename"] for f in detail["frames"])
        cursor = page.get("next_cursor")
        if not cursor:
            return names


async def tell(settings: Settings, console: Console, ingest_key: str, offline_s: float = 15.0) -> dict[str, Any]:
    """The chapter; what it measured."""
    # The agent's own log lines (it runs in this process) would break up the story: warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    api = httpx.URL(settings.resolved_api_url)
    site = f"edge-{uuid.uuid4().hex[:6]}"
    link = await LinkProxy("127.0.0.1", api.port or 80).start()
    with tempfile.TemporaryDirectory(prefix="sightline-edge-") as tmp:
        edge = EdgeSettings(_env_file=None, api_url=link.url, api_key=ingest_key, site_id=site, camera_id=CAMERA,
                            camera_fps=FPS, data_dir=Path(tmp), listen_port=0, batch_max_frames=16,
                            backfill_batch_max_frames=32, batch_max_wait_s=1.0, rate_frames_per_s=CAP,
                            backoff_max_s=2.0, model_poll_interval_s=2.0,
                            trusted_keys=list(trusted_keys_from_settings(settings)), shutdown_drain_s=30.0)
        agent = EdgeAgent(edge)
        async with httpx.AsyncClient(base_url=settings.resolved_api_url, timeout=60,
                                     headers={"Authorization": f"Bearer {ingest_key}"}) as http:
            async with running(agent), httpx.AsyncClient(base_url=agent.local_url, timeout=30) as local:
                async def model_loaded() -> bool:
                    return agent.models.current is not None

                await _wait("the agent loading the production model", model_loaded, 60)
                console.print(f"6. the edge: an agent beside camera [bold]{CAMERA}[/] (site {site}, {FPS:g} frames/s) "
                              f"decides locally with [bold]{agent.models.current.version}[/] "  # type: ignore[union-attr]
                              "and uploads through its link")

                async def flowing() -> bool:
                    return agent.uploader.upload_rate() > 0 and agent.status().queue_frames < 20

                await _wait("frames reaching the API", flowing, 60)
                link.cut()
                cut_at = time.monotonic()
                console.print(f"   the link drops for {offline_s:.0f} s")
                with console.status("frames pile up at the edge") as shown:
                    while time.monotonic() - cut_at < offline_s:
                        status = agent.status()
                        shown.update(f"frames pile up at the edge: {status.queue_frames} queued, the oldest "
                                     f"{status.oldest_frame_age_s or 0:.0f} s old")
                        await asyncio.sleep(0.5)
                frame = generate_frames(CAMERA, 1, seed=99)[0].jpeg()
                started = time.perf_counter()
                decided = (await local.post("/frames", content=frame, headers={"content-type": "image/jpeg"},
                                            params={"filename": "offline-probe.jpg"})).json()
                took_ms = (time.perf_counter() - started) * 1000
                piled = agent.status().queue_frames
                prediction = decided["prediction"] or {}
                console.print(f"   {piled} frames queued at the edge; a frame sent to the agent meanwhile is decided "
                              f"locally in {took_ms:.0f} ms: {prediction.get('label', '-')} "
                              f"({'unfamiliar' if prediction.get('unfamiliar') else 'familiar'})")
                link.restore()
                back_at = time.monotonic()

                async def drained() -> bool:
                    status = agent.status()
                    return status.queue_frames <= 16 and (status.oldest_frame_age_s or 0) < 3

                with console.status(f"the link is back: the backlog drains at up to {CAP:g} frames/s"):
                    await _wait("the backlog draining", drained, 120)
                drain_s = time.monotonic() - back_at
            captured = sum(offline_status(edge).cameras.values()) + 1  # the camera's frames and the probe
            left = offline_status(edge).queue_frames
            names = await _accepted_names(http, site)
    await link.close()
    doubled = [n for n, c in names.items() if c > 1]
    if left or doubled or sum(names.values()) != captured:
        raise EdgeChapterFailed(f"{captured} frames captured, {sum(names.values())} accepted ({len(doubled)} twice), "
                                f"{left} still queued")
    console.print(f"   the link is back: {piled} queued frames drained in {drain_s:.0f} s (at most {CAP:g} frames/s); "
                  f"all {captured} frames the edge captured arrived, each once")
    return {"captured": captured, "piled": piled, "drain_s": drain_s, "decision_ms": took_ms}


def run(settings: Settings, console: Console, ingest_key: str) -> int:
    """The chapter on its own (`sightline demo --edge-only`); the exit status."""
    try:
        asyncio.run(tell(settings, console, ingest_key))
    except EdgeChapterFailed as exc:
        console.print(f"[red]the edge chapter stopped:[/] {exc}")
        return 1
    return 0
