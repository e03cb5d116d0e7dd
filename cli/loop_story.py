"""The closed loop driven through the API, as its users would drive it: cameras send batches, a scripted
reviewer answers what the review queue offers from the generator's ground truth, ML engineers check
for drift, follow retraining and roll the candidate out. `sightline demo` tells the story with these;
bench/closed_loop.py measures it.

Everything goes through the public API with keys of the roles that would act; the ground truth of a
frame is known from its batch id and position (workflows.batch_types.make_frame_id).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from infra.settings import Settings
from infra.stack_urls import database_url
from infra.tables.api_keys import create_key
from vision.camera import GeneratedFrame
from workflows.batch_types import make_frame_id

FINISHED_BATCH = ("completed", "failed")
FINISHED_ROLLOUT = ("promoted", "rolled_back", "aborted", "failed", "skipped")
ROLES = ("ingest", "reviewer", "ml-engineer")


async def make_keys(settings: Settings, tag: str) -> dict[str, str]:
    """One key per role the story acts as, made straight in the local stack's database."""
    async with await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True,
                                                     row_factory=dict_row) as conn:
        return {role: (await create_key(conn, f"closed loop {tag} {role}", role)).raw_key for role in ROLES}


@dataclass
class Line:
    """A site's line as the story drives it: its keys, the ground truth of every frame it sent, and the
    labels its scripted reviewer gave."""

    http: httpx.AsyncClient
    site: str
    keys: dict[str, str]
    label_budget: int = 300
    truth: dict[str, str] = field(default_factory=dict)  # frame id -> true label
    # frame id -> the boxes the generator drew (vision.boxes.Box.as_dict()): a detection task's answer
    truth_boxes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    labels_given: int = 0
    box_sets_given: int = 0  # detection tasks decided with a box set (issue 26)
    labels_after_shift: int = 0
    shifted: bool = False
    reviewing: bool = True

    @classmethod
    def new_site(cls, http: httpx.AsyncClient, keys: dict[str, str], label_budget: int = 300) -> Line:
        return cls(http, f"loop-{uuid.uuid4().hex[:6]}", keys, label_budget)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    async def send_batch(self, camera: str, frames: list[GeneratedFrame], key: str,
                         model: str | None = None) -> dict[str, Any]:
        """Submit the frames as one batch and wait for it; the batch as GET /v1/batches/{id} shows it.
        `model`: the alias or version that answers it (None: production)."""
        files = [("frames", (f"{key}-{i}.jpg", f.jpeg(), "image/jpeg")) for i, f in enumerate(frames)]
        form = {"camera_id": camera, "site_id": self.site, "idempotency_key": key}
        if model:
            form["model"] = model
        response = await self.http.post("/v1/batches", files=files, headers=self.auth("ingest"), data=form)
        response.raise_for_status()
        batch_id: str = response.json()["batch_id"]
        for position, frame in enumerate(frames):
            self.truth[make_frame_id(batch_id, position)] = frame.label
            self.truth_boxes[make_frame_id(batch_id, position)] = [b.as_dict() for b in frame.boxes]
        while True:
            batch: dict[str, Any] = (await self.http.get(f"/v1/batches/{batch_id}", headers=self.auth("ingest"))).json()
            if batch.get("status") in FINISHED_BATCH:
                return batch
            await asyncio.sleep(0.3)

    def accuracy(self, batch: dict[str, Any]) -> tuple[int, int]:
        """(right, classified) over the batch's frames, against the generator's ground truth."""
        right = total = 0
        for frame in batch["frames"]:
            prediction = frame.get("prediction")
            if prediction and frame["frame_id"] in self.truth:
                total += 1
                right += prediction["label"] == self.truth[frame["frame_id"]]
        return right, total

    async def review(self) -> None:
        """Answer what the queue offers, from the ground truth, until the budget is spent."""
        while self.reviewing:
            if self.labels_given >= self.label_budget:
                await asyncio.sleep(0.5)
                continue
            response = await self.http.post("/v1/reviews/next", headers=self.auth("reviewer"),
                                            params={"site_id": self.site})
            if response.status_code == 204:
                await asyncio.sleep(0.3)
                continue
            response.raise_for_status()
            task = response.json()
            frame_id = (task.get("task") or {}).get("frame_id", "")
            label = self.truth.get(frame_id)
            detection = (task.get("task") or {}).get("boxes") is not None  # the model's boxes: a box set is asked
            answer: dict[str, Any] = {"label": label or "unusable"}
            if detection and label:
                answer = {"boxes": self.truth_boxes.get(frame_id, [])}
            decided = await self.http.post(f"/v1/reviews/{task['review_id']}/decision", headers=self.auth("reviewer"),
                                           json=answer)
            if decided.status_code == 200 and label:
                self.labels_given += 1
                self.labels_after_shift += self.shifted
                self.box_sets_given += detection

    async def drift_check(self) -> dict[str, Any]:
        """A drift check of the site now (as the Schedule would), and its report once decided."""
        started = await self.http.post("/v1/drift-checks", json={"site_id": self.site},
                                       headers=self.auth("ml-engineer"))
        started.raise_for_status()
        report_url = started.json()["report_url"]
        while True:
            report = await self.http.get(report_url, headers=self.auth("ml-engineer"))
            if report.status_code == 200 and (report.json()["status"] != "drift" or report.json().get("decision")):
                result: dict[str, Any] = report.json()
                return result
            await asyncio.sleep(0.5)

    async def follow_retraining(self, workflow_id: str,
                                on_progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """The run's record once it ends; `on_progress` gets each new view of its progress query."""
        while True:
            run: dict[str, Any] = (await self.http.get(f"/v1/retraining/{workflow_id}",
                                                       headers=self.auth("ml-engineer"))).json()
            on_progress(run)
            if run["status"] != "running":
                return run
            await asyncio.sleep(2)

    async def roll_out(self, candidate: str, plan: dict[str, Any], next_batch: Callable[[], Any],
                       on_state: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Start the candidate's rollout and keep the line's batches flowing (`next_batch()`) until it
        ends: its gates are judged on what serving records for them."""
        started = await self.http.post("/v1/rollouts", headers=self.auth("ml-engineer"),
                                       json={"candidate_version": candidate, **plan})
        started.raise_for_status()
        url = started.json()["url"]
        while True:
            await next_batch()
            state: dict[str, Any] = (await self.http.get(url, headers=self.auth("ml-engineer"))).json()
            on_state(state)
            if state["status"] in FINISHED_ROLLOUT:
                return state


def rollout_plan(stage_frames: int) -> dict[str, Any]:
    """A short rollout for a story told in minutes: half the frames in shadow, then 25% and 50% canary
    stages of `stage_frames` candidate frames each."""
    return {
        "reason": "closed loop: retrained after drift", "shadow_share": 0.5, "canary_steps": [0.25, 0.5],
        "min_frames": stage_frames, "min_duration_s": 0, "poll_interval_s": 2,
        # A model retrained for a shifted line disagrees with the drifted production by design. The
        # default gate lets the reviewers overrule that once they have labelled enough of the candidate's
        # frames; a story told in minutes judges its stages before they catch up, so agreement is off
        # here and the correction, unfamiliar and low-confidence rates decide.
        "thresholds": {"min_agreement": 0.0},
    }
