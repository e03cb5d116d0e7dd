"""Training the detector on the CPU: on generated frames with their drawn boxes (a first detection
version) or on a snapshot whose reviewed frames carry reviewed boxes, with a checkpoint per epoch that
a restarted run resumes from, as vision.training does for the classifier (the same EpochCheckpoint,
per-epoch seeding, on_epoch/on_step/should_stop hooks and time budget).

The pixels take the served path (JPEG round trip, Processing.resize, PixelInput). Targets are
CenterNet's: a Gaussian peak per box centre on its class's heatmap (penalty-reduced focal loss), and
the centre's offset and the box size regressed (L1) at the centre cell.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vision.boxes import Box
from vision.camera import NORMAL, Conditions, GeneratedFrame, encode_jpeg, generate_frames
from vision.datasets import BaseSetSpec
from vision.decode import decode_frame
from vision.detection_metrics import mean_average_precision
from vision.detector import (
    DETECTOR_ARCHITECTURE,
    STRIDE,
    CenterNetDetector,
    ServedDetector,
    boxes_of,
    build_detector,
    frame_label,
)
from vision.model import PixelInput
from vision.novelty import DEFAULT_PERCENTILE, NoveltyModel, calibrate
from vision.processing import Processing
from vision.quality import quality_features_batch
from vision.training import (
    EpochCheckpoint,
    FitOutcome,
    TrainingResult,
    TrainingStopped,
    model_inputs,
    recalibrate_batchnorm,
)

DEFECT_CLASSES: tuple[str, ...] = ("scratch", "dent", "stain")
NOVELTY_FIT_FRAMES = 1000
FRAME_CLASSES: tuple[str, ...] = ("ok", *DEFECT_CLASSES)  # what the generator draws; "ok" has no box

__all__ = ["DEFECT_CLASSES", "DETECTOR_PROFILES", "FRAME_CLASSES", "DetectionArrays", "DetectionRecipe",
           "DetectorConfig", "TrainingStopped", "describe", "detection_arrays", "evaluate_detector",
           "finish_detector", "fit_detector", "frame_label", "generated_detection_splits", "predict_boxes",
           "retrain_detector", "served_detections", "train_detector"]


@dataclass
class DetectionArrays:
    x: np.ndarray  # uint8 NHWC at the model's input size
    boxes: list[tuple[Box, ...]]  # per frame, relative corners (unchanged by the resize)
    reviewed: np.ndarray  # bool: the frame came from a reviewer


@dataclass
class DetectorConfig:
    input_size: int = 128
    train_frames: int = 2400
    eval_frames: int = 600
    calibration_frames: int = 600
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 4e-3
    seed: int = 0
    camera_id: str = "train-line"
    time_budget_s: float | None = None
    classes: tuple[str, ...] = DEFECT_CLASSES
    conditions: Conditions = NORMAL
    novelty_percentile: float = DEFAULT_PERCENTILE

    def base_set(self) -> BaseSetSpec:
        return BaseSetSpec(self.camera_id, self.seed, self.train_frames, self.calibration_frames, self.eval_frames,
                           FRAME_CLASSES, self.conditions)

    def snapshot_id(self) -> str:
        desc = {"task": "detection", **self.base_set().to_dict()}
        return "generated-det-" + hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes), "conditions": self.conditions.as_dict(),
                "architecture": DETECTOR_ARCHITECTURE, "task": "detection"}


# "tiny": seconds, for tests of the machinery (export, serving, routing), not for real cameras.
DETECTOR_PROFILES = {
    # Measured with photometric jitter: held-out mAP@0.5 0.812 in 80 s of fitting on idle cores, 125 s CPU
    # (README, "The detector"; 0.830 before the jitter, in 554 s on a loaded machine).
    "standard": DetectorConfig(train_frames=1600, epochs=12, time_budget_s=None),
    "tiny": DetectorConfig(input_size=64, train_frames=96, eval_frames=32, calibration_frames=64, epochs=1,
                           batch_size=16, seed=5, camera_id="det-test"),
    # `sightline demo`'s detection chapter: boxes worth drawing in under a minute. Measured on the 2-core
    # build machine, in `make demo` with the photometric jitter: held-out mAP@0.5 0.783 (scratch 0.349, dent
    # 1.000, stain 1.000), 370 steps in 32 s wall, 45 s in all; other processes' load stretches it.
    "demo": DetectorConfig(train_frames=1200, eval_frames=160, calibration_frames=160, epochs=10,
                           learning_rate=6e-3, seed=3, camera_id="demo-det-train"),
}


def detection_arrays(frames: Sequence[GeneratedFrame], processing: Processing, jpeg_quality: int = 90,
                     reviewed: bool = False) -> DetectionArrays:
    """Generated frames with their drawn boxes (this detector's classes), through the same JPEG round trip
    a stored frame takes."""
    x = np.empty((len(frames), processing.input_size, processing.input_size, 3), np.uint8)
    for i, frame in enumerate(frames):
        x[i] = processing.resize(decode_frame(encode_jpeg(frame.image, jpeg_quality)).pixels)
    boxes = [tuple(b for b in f.boxes if b.label in processing.classes) for f in frames]
    return DetectionArrays(x, boxes, np.full(len(frames), reviewed))


def generated_detection_splits(base: BaseSetSpec, processing: Processing) -> dict[str, DetectionArrays]:
    """train / calibration / holdout frames straight from the generator with their drawn boxes."""
    return {split: detection_arrays(generate_frames(camera_id, count, seed, conditions, base.classes), processing,
                                    base.jpeg_quality)
            for split, camera_id, seed, count, conditions in base.split_sources()}


def _gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's: the largest centre displacement (in cells) that still leaves a box of this size
    overlapping its truth by `min_overlap`."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 * b1 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 * b2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def targets(boxes: Sequence[Sequence[Box]], classes: tuple[str, ...], grid: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(heatmap [B, C, G, G], frame index, cell index, offset [M, 2], size [M, 2]) for M boxes."""
    heat = np.zeros((len(boxes), len(classes), grid, grid), np.float32)
    gy, gx = np.mgrid[0:grid, 0:grid].astype(np.float32)
    frames, cells, offsets, sizes = [], [], [], []
    for n, frame_boxes in enumerate(boxes):
        for box in frame_boxes:
            k = classes.index(box.label)
            cx, cy = (box.x0 + box.x1) / 2 * grid, (box.y0 + box.y1) / 2 * grid
            w, h = (box.x1 - box.x0) * grid, (box.y1 - box.y0) * grid
            ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            sigma = max(0.5, (2 * _gaussian_radius(h, w) + 1) / 6)
            peak = np.exp(-((gx - ix) ** 2 + (gy - iy) ** 2) / (2 * sigma * sigma))
            heat[n, k] = np.maximum(heat[n, k], peak)
            frames.append(n)
            cells.append(iy * grid + ix)
            offsets.append((cx - ix, cy - iy))
            sizes.append((w, h))
    return (torch.from_numpy(heat), torch.tensor(frames, dtype=torch.int64), torch.tensor(cells, dtype=torch.int64),
            torch.tensor(offsets, dtype=torch.float32).reshape(-1, 2),
            torch.tensor(sizes, dtype=torch.float32).reshape(-1, 2))


def detection_loss(heat_logits: torch.Tensor, offset: torch.Tensor, size: torch.Tensor,
                   target: tuple[torch.Tensor, ...]) -> torch.Tensor:
    heat, frames, cells, offset_t, size_t = target
    # Penalty-reduced focal loss (CenterNet), in log-sigmoid form so no probability hits log(0).
    log_p, log_not_p = torch.nn.functional.logsigmoid(heat_logits), torch.nn.functional.logsigmoid(-heat_logits)
    p = torch.sigmoid(heat_logits)
    positive = (heat == 1.0).to(p.dtype)
    loss_positive = -(log_p * (1 - p) ** 2 * positive).sum()
    loss_negative = -(log_not_p * p**2 * (1 - heat) ** 4 * (1 - positive)).sum()
    count = max(1, len(frames))
    loss = (loss_positive + loss_negative) / count
    if len(frames):
        n, _, gh, gw = heat_logits.shape
        pred_offset = offset.reshape(n, 2, gh * gw)[frames, :, cells]
        pred_size = size.reshape(n, 2, gh * gw)[frames, :, cells]
        loss = loss + torch.nn.functional.l1_loss(pred_offset, offset_t, reduction="sum") / count \
            + 0.1 * torch.nn.functional.l1_loss(pred_size, size_t, reduction="sum") / count
    return loss


def _flip(boxes: list[tuple[Box, ...]], horizontal: bool, vertical: bool) -> list[tuple[Box, ...]]:
    def one(b: Box) -> Box:
        x0, x1 = (1 - b.x1, 1 - b.x0) if horizontal else (b.x0, b.x1)
        y0, y1 = (1 - b.y1, 1 - b.y0) if vertical else (b.y0, b.y1)
        return Box(x0, y0, x1, y1, b.label)
    return [tuple(one(b) for b in frame) for frame in boxes]


def _photometric(rng: np.random.Generator, xb: np.ndarray) -> np.ndarray:
    """Each frame's lighting and white balance jittered: an overall gain of 0.55-1.15 and a gain per
    channel of 0.9-1.1. A line's lighting moves (a dimmer lamp, a new sensor), and a detector that saw
    only one level keys on brightness; flips alone leave it there."""
    gain = rng.uniform(0.55, 1.15, (len(xb), 1, 1, 1)) * rng.uniform(0.9, 1.1, (len(xb), 1, 1, 3))
    return (xb.astype(np.float32) * gain.astype(np.float32)).clip(0, 255).astype(np.uint8)


def _batches(rng: np.random.Generator, n: int, batch_size: int, steps: int, reviewed: np.ndarray | None,
             reviewed_share: float) -> list[np.ndarray]:
    from vision.training import _batches as classifier_batches  # the same mix of reviewed frames

    return classifier_batches(rng, n, batch_size, steps, reviewed, reviewed_share)


def fit_detector(x: np.ndarray, boxes: list[tuple[Box, ...]], processing: Processing, *, epochs: int,
                 batch_size: int, learning_rate: float, seed: int, time_budget_s: float | None = None,
                 reviewed: np.ndarray | None = None, reviewed_share: float = 0.0, init_weights: bytes | None = None,
                 resume: bytes | None = None, photometric: bool = True,
                 on_epoch: Callable[[dict, Callable[[], EpochCheckpoint]], None] | None = None,
                 on_step: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> FitOutcome:
    """The detector's optimisation loop, checkpointed and resumable like vision.training.fit."""
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.monotonic()
    model = build_detector(len(processing.classes))
    if init_weights is not None:
        model.load_state_dict(torch.load(io.BytesIO(init_weights), map_location="cpu", weights_only=True))
    grid = processing.input_size // STRIDE
    steps_per_epoch = max(1, len(x) // batch_size)
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=total_steps,
                                                   pct_start=0.2)
    start_epoch, step, loss_value = 0, 0, float("nan")
    if resume is not None:
        checkpoint, state = EpochCheckpoint.load(resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, step, loss_value = checkpoint.epoch, checkpoint.step, checkpoint.loss
    pixel_input = PixelInput(processing)
    stopped_early = False
    report: dict = {}
    epoch = start_epoch
    for epoch in range(start_epoch, epochs):
        model.train()
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 1000 + epoch)
        for idx in _batches(rng, len(x), batch_size, steps_per_epoch, reviewed, reviewed_share):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped in epoch {epoch + 1} at step {step}")
            xb, bb = x[idx], [boxes[i] for i in idx]
            horizontal, vertical = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
            if horizontal:
                xb = xb[:, :, ::-1]
            if vertical:
                xb = xb[:, ::-1]
            if photometric:
                xb = _photometric(rng, xb)
            heat, offset, size = model(model_inputs(pixel_input, xb))
            loss = detection_loss(heat, offset, size, targets(_flip(bb, horizontal, vertical), processing.classes,
                                                              grid))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = loss.item()
            report = {"epoch": epoch + 1, "epochs": epochs, "step": step, "steps": total_steps,
                      "loss": round(loss_value, 4), "elapsed_s": round(time.monotonic() - started, 1)}
            if on_step is not None:
                on_step(report)
            if time_budget_s is not None and time.monotonic() - started > time_budget_s:
                stopped_early = True
                break
        if on_epoch is not None and not stopped_early:
            on_epoch(report, functools.partial(EpochCheckpoint.capture, epoch + 1, step, round(loss_value, 4), model,
                                               optimizer, schedule))
        if stopped_early:
            break
    epochs_done = epochs if not stopped_early else epoch + 1
    return FitOutcome(model, step, round(loss_value, 4), epochs_done - start_epoch, start_epoch, stopped_early)


@torch.no_grad()
def served_detections(detector: CenterNetDetector, processing: Processing, x: np.ndarray,
                      novelty: NoveltyModel | None = None, batch_size: int = 128
                      ) -> tuple[list[list[Box]], np.ndarray]:
    """(boxes per frame, novelty scores) through the served graph; without `novelty`, the second array
    is the novelty feature vectors instead."""
    served = ServedDetector(detector.eval(), processing, novelty).eval()
    boxes: list[list[Box]] = []
    second = []
    for i in range(0, len(x), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))
        (b, s, c), features = served.features(batch)
        boxes.extend(boxes_of(b.numpy(), s.numpy(), c.numpy(), processing.classes))
        second.append(served.novelty(features).numpy() if served.novelty is not None else features.numpy())
    return boxes, np.concatenate(second)


def predict_boxes(detector: CenterNetDetector, processing: Processing, x: np.ndarray) -> list[list[Box]]:
    return served_detections(detector, processing, x)[0]


def evaluate_detector(detector: CenterNetDetector, processing: Processing, x: np.ndarray,
                      boxes: Sequence[Sequence[Box]]) -> dict:
    """mAP@0.5 (and 0.5:0.95), AP@0.5 by class, on these frames (vision.detection_metrics)."""
    return mean_average_precision(boxes, predict_boxes(detector, processing, x), processing.classes)


def finish_detector(model: CenterNetDetector, processing: Processing, splits: dict[str, DetectionArrays],
                    percentile: float, reviewed_share: float = 0.0) -> tuple[NoveltyModel, list[dict], dict[str, dict]]:
    """After the last epoch: BN statistics (over training frames mixed as the batches were: a detector
    fine-tuned on a dimmer line and then given the normal line's statistics loses what it learned, as
    the classifier does), novelty calibration (fit on the training frames and their flips, threshold on
    the calibration frames), the drift reference and mAP on every held-out set."""
    train_x = splits["train"].x
    recalibrate_batchnorm(model, processing, train_x, reviewed=splits["train"].reviewed,
                          reviewed_share=reviewed_share)
    # At most NOVELTY_FIT_FRAMES training frames, with a flip of each (vision.training fits on every frame
    # and three flips; a detector's pass costs more, and 2x1000 frames pin the Gaussian down as well).
    fit_x = train_x[np.linspace(0, len(train_x) - 1, min(NOVELTY_FIT_FRAMES, len(train_x))).astype(int)]
    views = (fit_x, fit_x[:, ::-1, ::-1])
    fit_features = np.concatenate([served_detections(model, processing, v)[1] for v in views])
    novelty = calibrate(fit_features, served_detections(model, processing, splits["calibration"].x)[1], percentile)
    holdout = splits["holdout"]
    held_boxes, scores = served_detections(model, processing, holdout.x, novelty)
    reference: list[dict] = []
    for quality, frame_boxes, score in zip(quality_features_batch(holdout.x), held_boxes, scores, strict=True):
        label, confidence = frame_label(frame_boxes)
        reference.append({**quality, "label": label, "confidence": round(confidence, 4),
                          "novelty": round(float(score), 4), "unfamiliar": bool(score > 1.0)})
    evaluations: dict[str, dict] = {name: evaluate_detector(model, processing, splits[name].x, splits[name].boxes)
                   for name in ("holdout", "reviewed_holdout") if name in splits and len(splits[name].boxes)}
    return novelty, reference, evaluations


@dataclass
class DetectionRecipe:
    """How a detection candidate is fine-tuned on a snapshot: the optimisation and the share of each batch
    from reviewed frames (the retraining run's TrainingParams, activities.training.detection_recipe), and
    the two levers bench/detection_recovery.py measured (photometric jitter, BN statistics mixed like the
    batches). Drawing the reviewed share evenly over classes was measured too and lost (102.7% recovered
    against 109.2% with 200 reviewed frames), so reviewed frames are drawn as they come."""

    epochs: int
    batch_size: int
    learning_rate: float
    reviewed_share: float
    novelty_percentile: float = DEFAULT_PERCENTILE
    photometric: bool = True
    bn_mix: bool = True


def retrain_detector(splits: dict[str, DetectionArrays], processing: Processing, recipe: DetectionRecipe, *,
                     seed: int, init_weights: bytes | None = None, resume: bytes | None = None,
                     on_epoch: Callable[[dict, Callable[[], EpochCheckpoint]], None] | None = None,
                     on_step: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None
                     ) -> tuple[FitOutcome, NoveltyModel, list[dict], dict[str, dict]]:
    """A detection candidate from a snapshot's splits: fit (checkpointed, resumable), then finish
    (BN statistics, novelty, reference, mAP on the held-out sets)."""
    train = splits["train"]
    outcome = fit_detector(train.x, train.boxes, processing, epochs=recipe.epochs, batch_size=recipe.batch_size,
                           learning_rate=recipe.learning_rate, seed=seed, reviewed=train.reviewed,
                           reviewed_share=recipe.reviewed_share, init_weights=init_weights, resume=resume,
                           photometric=recipe.photometric, on_epoch=on_epoch, on_step=on_step, should_stop=should_stop)
    model = outcome.model
    assert isinstance(model, CenterNetDetector)
    novelty, reference, sets = finish_detector(model, processing, splits, recipe.novelty_percentile,
                                               recipe.reviewed_share if recipe.bn_mix else 0.0)
    return outcome, novelty, reference, sets


def train_detector(config: DetectorConfig, progress: Callable[[dict], None] | None = None) -> TrainingResult:
    """Train a detector on frames generated from `config`; `progress` after every epoch. The result's
    metrics hold held-out mAP@0.5 and AP by class, and the wall and CPU seconds it took."""
    started, cpu_started = time.monotonic(), time.process_time()
    processing = Processing(classes=tuple(config.classes), input_size=config.input_size)
    splits = generated_detection_splits(config.base_set(), processing)
    generate_s = time.monotonic() - started

    def on_epoch(report: dict, _: Callable[[], EpochCheckpoint]) -> None:
        if progress is not None:
            progress(report)

    train = splits["train"]
    fit_started, fit_cpu = time.monotonic(), time.process_time()
    outcome = fit_detector(train.x, train.boxes, processing, epochs=config.epochs, batch_size=config.batch_size,
                           learning_rate=config.learning_rate, seed=config.seed,
                           time_budget_s=config.time_budget_s, on_epoch=on_epoch)
    fit_s, fit_cpu_s = time.monotonic() - fit_started, time.process_time() - fit_cpu
    model = outcome.model
    assert isinstance(model, CenterNetDetector)
    novelty, reference, evaluations = finish_detector(model, processing, splits, config.novelty_percentile)
    held_out = evaluations["holdout"]
    metrics = {
        "task": "detection",
        "held_out_map_50": held_out["map_50"],
        "held_out_map_50_95": held_out["map_50_95"],
        "held_out_ap50_by_class": held_out["ap50_by_class"],
        "held_out_frames": held_out["frames"],
        "train_frames": len(train.boxes),
        "final_loss": outcome.final_loss,
        "steps": outcome.steps,
        "epochs_run": outcome.epochs_run,
        "stopped_early": outcome.stopped_early,
        "generate_seconds": round(generate_s, 1),
        "fit_seconds": round(fit_s, 1),
        "fit_cpu_seconds": round(fit_cpu_s, 1),
        "train_seconds": round(time.monotonic() - started - generate_s, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "sets": evaluations,
    }
    return TrainingResult(model, processing, DETECTOR_ARCHITECTURE, metrics, config.snapshot_id(),
                          config.to_dict(), novelty, reference, task="detection")


def describe(result: TrainingResult) -> str:
    m = result.metrics
    by_class = ", ".join(f"{c} {ap:.3f}" for c, ap in m["held_out_ap50_by_class"].items())
    return (f"mAP@0.5 {m['held_out_map_50']:.3f} (0.5:0.95 {m['held_out_map_50_95']:.3f}; {by_class}) on "
            f"{m['held_out_frames']} held-out frames; {m['steps']} steps in {m['fit_seconds']} s wall "
            f"({m['fit_cpu_seconds']} s CPU), {m['train_seconds']} s wall after generating")



def generated_boxes(base: BaseSetSpec) -> dict[str, tuple[Box, ...]]:
    """The drawn boxes of every generated frame of a base set, by its snapshot entry name (<camera>/<index>):
    rendered again from the same seeds (snapshots store the frames, not the generator's boxes)."""
    out = {}
    for _, camera_id, seed, count, conditions in base.split_sources():
        for frame in generate_frames(camera_id, count, seed, conditions, base.classes):
            out[f"{camera_id}/{frame.index}"] = frame.boxes
    return out


def load_detection_splits(store, manifest, processing: Processing, skipped: list | None = None
                          ) -> dict[str, DetectionArrays]:
    """A snapshot's splits for the detector: the frames as vision.datasets.load_splits reads them
    (verified, decoded, resized), with their boxes: a generated frame's as the camera drew them, a
    reviewed frame's as the reviewer decided them ([] for "ok"). A reviewed frame of a defect class
    decided without boxes (a class decision) says nothing about where the defect is: it is left out."""
    from vision.datasets import GENERATED, load_splits

    left_out: list = [] if skipped is None else skipped
    before = len(left_out)
    # Loaded under the frames' classes ("ok" among them): the detector's own are the defect classes only.
    frame_processing = Processing(tuple(manifest.base.classes), processing.input_size, processing.mean, processing.std)
    splits = load_splits(store, manifest, frame_processing, left_out)
    gone = {f.frame_id for f in left_out[before:]}
    drawn = generated_boxes(manifest.base) if any(e.source == GENERATED for e in manifest.entries) else {}
    by_split: dict[str, list[tuple[Box, ...] | None]] = {}
    for e in manifest.entries:
        if e.name in gone and e.source != GENERATED:
            continue
        if e.source == GENERATED:
            boxes: tuple[Box, ...] | None = tuple(b for b in drawn[e.name] if b.label in processing.classes)
        elif e.boxes is not None:
            boxes = tuple(Box.from_dict(b) for b in e.boxes if b.get("label") in processing.classes)
        else:
            boxes = () if e.label not in processing.classes else None
        by_split.setdefault(e.split, []).append(boxes)
    out = {}
    for split, arrays in splits.items():
        frame_boxes = by_split[split]
        keep = np.array([b is not None for b in frame_boxes], bool)
        out[split] = DetectionArrays(arrays.x[keep], [b for b in frame_boxes if b is not None], arrays.reviewed[keep])
    return out
