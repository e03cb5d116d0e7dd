"""The closed loop on the local stack: production model v1 on a generated camera; the camera's conditions
shift (a dimmer line and defects that look different); batches keep flowing; a scripted reviewer answers
what the review queue offers from the generator's ground truth; drift checks run after every batch; the
drift policy starts retraining once enough labels exist; the candidate is measured on the new
conditions.

Needs the local stack (`.venv/bin/sightline up`), with the loop's workflows registered in its worker:
    .venv/bin/python bench/closed_loop.py
    .venv/bin/python bench/closed_loop.py --label-budget 300 --brightness 0.65

Accuracy is measured through serving (the preprocessor's decode and resize, the model's graph) on
held-out frames of the generated camera, by version name: v1 on normal conditions (pre-shift), v1 on the
shifted conditions, the candidate on the shifted conditions. Drift checks are started on demand after
each batch (POST /v1/drift-checks), as a schedule with a short interval would; the frames sent after the
shift when the first report said `drift` is the detection delay. The labels used are the reviewed frames
in the candidate's snapshot (its model card). Prints, last:

    closed loop: recovered X% of pre-shift accuracy with N labels, drift after M frames
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.settings import Settings, get_settings
from infra.stack_urls import database_url
from infra.store import put_frame, sha256_hex, store_from_settings
from infra.tables.api_keys import create_key
from serving.client import ServingClient
from vision.camera import NORMAL, Conditions, GeneratedFrame, generate_frames

FINISHED = ("completed", "failed")


@dataclass
class Loop:
    settings: Settings
    site: str
    camera: str
    keys: dict[str, str] = field(default_factory=dict)
    truth: dict[str, str] = field(default_factory=dict)  # frame sha256 -> true label
    labels_given: int = 0
    labels_after_shift: int = 0
    shifted: bool = False
    budget: int = 300
    reviewing: bool = True

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


async def make_keys(db_url: str, tag: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        return {role: (await create_key(conn, f"closed loop {tag} {role}", role)).raw_key
                for role in ("ingest", "reviewer", "ml-engineer")}


async def accuracy(serving: ServingClient, store: Any, frames: list[GeneratedFrame], model: str) -> float:
    """Accuracy of `model` (a version name) on these frames, classified through serving."""
    keys = [(f"eval-{i}", put_frame(store, f.jpeg(), "image/jpeg")) for i, f in enumerate(frames)]
    correct = 0
    for i in range(0, len(keys), 64):
        response = await serving.classify(keys[i : i + 64], model=model)
        by_id = {p.frame_id: p.label for p in response.predictions}
        correct += sum(by_id.get(fid) == f.label for (fid, _), f in zip(keys[i : i + 64], frames[i : i + 64],
                                                                         strict=True))
    return correct / len(frames)


async def send_batch(http: httpx.AsyncClient, loop: Loop, frames: list[GeneratedFrame], key: str) -> str:
    files = []
    for i, f in enumerate(frames):
        data = f.jpeg()
        loop.truth[sha256_hex(data)] = f.label
        files.append(("frames", (f"{key}-{i}.jpg", data, "image/jpeg")))
    response = await http.post("/v1/batches", files=files, headers=loop.auth("ingest"),
                               data={"camera_id": loop.camera, "site_id": loop.site, "idempotency_key": key})
    response.raise_for_status()
    batch_id: str = response.json()["batch_id"]
    while True:
        state = (await http.get(f"/v1/batches/{batch_id}", headers=loop.auth("ingest"))).json()
        if state.get("status") in FINISHED:
            return batch_id
        await asyncio.sleep(0.5)


async def reviewer(http: httpx.AsyncClient, db_url: str, loop: Loop) -> None:
    """Answers what the queue offers, from the generator's ground truth, until the budget is spent."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as db:
        while loop.reviewing:
            if loop.labels_given >= loop.budget:
                await asyncio.sleep(0.5)
                continue
            response = await http.post("/v1/reviews/next", headers=loop.auth("reviewer"), params={"site_id": loop.site})
            if response.status_code == 204:
                await asyncio.sleep(0.3)
                continue
            response.raise_for_status()
            task = response.json()
            review_id = task["review_id"]
            frame_id = (task.get("task") or {}).get("frame_id")
            cur = await db.execute("SELECT sha256 FROM frames WHERE frame_id = %s", (frame_id,))
            row = await cur.fetchone()
            label = loop.truth.get(row["sha256"]) if row else None
            decided = await http.post(f"/v1/reviews/{review_id}/decision", headers=loop.auth("reviewer"),
                                      json={"label": label or "unusable"})
            if decided.status_code == 200 and label:
                loop.labels_given += 1
                loop.labels_after_shift += loop.shifted


async def drift_check(http: httpx.AsyncClient, loop: Loop) -> dict[str, Any]:
    started = await http.post("/v1/drift-checks", json={"site_id": loop.site}, headers=loop.auth("ml-engineer"))
    started.raise_for_status()
    report_url = started.json()["report_url"]
    while True:
        report = await http.get(report_url, headers=loop.auth("ml-engineer"))
        if report.status_code == 200 and (report.json()["status"] != "drift" or report.json().get("decision")):
            return report.json()
        await asyncio.sleep(0.5)


async def wait_for_retraining(http: httpx.AsyncClient, loop: Loop, workflow_id: str) -> dict[str, Any]:
    last = ""
    while True:
        run = (await http.get(f"/v1/retraining/{workflow_id}", headers=loop.auth("ml-engineer"))).json()
        progress = run.get("progress") or {}
        training = progress.get("training") or {}
        line = (f"  retraining {run['status']}: {progress.get('phase', '-')}, epoch {training.get('epoch', 0)}/"
                f"{training.get('epochs', 0)}, loss {training.get('loss')}, eta {training.get('eta_s')}s")
        if line != last:
            print(line, flush=True)
            last = line
        if run["status"] != "running":
            return run
        await asyncio.sleep(5)


async def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    db_url = database_url(settings)
    tag = uuid.uuid4().hex[:6]
    loop = Loop(settings, site=f"loop-{tag}", camera=f"cam-{tag}", budget=args.label_budget)
    loop.keys = await make_keys(db_url, tag)
    shift = Conditions(brightness=args.brightness, defect_style="changed")
    store = store_from_settings(settings)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=settings.resolved_api_url, timeout=120) as http, \
            ServingClient(settings.serving_url) as serving:
        production = (await http.get("/v1/models/production", headers=loop.auth("ml-engineer"))).json()
        v1 = production["version"]
        normal_eval = generate_frames(f"eval-normal-{tag}", args.eval_frames, seed=501)
        shifted_eval = generate_frames(f"eval-shift-{tag}", args.eval_frames, seed=502, conditions=shift)
        pre = await accuracy(serving, store, normal_eval, v1)
        v1_shifted = await accuracy(serving, store, shifted_eval, v1)
        print(f"production {v1}: accuracy {pre:.4f} on normal conditions, {v1_shifted:.4f} after the shift "
              f"(brightness {args.brightness}, defects drawn the changed way); {args.eval_frames} frames each")

        review_task = asyncio.create_task(reviewer(http, db_url, loop))
        try:
            seq = 0
            for _ in range(args.normal_batches):
                frames = generate_frames(loop.camera, args.batch_frames, seed=7, conditions=NORMAL,
                                         start=seq * args.batch_frames)
                await send_batch(http, loop, frames, f"n{seq}")
                seq += 1
            report = await drift_check(http, loop)
            print(f"before the shift: {seq * args.batch_frames} frames, drift check says {report['status']} "
                  f"(share {report.get('drift_share')}), {loop.labels_given} labels given")

            loop.shifted = True
            after = 0
            detected: int | None = None
            retraining_id: str | None = None
            while after < args.max_shift_frames and retraining_id is None:
                frames = generate_frames(loop.camera, args.batch_frames, seed=7, conditions=shift,
                                         start=seq * args.batch_frames)
                await send_batch(http, loop, frames, f"s{seq}")
                seq += 1
                after += len(frames)
                report = await drift_check(http, loop)
                if report["status"] == "drift" and detected is None:
                    detected = after
                    print(f"drift detected {after} frames after the shift: {report['drifted_columns']} of "
                          f"{report['total_columns']} columns ({report['report_id']})")
                if report.get("decision"):
                    print(f"  after {after} frames: {report['decision']} ({report.get('decision_reason')}); "
                          f"{loop.labels_given} labels given")
                if report.get("decision") in ("retrain", "already_retraining"):
                    retraining_id = report.get("retraining_workflow_id")
        finally:
            loop.reviewing = False
            review_task.cancel()
        if retraining_id is None:
            print(f"no retraining started within {args.max_shift_frames} frames after the shift")
            print(f"closed loop: recovered 0% of pre-shift accuracy with {loop.labels_given} labels, "
                  f"drift after {detected if detected is not None else 'never'} frames")
            return 1
        run_state = await wait_for_retraining(http, loop, retraining_id)
        candidate = run_state.get("candidate_version")
        if run_state["status"] != "completed" or not candidate:
            print(f"retraining {run_state['status']}: {run_state.get('error')}")
            return 1
        card = (await http.get(f"/v1/models/{candidate}", headers=loop.auth("ml-engineer"))).json()["card"]
        labels_used = card["data"]["counts"]["by_source"].get("reviewed", 0)
        after_retrain = await accuracy(serving, store, shifted_eval, candidate)
        recovered = after_retrain / pre if pre else 0.0
        print(f"candidate {candidate} ({run_state['outcome']}: {run_state.get('outcome_reason')}): accuracy "
              f"{after_retrain:.4f} on the shifted conditions; trained on {labels_used} reviewed labels "
              f"({loop.labels_given} given in all, {loop.labels_after_shift} after the shift)")
        print(f"wall time {time.monotonic() - started:.0f}s")
        print(f"closed loop: recovered {recovered:.1%} of pre-shift accuracy with {labels_used} labels, "
              f"drift after {detected} frames")
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-frames", type=int, default=32)
    parser.add_argument("--normal-batches", type=int, default=8, help="batches before the shift")
    parser.add_argument("--max-shift-frames", type=int, default=2000, help="give up after this many")
    parser.add_argument("--label-budget", type=int, default=300, help="labels the reviewer gives at most")
    parser.add_argument("--brightness", type=float, default=0.65, help="the shifted line's lighting")
    parser.add_argument("--eval-frames", type=int, default=400, help="held-out frames per condition")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
