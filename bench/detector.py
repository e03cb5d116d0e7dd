"""Train the detector on generated frames and measure it: held-out mAP@0.5 (pycocotools), AP by class,
wall and CPU seconds, against the goal (mAP@0.5 >= 0.8 in under 10 minutes on the 2-core machine).

    python -m bench.detector                 # the standard profile (what `make detector` runs)
    python -m bench.detector --epochs 4 --train-frames 1600 --watch   # mAP after every epoch too

The machine's load is printed before and after: other processes on the same 2 cores stretch the wall
time, so a run under load says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from vision.detector_training import DETECTOR_PROFILES, describe, train_detector

GOAL_MAP = 0.8
GOAL_SECONDS = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="standard", choices=sorted(DETECTOR_PROFILES))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-frames", type=int)
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--time-budget", type=float)
    parser.add_argument("--watch", action="store_true", help="held-out mAP after every epoch (costs time)")
    parser.add_argument("--json", help="write the metrics to this file")
    parser.add_argument("--save", help="write the trained detector's weights (state dict) to this file")
    args = parser.parse_args()
    config = DETECTOR_PROFILES[args.profile]
    changes = {k: v for k, v in {"epochs": args.epochs, "train_frames": args.train_frames,
                                 "input_size": args.input_size, "batch_size": args.batch_size,
                                 "learning_rate": args.learning_rate, "time_budget_s": args.time_budget}.items()
               if v is not None}
    config = dataclasses.replace(config, **changes)
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    print(f"config: {json.dumps(config.to_dict(), sort_keys=True)}")
    started, cpu_started = time.monotonic(), time.process_time()
    watch_frames = None
    if args.watch:
        from vision.detector_training import generated_detection_splits
        from vision.processing import Processing

        processing = Processing(classes=config.classes, input_size=config.input_size)
        watch_frames = generated_detection_splits(dataclasses.replace(config.base_set(), train_frames=0,
                                                                      calibration_frames=0), processing)["holdout"]

    def progress(report: dict, model=None) -> None:
        print(f"epoch {report['epoch']}/{report['epochs']} step {report['step']} loss {report['loss']} "
              f"at {report['elapsed_s']} s", flush=True)

    result = train_detector(config, progress) if watch_frames is None else _watched(config, watch_frames)
    wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    print(describe(result))
    m = result.metrics
    print(f"total: {wall:.1f} s wall, {cpu:.1f} s CPU (this process); load average after: {os.getloadavg()}")
    ok = m["held_out_map_50"] >= GOAL_MAP and wall <= GOAL_SECONDS
    print(f"goal mAP@0.5 >= {GOAL_MAP} in <= {GOAL_SECONDS:.0f} s wall: {'MET' if ok else 'NOT MET'}")
    # Under other processes' load the wall time stretches; the CPU it took says what an idle machine's two
    # cores would need (torch runs two threads: wall is about CPU / 2 there).
    print(f"mAP@0.5 >= {GOAL_MAP}: {'yes' if m['held_out_map_50'] >= GOAL_MAP else 'no'}; CPU {cpu:.0f} s, "
          f"about {cpu / 2:.0f} s on two idle cores")
    if args.save:
        from vision.model import weights_bytes

        with open(args.save, "wb") as weights:
            weights.write(weights_bytes(result.model))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({**m, "total_wall_seconds": round(wall, 1), "total_cpu_seconds": round(cpu, 1),
                       "config": config.to_dict()}, out, indent=2, default=str)


def _watched(config, frames):
    """train_detector with the held-out mAP printed after every epoch (BN statistics as training left
    them, so the final, recalibrated number can differ a little)."""
    import vision.detector_training as dt

    original = dt.fit_detector

    def fit(*args, **kwargs):
        inner = kwargs.pop("on_epoch", None)

        def on_epoch(report, capture):
            import torch

            state = torch.load(__import__("io").BytesIO(capture().state), weights_only=True)
            model = dt.build_detector(len(config.classes))
            model.load_state_dict(state["model"])
            from vision.processing import Processing

            metrics = dt.evaluate_detector(model.eval(), Processing(config.classes, config.input_size), frames.x,
                                           frames.boxes)
            print(f"epoch {report['epoch']}: loss {report['loss']} at {report['elapsed_s']} s, held-out mAP@0.5 "
                  f"{metrics['map_50']} {metrics['ap50_by_class']}", flush=True)
            if inner is not None:
                inner(report, capture)
        return original(*args, on_epoch=on_epoch, **kwargs)

    dt.fit_detector = fit
    try:
        return dt.train_detector(config)
    finally:
        dt.fit_detector = original


if __name__ == "__main__":
    main()
