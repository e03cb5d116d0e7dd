"""The detection retraining recipe, offline and side by side: how much of production's pre-shift mAP@0.5 a
candidate fine-tuned on N reviewed frames of the shifted line recovers, for each recipe asked, in one run.

It runs what the retraining activity runs (vision.detector_training.retrain_detector on the retraining
profile's base set plus reviewed frames, 20% of them held out) without the stack, so a recipe is judged
in minutes rather than in a whole closed loop (bench/closed_loop.py --task detection, which measures
the same thing through serving). Production (v1) is the `standard` detector profile, trained first or
loaded with --parent.

    python -m bench.detection_recovery --save /tmp/det-v1.pt
    python -m bench.detection_recovery --parent /tmp/det-v1.pt --reviewed 280 --recipes default,share=0.8

A recipe is `default` (what a retraining run started now asks: settings and TrainingParams) or comma-free
overrides joined by '+': `epochs=10`, `share=0.8`, `lr=0.003`, `batch=32`, `photometric=0`, `bn_mix=0`.
Prints, per recipe:

    recipe R: mAP@0.5 X on the shifted line (AP by class), recovered Y% of pre-shift with N reviewed frames
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from activities.drift import training_params
from activities.training import detection_recipe
from infra.settings import get_settings
from vision.camera import Conditions, generate_frames
from vision.detector import CenterNetDetector, load_detector
from vision.detector_training import (
    DETECTOR_PROFILES,
    DetectionArrays,
    DetectionRecipe,
    describe,
    detection_arrays,
    evaluate_detector,
    generated_detection_splits,
    retrain_detector,
    train_detector,
)
from vision.processing import Processing
from vision.profiles import PROFILES


def join(a: DetectionArrays, b: DetectionArrays) -> DetectionArrays:
    return DetectionArrays(np.concatenate([a.x, b.x]), a.boxes + b.boxes, np.concatenate([a.reviewed, b.reviewed]))


def parse_recipe(text: str, base: DetectionRecipe) -> DetectionRecipe:
    if text == "default":
        return base

    def flag(v: str) -> bool:
        return v not in ("0", "false")

    names: dict[str, tuple[str, Callable[[str], Any]]] = {
        "epochs": ("epochs", int), "share": ("reviewed_share", float), "lr": ("learning_rate", float),
        "batch": ("batch_size", int), "photometric": ("photometric", flag), "bn_mix": ("bn_mix", flag)}
    changes = {}
    for part in text.split("+"):
        key, _, value = part.partition("=")
        field, cast = names[key]
        changes[field] = cast(value)
    return dataclasses.replace(base, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", help="production's weights (a state dict); default: train the standard profile")
    parser.add_argument("--save", help="write the trained production weights here")
    parser.add_argument("--reviewed", type=int, default=280, help="reviewed frames in the snapshot (20%% held out)")
    parser.add_argument("--normal-reviewed", type=int, default=24,
                        help="of them, frames reviewed before the shift (the QA sample and uncertain boxes)")
    parser.add_argument("--brightness", type=float, default=0.65)
    parser.add_argument("--eval-frames", type=int, default=400)
    parser.add_argument("--recipes", default="default")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}", flush=True)
    config = DETECTOR_PROFILES["standard"]
    processing = Processing(classes=config.classes, input_size=config.input_size)
    if args.parent:
        with open(args.parent, "rb") as weights:
            parent = load_detector(len(processing.classes), weights.read())
    else:
        result = train_detector(config)
        print(f"production v1: {describe(result)}", flush=True)
        assert isinstance(result.model, CenterNetDetector)
        parent = result.model
    buf = io.BytesIO()
    torch.save(parent.state_dict(), buf)
    parent_weights = buf.getvalue()
    if args.save:
        with open(args.save, "wb") as out:
            out.write(parent_weights)

    shift = Conditions(brightness=args.brightness, defect_style="changed")
    normal_eval = detection_arrays(generate_frames("eval-normal", args.eval_frames, seed=501), processing)
    shifted_eval = detection_arrays(generate_frames("eval-shift", args.eval_frames, seed=502, conditions=shift),
                                    processing)
    pre = evaluate_detector(parent, processing, normal_eval.x, normal_eval.boxes)
    after = evaluate_detector(parent, processing, shifted_eval.x, shifted_eval.boxes)
    print(f"production: mAP@0.5 {pre['map_50']:.4f} before the shift {pre['ap50_by_class']}, {after['map_50']:.4f} "
          f"after it", flush=True)

    # The snapshot: the retraining profile's generated base set and the reviewed frames, 20% held out.
    splits = generated_detection_splits(PROFILES["standard"].base_set(), processing)
    reviewed = join(detection_arrays(generate_frames("cam-normal", args.normal_reviewed, seed=7), processing,
                                     reviewed=True),
                    detection_arrays(generate_frames("cam-shift", args.reviewed - args.normal_reviewed, seed=7,
                                                     conditions=shift), processing, reviewed=True))
    held = np.arange(len(reviewed.boxes)) % 5 == 4

    def part(keep: np.ndarray) -> DetectionArrays:
        return DetectionArrays(reviewed.x[keep], [b for b, k in zip(reviewed.boxes, keep, strict=True) if k],
                               reviewed.reviewed[keep])

    splits["train"] = join(splits["train"], part(~held))
    splits["reviewed_holdout"] = part(held)
    print(f"snapshot: {len(splits['train'].boxes)} training frames, {int((~held).sum())} of them reviewed; "
          f"{int(held.sum())} reviewed held out", flush=True)

    # `default`: what a retraining run started now would ask (settings, SIGHTLINE_RETRAINING_* included).
    default = detection_recipe(training_params(get_settings()))
    for text in args.recipes.split(","):
        recipe = parse_recipe(text, default)
        started, cpu = time.monotonic(), time.process_time()
        outcome, _, _, sets = retrain_detector(splits, processing, recipe, seed=0, init_weights=parent_weights)
        model = outcome.model
        assert isinstance(model, CenterNetDetector)
        got = evaluate_detector(model, processing, shifted_eval.x, shifted_eval.boxes)
        kept = evaluate_detector(model, processing, normal_eval.x, normal_eval.boxes)
        print(f"recipe {text} ({recipe}): mAP@0.5 {got['map_50']:.4f} on the shifted line {got['ap50_by_class']}, "
              f"{kept['map_50']:.4f} on the normal line; reviewed holdout {sets['reviewed_holdout']['map_50']:.4f}; "
              f"{time.monotonic() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU", flush=True)
        print(f"recipe {text}: recovered {got['map_50'] / pre['map_50']:.1%} of pre-shift mAP@0.5 with "
              f"{args.reviewed} reviewed frames", flush=True)


if __name__ == "__main__":
    main()
