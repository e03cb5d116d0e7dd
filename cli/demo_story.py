"""`sightline demo`'s story: the whole loop on the local stack in a few minutes. Production model v1
watches two generated camera lines; a scripted reviewer answers the review queue; the lighting shifts
and the defects change look; drift is detected; retraining runs on the reviewers' labels; the candidate
goes through shadow and canary stages and is promoted; the line's accuracy recovers; then an edge agent's
link drops and returns and every frame it captured meanwhile arrives (cli.edge_story); last, a detector
serves one camera while production stays the classifier, and the reviewer page is photographed with the
model's boxes drawn (cli.detection_story). It ends with a table of what happened and the Temporal UI
link of each kind of workflow it ran.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli import detection_story, edge_story
from cli.loop_story import Line, make_keys, rollout_plan
from infra.settings import Settings
from infra.stack_urls import database_url
from vision.camera import NORMAL, Conditions, GeneratedFrame, generate_frames
from vision.registry import ModelRegistry

CAMERAS = ("line-1", "line-2")
SHIFT = Conditions(brightness=0.65, defect_style="changed")


class StoryFailed(Exception):
    """A step of the story did not happen (the message says which)."""


@dataclass
class Phase:
    """Frames the line sent in one part of the story, and how many its models got right."""

    name: str
    right: int = 0
    total: int = 0
    models: set[str] = field(default_factory=set)

    def add(self, line: Line, batch: dict[str, Any]) -> None:
        right, total = line.accuracy(batch)
        self.right, self.total = self.right + right, self.total + total
        self.models |= {f["prediction"]["model_version"] for f in batch["frames"] if f.get("prediction")}

    @property
    def accuracy(self) -> str:
        return f"{self.right / self.total:.1%}" if self.total else "-"


@dataclass
class Story:
    line: Line
    console: Console
    batch_frames: int
    phases: list[Phase] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)
    seq: int = 0

    def frames(self, conditions: Conditions) -> tuple[str, list[GeneratedFrame]]:
        """The next batch of the cameras, in turn."""
        self.seq += 1
        camera = CAMERAS[self.seq % len(CAMERAS)]
        return camera, generate_frames(camera, self.batch_frames, seed=7, conditions=conditions,
                                       start=self.seq * self.batch_frames)

    async def batch(self, phase: Phase, conditions: Conditions) -> dict[str, Any]:
        camera, frames = self.frames(conditions)
        batch = await self.line.send_batch(camera, frames, f"story-{self.seq}")
        phase.add(self.line, batch)
        self.links.setdefault("frame batch", batch["temporal_ui_url"])
        return batch

    def say(self, text: str) -> None:
        self.console.print(text)


async def _normal(story: Story, batches: int) -> None:
    phase = Phase("before the shift")
    story.phases.append(phase)
    with story.console.status("cameras sending normal frames") as status:
        for i in range(batches):
            await story.batch(phase, NORMAL)
            status.update(f"cameras sending normal frames: batch {i + 1}/{batches}, line accuracy {phase.accuracy}, "
                          f"{story.line.labels_given} review labels given")
    report = await story.line.drift_check()
    story.say(f"1. normal conditions: {phase.total} frames on {', '.join(CAMERAS)}, accuracy {phase.accuracy}; "
              f"drift check: [bold]{report['status']}[/]; {story.line.labels_given} frames reviewed")


async def _shift(story: Story, max_frames: int) -> str:
    """Shifted frames until the drift policy starts retraining; the retraining workflow's id."""
    phase = Phase("after the shift, before the new model")
    story.phases.append(phase)
    story.line.shifted = True
    story.say("2. the lighting dims to 65% and defects change look on both lines")
    detected: int | None = None
    with story.console.status("shifted frames flowing; checking for drift after every batch") as status:
        while phase.total < max_frames:
            await story.batch(phase, SHIFT)
            report = await story.line.drift_check()
            if report["status"] == "drift" and detected is None:
                detected = phase.total
                story.links["drift check"] = report["temporal_ui_url"]
                story.say(f"   drift detected {detected} frames after the shift ({report['drifted_columns']} of "
                          f"{report['total_columns']} columns drifted); line accuracy now {phase.accuracy}")
            decision = report.get("decision")
            if decision == "cooldown":
                # An earlier run retrained within the cooldown (a demo told twice): the policy holds off,
                # and the ML engineer, seeing the report, retrains by hand.
                story.say(f"   the drift policy holds off ({report.get('decision_reason')}): the ML engineer "
                          "retrains by hand")
                return await _retrain_by_hand(story, report["report_id"])
            status.update(f"shifted frames: {phase.total}, line accuracy {phase.accuracy}; drift policy: "
                          f"{decision or report['status']}; {story.line.labels_given} review labels")
            if decision in ("retrain", "already_retraining"):
                story.say(f"   the drift policy retrains: {report.get('decision_reason')}")
                workflow_id: str = report["retraining_workflow_id"]
                return workflow_id
    raise StoryFailed(f"no retraining started within {max_frames} frames after the shift")


async def _retrain_by_hand(story: Story, report_id: str) -> str:
    started = await story.line.http.post("/v1/retraining", headers=story.line.auth("ml-engineer"),
                                         json={"note": f"sightline demo: drift report {report_id}"})
    started.raise_for_status()
    workflow_id: str = started.json()["workflow_id"]
    return workflow_id


def _start_from_first_version(settings: Settings, console: Console) -> str:
    """The story starts from the first model, as on a fresh stack: a demo told before promoted another."""
    registry = ModelRegistry(database_url(settings))
    first = registry.list_versions()[0].version
    if registry.aliases().get("production") != first:
        registry.set_alias("production", first, "sightline demo", "the demo's story starts from the first model")
        console.print(f"production moved back to [bold]{first}[/], where the story starts")
    return first


async def _retrain(story: Story, workflow_id: str) -> str:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=story.console) as bars:
        task = bars.add_task("3. retraining", total=None)

        def show(run: dict[str, Any]) -> None:
            progress = run.get("progress") or {}
            training = progress.get("training") or {}
            bars.update(task, total=training.get("epochs") or None, completed=training.get("epoch", 0),
                        description=f"3. retraining: {progress.get('phase', run['status'])}, epoch "
                                    f"{training.get('epoch', 0)}/{training.get('epochs', '?')}, "
                                    f"loss {training.get('loss')}")

        run = await story.line.follow_retraining(workflow_id, show)
    story.links["retraining"] = run["temporal_ui_url"]
    candidate = run.get("candidate_version")
    if run["status"] != "completed" or run.get("outcome") != "candidate" or not candidate:
        why = run.get("outcome_reason") or run.get("error")
        raise StoryFailed(f"retraining {run['status']}, {run.get('outcome')}: {why}")
    story.say(f"   candidate [bold]{candidate}[/]: {run.get('outcome_reason')}")
    return str(candidate)


async def _roll_out(story: Story, candidate: str, stage_frames: int) -> None:
    phase = Phase("during the rollout (shadow, canary)")
    story.phases.append(phase)
    shown: list[str] = []

    def on_state(state: dict[str, Any]) -> None:
        line = f"   rollout {state['status']}: {state.get('stage')}, live split {state.get('split')}"
        if not shown or shown[-1] != line:
            shown.append(line)
            story.say(line)

    with story.console.status("4. rolling out: batches keep flowing, gates judged on what serving records"):
        state = await story.line.roll_out(candidate, rollout_plan(stage_frames),
                                          lambda: story.batch(phase, SHIFT), on_state)
    story.links["rollout"] = state["temporal_ui_url"]
    for gate in state.get("gates") or []:
        checks = ", ".join(f"{c['name']} {c['value']:.3f}" for c in gate.get("checks", []))
        story.say(f"   gate {gate['stage']}: {'passed' if gate['passed'] else 'failed'} ({checks})")
    if state["status"] != "promoted":
        raise StoryFailed(f"the rollout ended {state['status']}: {state.get('reason')}")
    story.say(f"   [bold]{candidate}[/] promoted: production follows it")


async def _after(story: Story, candidate: str, batches: int) -> None:
    phase = Phase("after promotion")
    story.phases.append(phase)
    deadline = time.monotonic() + 120
    with story.console.status("5. the line on the new model"):
        # Serving re-reads the alias within seconds: batches until the line is on the candidate alone.
        while phase.total < batches * story.batch_frames:
            probe = Phase("")
            await story.batch(probe, SHIFT)
            if probe.models == {candidate}:
                phase.right, phase.total, phase.models = (phase.right + probe.right, phase.total + probe.total,
                                                          phase.models | probe.models)
            elif time.monotonic() > deadline:
                raise StoryFailed(f"serving still answers with {probe.models}, not {candidate}")


async def tell(settings: Settings, console: Console, batch_frames: int = 32, normal_batches: int = 6,
               max_shift_frames: int = 2000, stage_frames: int = 64, after_batches: int = 4,
               label_budget: int = 300) -> int:
    started = time.monotonic()
    keys = await make_keys(settings, uuid.uuid4().hex[:6])
    async with httpx.AsyncClient(base_url=settings.resolved_api_url, timeout=120) as http:
        line = Line.new_site(http, keys, label_budget)
        story = Story(line, console, batch_frames)
        production = await asyncio.to_thread(_start_from_first_version, settings, console)
        console.print(f"site [bold]{line.site}[/], cameras {', '.join(CAMERAS)}; production model "
                      f"[bold]{production}[/]; a scripted reviewer answers the review queue from the generator's "
                      "ground truth")
        reviewer = asyncio.create_task(line.review())
        try:
            await _normal(story, normal_batches)
            retraining_id = await _shift(story, max_shift_frames)
            candidate = await _retrain(story, retraining_id)
            await _roll_out(story, candidate, stage_frames)
            await _after(story, candidate, after_batches)
            await edge_story.tell(settings, console, keys["ingest"])
            detection = await detection_story.tell(settings, console)
        except (StoryFailed, edge_story.EdgeChapterFailed, detection_story.DetectionChapterFailed) as exc:
            console.print(f"[red]the story stopped:[/] {exc}")
            return 1
        finally:
            line.reviewing = False
            reviewer.cancel()
        reviews = (await http.get("/v1/reviews", params={"site_id": line.site, "status": "decided"},
                                  headers=line.auth("reviewer"))).json()["tasks"]
        if reviews:
            story.links["review task"] = reviews[0]["temporal_ui_url"]
    story.links.update(detection.links)
    _summary(story, line, time.monotonic() - started, detection)
    return 0


def _summary(story: Story, line: Line, seconds: float,
             detection: detection_story.DetectionOutcome | None = None) -> None:
    table = Table("part of the story", "frames", "accuracy", "models answering", title="what happened")
    for phase in story.phases:
        table.add_row(phase.name, str(phase.total), phase.accuracy, ", ".join(sorted(phase.models)))
    story.console.print(table)
    story.console.print(f"labels from the reviewer: {line.labels_given} ({line.labels_after_shift} after the shift); "
                        f"{seconds:.0f} s in all")
    # The story's own line is the classifier's: its reviewer gives box sets only if a detection version
    # were rolled out as production. The detection chapter's camera names its detector instead.
    if line.box_sets_given:
        story.console.print(f"box sets reviewed: {line.box_sets_given} (boxes drawn on the reviewer page at /review)")
    if detection is not None:
        story.console.print(detection_story.outcome_table(detection))
        if detection.screenshot is not None:
            story.console.print(f"screenshot of the reviewer page with the detector's boxes: {detection.screenshot}")
    for name, url in story.links.items():
        story.console.print(f"Temporal UI, {name}: {url}")


def run(settings: Settings, console: Console, **options: Any) -> int:
    return asyncio.run(tell(settings, console, **options))

