"""The closed loop on the local stack: production model v1 on a generated camera; the camera's conditions
shift (a dimmer line and defects that look different); batches keep flowing; a scripted reviewer answers
what the review queue offers from the generator's ground truth; drift checks run after every batch; the
drift policy starts retraining once enough labels exist; the candidate is measured on the new
conditions, rolled out (shadow, then 25% and 50% canary stages, gates judged on the batches that keep
flowing) and, once promoted, measured again through the production alias. It drives the API with the
same code as `sightline demo` (cli.loop_story).

With `--task detection` the same loop runs on a detector: production is the detector trained on a
fresh stack (`SIGHTLINE_BOOTSTRAP_TASK=detection .venv/bin/sightline up`), the scripted reviewer answers
detection tasks with the boxes the camera drew, retraining trains a detection candidate on them, the
shadow gate judges box agreement, and mAP@0.5 (pycocotools, on boxes answered through serving) is what
is measured and recovered:
    SIGHTLINE_DATA_DIR=/tmp/det-loop SIGHTLINE_BOOTSTRAP_TASK=detection .venv/bin/sightline up
    SIGHTLINE_DATA_DIR=/tmp/det-loop .venv/bin/python bench/closed_loop.py --task detection

Needs the local stack (`.venv/bin/sightline up`); on a stack that retrained within the cooldown
(`SIGHTLINE_RETRAINING_COOLDOWN_S`) the policy waits, so run it on a fresh data dir:
    .venv/bin/python bench/closed_loop.py
    .venv/bin/python bench/closed_loop.py --label-budget 300 --brightness 0.65

Accuracy is measured through serving (the preprocessor's decode and resize, the model's graph) on
held-out frames of the generated camera, by version name: v1 on normal conditions (pre-shift), v1 on the
shifted conditions, the candidate on the shifted conditions, production after promotion. Drift checks
are started on demand after each batch (POST /v1/drift-checks), as a schedule with a short interval
would; the frames sent after the shift when the first report said `drift` is the detection delay. The
labels used are the reviewed frames in the candidate's snapshot (its model card); "promoted in S s"
counts from the shift. Prints, last:

    closed loop: recovered X% of pre-shift accuracy with N labels, drift after M frames, promoted vN in S s
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.loop_story import Line, make_keys, rollout_plan
from infra.settings import get_settings
from infra.store import put_frame, store_from_settings
from serving.client import ServingClient
from vision.boxes import Box, boxes_from
from vision.camera import NORMAL, Conditions, GeneratedFrame, generate_frames
from vision.detection_metrics import mean_average_precision
from vision.detector_training import DEFECT_CLASSES


async def accuracy(serving: ServingClient, store: Any, frames: list[GeneratedFrame], model: str) -> float:
    """Accuracy of `model` (a version name or alias) on these frames, classified through serving."""
    keys = [(f"eval-{i}", put_frame(store, f.jpeg(), "image/jpeg")) for i, f in enumerate(frames)]
    correct = 0
    for i in range(0, len(keys), 64):
        response = await serving.classify(keys[i : i + 64], model=model)
        by_id = {p.frame_id: p.label for p in response.predictions}
        correct += sum(by_id.get(fid) == f.label for (fid, _), f in zip(keys[i : i + 64], frames[i : i + 64],
                                                                         strict=True))
    return correct / len(frames)


async def mean_ap(serving: ServingClient, store: Any, frames: list[GeneratedFrame], model: str) -> float:
    """mAP@0.5 of a detection version (a version name or alias) on these frames, their boxes answered
    through serving (decode, resize, the ONNX graph's peaks), against the boxes the camera drew."""
    keys = [(f"eval-{i}", put_frame(store, f.jpeg(), "image/jpeg")) for i, f in enumerate(frames)]
    answered: dict[str, list[Box]] = {}
    for i in range(0, len(keys), 64):
        response = await serving.classify(keys[i : i + 64], model=model)
        answered.update({p.frame_id: boxes_from(p.boxes or []) for p in response.predictions})
    metrics = mean_average_precision([f.boxes for f in frames], [answered.get(fid, []) for fid, _ in keys],
                                     DEFECT_CLASSES)
    print(f"    {model}: mAP@0.5 {metrics['map_50']:.4f}, AP@0.5 by class {metrics['ap50_by_class']}", flush=True)
    return float(metrics["map_50"])


async def answered_by(serving: ServingClient, probe: list[tuple[str, str]], model: str) -> set[str]:
    """The versions that answered these frames over several requests (spread over the replicas)."""
    versions: set[str] = set()
    for _ in range(8):
        response = await serving.classify(probe, model=model)
        versions |= {p.model_version or response.model_version for p in response.predictions}
    return versions


def print_changes() -> Any:
    last: list[str] = [""]

    def show(line: str) -> None:
        if line != last[0]:
            print(line, flush=True)
            last[0] = line
    return show


async def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    tag = uuid.uuid4().hex[:6]
    shift = Conditions(brightness=args.brightness, defect_style="changed")
    store = store_from_settings(settings)
    started = time.monotonic()
    keys = await make_keys(settings, tag)
    async with httpx.AsyncClient(base_url=settings.resolved_api_url, timeout=120) as http, \
            ServingClient(settings.serving_url) as serving:
        line = Line.new_site(http, keys, args.label_budget)
        camera = f"cam-{tag}"
        seq = 0

        async def batch(conditions: Conditions) -> dict[str, Any]:
            nonlocal seq
            seq += 1
            frames = generate_frames(camera, args.batch_frames, seed=7, conditions=conditions,
                                     start=seq * args.batch_frames)
            return await line.send_batch(camera, frames, f"b{seq}")

        production = (await http.get("/v1/models/production", headers=line.auth("ml-engineer"))).json()
        v1, task = production["version"], production["card"].get("task", "classification")
        if task != args.task:
            print(f"production {v1} is a {task} version, and --task {args.task} was asked: start the stack on a "
                  f"fresh data dir with SIGHTLINE_BOOTSTRAP_TASK={args.task}")
            return 2
        # What "recovered" compares: accuracy for a classifier, mAP@0.5 (pycocotools) for a detector.
        score, metric = (mean_ap, "mAP@0.5") if task == "detection" else (accuracy, "accuracy")
        normal_eval = generate_frames(f"eval-normal-{tag}", args.eval_frames, seed=501)
        shifted_eval = generate_frames(f"eval-shift-{tag}", args.eval_frames, seed=502, conditions=shift)
        pre = await score(serving, store, normal_eval, v1)
        v1_shifted = await score(serving, store, shifted_eval, v1)
        print(f"production {v1}: {metric} {pre:.4f} on normal conditions, {v1_shifted:.4f} after the shift "
              f"(brightness {args.brightness}, defects drawn the changed way); {args.eval_frames} frames each")

        review_task = asyncio.create_task(line.review())
        try:
            for _ in range(args.normal_batches):
                await batch(NORMAL)
            report = await line.drift_check()
            print(f"before the shift: {seq * args.batch_frames} frames, drift check says {report['status']} "
                  f"(share {report.get('drift_share')}), {line.labels_given} labels given")

            line.shifted = True
            shifted_at = time.monotonic()  # "promoted in S s" counts from here
            after = 0
            detected: int | None = None
            retraining_id: str | None = None
            while after < args.max_shift_frames and retraining_id is None:
                await batch(shift)
                after += args.batch_frames
                report = await line.drift_check()
                if report["status"] == "drift" and detected is None:
                    detected = after
                    print(f"drift detected {after} frames after the shift: {report['drifted_columns']} of "
                          f"{report['total_columns']} columns ({report['report_id']})")
                if report.get("decision"):
                    print(f"  after {after} frames: {report['decision']} ({report.get('decision_reason')}); "
                          f"{line.labels_given} labels given")
                if report.get("decision") in ("retrain", "already_retraining"):
                    retraining_id = report.get("retraining_workflow_id")
            if retraining_id is None:
                print(f"no retraining started within {args.max_shift_frames} frames after the shift")
                print(f"closed loop: recovered 0% of pre-shift {metric} with {line.labels_given} labels, "
                      f"drift after {detected if detected is not None else 'never'} frames, promoted nothing")
                return 1

            show = print_changes()

            def progress(run: dict[str, Any]) -> None:
                p = run.get("progress") or {}
                t = p.get("training") or {}
                show(f"  retraining {run['status']}: {p.get('phase', '-')}, epoch {t.get('epoch', 0)}/"
                     f"{t.get('epochs', 0)}, loss {t.get('loss')}, eta {t.get('eta_s')}s")

            run_state = await line.follow_retraining(retraining_id, progress)
            candidate = run_state.get("candidate_version")
            if run_state["status"] != "completed" or not candidate:
                print(f"retraining {run_state['status']}: {run_state.get('error')}")
                return 1
            card = (await http.get(f"/v1/models/{candidate}", headers=line.auth("ml-engineer"))).json()["card"]
            labels_used = card["data"]["counts"]["by_source"].get("reviewed", 0)
            after_retrain = await score(serving, store, shifted_eval, candidate)
            print(f"candidate {candidate} ({run_state['outcome']}: {run_state.get('outcome_reason')}): {metric} "
                  f"{after_retrain:.4f} on the shifted conditions; trained on {labels_used} reviewed labels "
                  f"({line.labels_given} given in all, {line.box_sets_given} of them box sets, "
                  f"{line.labels_after_shift} after the shift)")
            if task == "detection":
                by_class = {name: s.get("ap50_by_class") for name, s in (card.get("metrics") or {}).items()}
                print(f"  its model card: AP@0.5 by class per set {by_class}")

            rollout = await line.roll_out(
                candidate, rollout_plan(args.stage_frames), lambda: batch(shift),
                lambda state: show(f"  rollout {state['status']}: stage {state.get('stage')}, "
                                   f"split {state.get('split')}"))
        finally:
            line.reviewing = False
            review_task.cancel()
        promoted_after = time.monotonic() - shifted_at
        for gate in rollout.get("gates") or []:
            checks = ", ".join(f"{c['name']} {c['value']:.3f}" for c in gate.get("checks", []))
            print(f"    gate {gate['stage']}: {'passed' if gate['passed'] else 'FAILED'} ({checks})")
        if rollout["status"] != "promoted":
            print(f"rollout {rollout['status']}: {rollout.get('reason')}")
            print(f"closed loop: recovered 0% of pre-shift {metric} with {labels_used} labels, drift after "
                  f"{detected} frames, promoted nothing ({rollout['status']})")
            return 1
        # Production now answers with the candidate: measured through the alias, as every batch is, once
        # serving has re-read it. Each replica caches an alias for a few seconds on its own, so one reply
        # from the candidate is not enough: until then some frames would be v1's.
        probe = [(f"probe-{i}", put_frame(store, f.jpeg(), "image/jpeg")) for i, f in enumerate(shifted_eval[:4])]
        deadline = time.monotonic() + 120
        while await answered_by(serving, probe, "production") != {candidate}:
            if time.monotonic() > deadline:
                print(f"serving still answers production with another version than {candidate}")
                return 1
            await asyncio.sleep(1)
        promoted_accuracy = await score(serving, store, shifted_eval, "production")
        recovered = promoted_accuracy / pre if pre else 0.0
        print(f"production after promotion: {metric} {promoted_accuracy:.4f} on the shifted conditions")
        print(f"wall time {time.monotonic() - started:.0f}s")
        print(f"closed loop: recovered {recovered:.1%} of pre-shift {metric} with {labels_used} labels, "
              f"drift after {detected} frames, promoted {candidate} in {promoted_after:.0f} s")
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-frames", type=int, default=32)
    parser.add_argument("--normal-batches", type=int, default=8, help="batches before the shift")
    parser.add_argument("--max-shift-frames", type=int, default=2000, help="give up after this many")
    parser.add_argument("--label-budget", type=int, default=300, help="labels the reviewer gives at most")
    parser.add_argument("--brightness", type=float, default=0.65, help="the shifted line's lighting")
    parser.add_argument("--eval-frames", type=int, default=400, help="held-out frames per condition")
    parser.add_argument("--stage-frames", type=int, default=64, help="the candidate's frames per rollout stage")
    parser.add_argument("--task", default="classification", choices=("classification", "detection"),
                        help="detection: production is a detector (a stack started with "
                             "SIGHTLINE_BOOTSTRAP_TASK=detection) and mAP@0.5 is what is recovered")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
