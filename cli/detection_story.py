"""The demo's detection chapter: a detector serves one camera while production stays the classifier.

The chapter trains a detector on generated frames with the quick `demo` profile (about a minute on 2
cores; a detection version an earlier demo trained with the same profile is reused), registers it, and
sends a batch of generated frames from a detection camera naming that version (POST /v1/batches
`model`). Serving answers boxes per frame; a defect box at the alert threshold raises an alert, an
uncertain one opens a review task carrying the model's boxes. The reviewer page of one such task, its
boxes drawn, is photographed in Debian's Chromium through Playwright (as tests/test_review_page_boxes.py
drives it) under the data dir; then a scripted reviewer answers the chapter's tasks with the boxes the
generator drew. `sightline demo --detection-only` tells it alone.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.loop_story import Line, make_keys
from infra.settings import Settings
from infra.stack_urls import database_url
from vision.boxes import Box, boxes_from, match
from vision.camera import generate_frames
from vision.registry import ModelRegistry, ModelVersion

CAMERA = "inspect-boxes"
PROFILE = "demo"  # vision.detector_training.DETECTOR_PROFILES
CREATED_BY = "sightline demo"  # the registry's created_by of the versions this chapter trains
FRAMES, SEED = 24, 11
# Boxes counted as found: the detector's own call of a defect (a frame's label comes from its best box
# at this score, vision.detector.frame_label). Boxes shown per frame: from the score routing acts on
# (RoutingRules.box_review_at_or_above); below it serving's boxes are background.
FOUND_AT, SHOWN_AT = 0.5, 0.3
CHROMIUM = "/usr/bin/chromium"  # Debian's (`make browser`); a downloaded browser is never used
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path("demo") / "review-boxes.png"  # under the data dir


class DetectionChapterFailed(Exception):
    """A step of the chapter did not happen (the message says which)."""


@dataclass
class DetectionOutcome:
    """What the chapter did, for the demo's closing table."""

    version: str
    trained_s: float | None  # None: a version an earlier demo trained was reused
    map_50: float | None
    frames: int = 0
    boxes: int = 0  # scoring FOUND_AT or more
    by_class: Counter[str] = field(default_factory=Counter)
    true_boxes: int = 0
    matched: int = 0  # found boxes matching a drawn one (same class, IoU >= 0.5)
    alerts: int = 0
    reviews: int = 0
    box_sets_reviewed: int = 0
    screenshot: Path | None = None
    links: dict[str, str] = field(default_factory=dict)


def _demo_config() -> Any:
    from vision.detector_training import DETECTOR_PROFILES

    return DETECTOR_PROFILES[PROFILE]


def _cached(registry: ModelRegistry, snapshot_id: str) -> ModelVersion | None:
    """The newest detection version an earlier demo trained with this profile (its generated data set)."""
    found = [v for v in registry.list_versions()
             if v.task == "detection" and v.created_by == CREATED_BY and v.dataset_snapshot_id == snapshot_id]
    return found[-1] if found else None


def demo_detector(settings: Settings, console: Console) -> tuple[ModelVersion, float | None]:
    """The chapter's detection version: reused when an earlier demo registered one, else trained with
    the demo profile and registered (signed with the stack's key); (version, seconds it trained)."""
    from infra.store import store_from_settings
    from vision.detector_training import describe, train_detector
    from vision.publishing import model_card, register_trained

    registry = ModelRegistry(database_url(settings))
    config = _demo_config()
    cached = _cached(registry, config.snapshot_id())
    if cached is not None:
        return cached, None
    started = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as bars:
        task = bars.add_task(f"   training a detector ({PROFILE} profile, {config.train_frames} frames, "
                             f"{config.input_size} px)", total=config.epochs)

        def progress(report: dict[str, Any]) -> None:
            bars.update(task, completed=report["epoch"], description=f"   training a detector: epoch "
                        f"{report['epoch']}/{report['epochs']}, loss {report['loss']}")

        result = train_detector(config, progress)
    base = config.base_set()
    card = model_card(result, reason={"kind": "manual", "requested_by": CREATED_BY,
                                      "note": f"the demo's detection chapter ({PROFILE} profile)"},
                      data={"snapshot_id": result.dataset_snapshot_id, "base": base.to_dict()})
    version = register_trained(registry, store_from_settings(settings), result, None, CREATED_BY, card=card)
    console.print(f"   trained and registered [bold]{version.version}[/] in {time.monotonic() - started:.0f} s: "
                  f"{describe(result)}")
    return version, time.monotonic() - started


def _shown(boxes: list[dict[str, Any]] | None) -> str:
    kept = [b for b in boxes or [] if (b.get("score") or 0) >= SHOWN_AT]
    return ", ".join(f"{b['label']} {b['score']:.2f}" for b in kept) or "-"


def _frame_table(batch: dict[str, Any], line: Line) -> Table:
    table = Table("frame", "drawn", f"model's boxes (score >= {SHOWN_AT})", "routed", title="the detection batch")
    for frame in batch["frames"]:
        prediction = frame.get("prediction") or {}
        drawn = line.truth_boxes.get(frame["frame_id"], [])
        truth = line.truth.get(frame["frame_id"], "-")
        table.add_row(frame["filename"], f"{truth} ({len(drawn)} box{'es' if len(drawn) != 1 else ''})",
                      _shown(prediction.get("boxes")), ", ".join(frame.get("routes") or []) or "-")
    return table


def _count(outcome: DetectionOutcome, batch: dict[str, Any], line: Line) -> None:
    for frame in batch["frames"]:
        prediction = frame.get("prediction") or {}
        found = [b for b in boxes_from(prediction.get("boxes") or []) if (b.score or 0) >= FOUND_AT]
        drawn = [Box.from_dict(b) for b in line.truth_boxes.get(frame["frame_id"], [])]
        outcome.frames += 1
        outcome.boxes += len(found)
        outcome.by_class.update(b.label for b in found)
        outcome.true_boxes += len(drawn)
        outcome.matched += len(match(found, drawn))
    outcome.alerts = sum(1 for f in batch["frames"] if any(r.startswith("alert:") for r in f.get("routes") or []))
    outcome.reviews = int(batch["sent_to_review"])


async def _open_tasks(line: Line, batch_id: str, expected: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The batch's review tasks once all of them are in the queue (their workflows write the rows)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = await line.http.get("/v1/reviews", headers=line.auth("reviewer"),
                                     params={"batch_id": batch_id, "status": "open", "limit": 500})
        listed.raise_for_status()
        tasks: list[dict[str, Any]] = listed.json()["tasks"]
        if len(tasks) >= expected:
            return tasks
        if time.monotonic() > deadline:
            raise DetectionChapterFailed(f"{len(tasks)} of the batch's {expected} review tasks reached the queue "
                                         f"within {timeout:.0f} s")
        await asyncio.sleep(0.3)


async def screenshot(base_url: str, reviewer_key: str, batch_id: str, path: Path) -> tuple[str | None, str]:
    """The reviewer page of one of the batch's tasks, its model boxes drawn, saved at `path`: (the task the
    page holds, what happened in one line). Without Chromium or Playwright: (None, why not)."""
    if not os.access(CHROMIUM, os.X_OK):
        return None, f"no screenshot: Debian's chromium is not installed at {CHROMIUM} (`make browser` installs it)"
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return None, "no screenshot: Playwright is not installed in this environment"
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = await browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 860})
                page = await context.new_page()
                await page.goto("/review")
                await page.fill("#api_key", reviewer_key)
                await page.click("#sign-in")
                await page.wait_for_url("**/review")
                await page.goto(f"/review?batch_id={quote(batch_id)}")  # the page's queue: this batch only
                for _ in range(5):
                    if await page.locator("#task").count():
                        break
                    async with page.expect_navigation():
                        await page.keyboard.press("n")
                if not await page.locator("#task").count():
                    return None, "no screenshot: the reviewer page offered none of the batch's tasks"
                review_id = await page.locator("#task").get_attribute("data-review-id")
                await page.wait_for_function("document.getElementById('frame').naturalWidth > 0")
                await page.wait_for_selector("#overlay .box.model", state="attached", timeout=10_000)
                path.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(path), full_page=True)
                drawn = await page.locator("#overlay .box.model").count()
            finally:
                await browser.close()
    except Exception as exc:  # the page is a view of the chapter, never a reason to stop it
        return None, f"no screenshot: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return review_id, f"the reviewer page with the model's {drawn} box{'es' if drawn != 1 else ''} drawn: {path}"


async def _review(line: Line, batch_id: str, held: str | None) -> int:
    """A scripted reviewer answers the batch's tasks with the boxes the generator drew; how many."""
    answered = 0

    async def decide(review_id: str, frame_id: str) -> None:
        nonlocal answered
        decided = await line.http.post(f"/v1/reviews/{review_id}/decision", headers=line.auth("reviewer"),
                                       json={"boxes": line.truth_boxes.get(frame_id, [])})
        answered += decided.status_code == 200

    if held is not None:  # the one the reviewer page claimed: the same key holds it
        task = (await line.http.get(f"/v1/reviews/{held}", headers=line.auth("reviewer"))).json()
        await decide(held, (task.get("task") or task).get("frame_id", ""))
    while True:
        offered = await line.http.post("/v1/reviews/next", headers=line.auth("reviewer"),
                                       params={"batch_id": batch_id})
        if offered.status_code != 200:
            return answered
        task = offered.json()
        await decide(task["review_id"], (task.get("task") or {}).get("frame_id", ""))


async def tell(settings: Settings, console: Console, heading: str = "7. ") -> DetectionOutcome:
    """The chapter; what it did. DetectionChapterFailed when a step did not happen."""
    registry = ModelRegistry(database_url(settings))
    production = registry.aliases().get("production", "-")
    console.print(f"{heading}detection: a detector serves camera [bold]{CAMERA}[/] alone; production stays "
                  f"[bold]{production}[/]")
    version, trained_s = await asyncio.to_thread(demo_detector, settings, console)
    held_out = version.metrics.get("held_out_map_50")
    if trained_s is None:
        console.print(f"   reusing [bold]{version.version}[/], the detector an earlier demo trained "
                      f"(held-out mAP@0.5 {held_out:.3f})" if held_out is not None else
                      f"   reusing [bold]{version.version}[/], the detector an earlier demo trained")
    outcome = DetectionOutcome(version.version, trained_s, held_out)
    keys = await make_keys(settings, uuid.uuid4().hex[:6])
    async with httpx.AsyncClient(base_url=settings.resolved_api_url, timeout=120) as http:
        line = Line(http, f"detect-{uuid.uuid4().hex[:6]}", keys)
        frames = generate_frames(CAMERA, FRAMES, seed=SEED)
        with console.status(f"   {FRAMES} frames from {CAMERA} as one batch naming {version.version}"):
            try:
                batch = await line.send_batch(CAMERA, frames, f"boxes-{uuid.uuid4().hex[:6]}", model=version.version)
            except httpx.HTTPStatusError as exc:
                raise DetectionChapterFailed(f"the batch was refused: {exc.response.status_code} "
                                             f"{exc.response.text[:300]}") from None
        outcome.links["detection batch"] = batch["temporal_ui_url"]
        if batch["status"] != "completed":
            raise DetectionChapterFailed(f"the detection batch {batch['status']}: {batch.get('failure_reason')}")
        if batch.get("model_version") != version.version:
            raise DetectionChapterFailed(f"{batch.get('model_version')} answered the batch, not {version.version}")
        _count(outcome, batch, line)
        console.print(_frame_table(batch, line))
        alerted = [f["filename"] for f in batch["frames"] if any(r.startswith("alert:") for r in f.get("routes") or [])]
        console.print(f"   {batch['batch_id']} (site {line.site}): {outcome.boxes} boxes found at score >= {FOUND_AT} "
                      f"({_by_class(outcome)}), {outcome.matched} of the {outcome.true_boxes} drawn boxes matched "
                      "(same class, IoU >= 0.5)")
        console.print(f"   alerts (a defect box >= the alert threshold): {len(alerted)} frames"
                      + (f" ({', '.join(alerted)})" if alerted else ""))
        console.print(f"   to review (an uncertain box, or an unfamiliar frame): {outcome.reviews} frames")
        held = None
        if outcome.reviews:
            tasks = await _open_tasks(line, batch["batch_id"], outcome.reviews)
            outcome.links["detection review task"] = tasks[0]["temporal_ui_url"]
            path = settings.resolved_data_dir / SCREENSHOT
            held, said = await screenshot(settings.resolved_api_url, keys["reviewer"], batch["batch_id"], path)
            outcome.screenshot = path if held is not None else None
            console.print(f"   {said}")
            outcome.box_sets_reviewed = await _review(line, batch["batch_id"], held)
            console.print(f"   a scripted reviewer answered {outcome.box_sets_reviewed} of the {outcome.reviews} "
                          "review tasks with the boxes the generator drew")
        else:
            console.print("   no frame went to review this time: no reviewer page to photograph")
    return outcome


def _by_class(outcome: DetectionOutcome) -> str:
    return ", ".join(f"{label} {n}" for label, n in sorted(outcome.by_class.items())) or "none"


def outcome_table(outcome: DetectionOutcome) -> Table:
    """The chapter's row of the demo's closing table."""
    table = Table("detection chapter", "frames", f"boxes found (>= {FOUND_AT})", "boxes by class",
                  "drawn boxes matched", "alerts", "reviews", title="what the detector did")
    trained = (f"trained in {outcome.trained_s:.0f} s" if outcome.trained_s is not None else "reused")
    table.add_row(f"{outcome.version} on {CAMERA} ({trained})", str(outcome.frames), str(outcome.boxes),
                  _by_class(outcome), f"{outcome.matched}/{outcome.true_boxes}", str(outcome.alerts),
                  f"{outcome.reviews} ({outcome.box_sets_reviewed} answered with box sets)")
    return table


def run(settings: Settings, console: Console) -> int:
    """The chapter on its own (`sightline demo --detection-only`); the exit status."""
    try:
        outcome = asyncio.run(tell(settings, console, heading=""))
    except DetectionChapterFailed as exc:
        console.print(f"[red]the detection chapter stopped:[/] {exc}")
        return 1
    console.print(outcome_table(outcome))
    if outcome.screenshot is not None:
        console.print(f"screenshot of the reviewer page: {outcome.screenshot}")
    for name, url in outcome.links.items():
        console.print(f"Temporal UI, {name}: {url}")
    return 0
