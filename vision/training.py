"""Training a classifier on the CPU: on generated camera frames (the bootstrap of version 1) or on a
dataset snapshot (retraining), with a checkpoint per epoch that a restarted run resumes from.

The training pixels go through the JPEG round trip, `Processing.resize` and `PixelInput`, the path a
served frame takes through the preprocessor and the model's graph, so training and serving cannot
disagree. After the last epoch the run calibrates the model's novelty score on held-out frames
(vision.novelty) and records, for its held-out frames, the quality features, predictions and novelty
that later drift checks compare production frames with.
"""

from __future__ import annotations

import functools
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vision.datasets import SplitArrays, generated_splits
from vision.model import PixelInput, ServedModel, build_model
from vision.novelty import NoveltyModel, calibrate
from vision.processing import Processing
from vision.profiles import PROFILES, FitParams, TrainingConfig
from vision.quality import quality_features_batch

__all__ = ["PROFILES", "FitParams", "TrainingConfig", "TrainingResult", "evaluate", "fit", "train"]


@dataclass
class TrainingResult:
    model: torch.nn.Module
    processing: Processing
    architecture: str
    metrics: dict
    dataset_snapshot_id: str
    config: dict = field(default_factory=dict)
    novelty: NoveltyModel | None = None
    # Per held-out frame: quality features, label, confidence, novelty, unfamiliar (the drift reference).
    reference: list[dict] = field(default_factory=list)
    task: str = "classification"  # or "detection": `model` is then a vision.detector.CenterNetDetector


class TrainingStopped(Exception):
    """The caller asked the loop to stop (a cancelled job); raised between two steps."""


@dataclass
class EpochCheckpoint:
    """Everything a restarted run needs to continue after `epoch` completed epochs."""

    epoch: int
    step: int
    loss: float
    state: bytes

    @classmethod
    def capture(cls, epoch: int, step: int, loss: float, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler) -> EpochCheckpoint:
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch, "step": step, "loss": loss}, buf)
        return cls(epoch, step, loss, buf.getvalue())

    @classmethod
    def load(cls, data: bytes) -> tuple[EpochCheckpoint, dict]:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(int(state["epoch"]), int(state["step"]), float(state["loss"]), data), state


@dataclass
class FitOutcome:
    model: torch.nn.Module
    steps: int
    final_loss: float
    epochs_run: int  # epochs this call ran (fewer than planned after a resume)
    resumed_from_epoch: int
    stopped_early: bool


def frames_to_arrays(frames, processing: Processing) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([processing.resize(f.image) for f in frames])
    y = np.array([processing.classes.index(f.label) for f in frames], dtype=np.int64)
    return x, y


def model_inputs(pixel_input: PixelInput, pixels: np.ndarray) -> torch.Tensor:
    """uint8 NHWC frames (any strides: flipped views too) -> the backbone's normalised float input."""
    return pixel_input(torch.from_numpy(np.ascontiguousarray(pixels)))


@torch.no_grad()
def predict_logits(model: torch.nn.Module, processing: Processing, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    model.eval()
    pixel_input = PixelInput(processing)
    out = [model(model_inputs(pixel_input, x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def evaluate(model: torch.nn.Module, processing: Processing, x: np.ndarray, y: np.ndarray) -> dict:
    pred = predict_logits(model, processing, x).argmax(axis=1)
    per_class = {c: round(float((pred[y == k] == k).mean()), 4)
                 for k, c in enumerate(processing.classes) if (y == k).any()}
    return {"accuracy": round(float((pred == y).mean()), 4), "per_class_accuracy": per_class, "frames": len(y)}


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, processing: Processing, x: np.ndarray, frames: int = 1024,
                          reviewed: np.ndarray | None = None, reviewed_share: float = 0.0) -> None:
    """Recompute BN running statistics as a plain average over training frames with the final
    weights, so evaluation and serving see statistics that match the weights they run with. The frames
    are mixed as the training batches were: with `reviewed_share` of them reviewed frames. (Statistics
    of the generated frames alone, when training saw half reviewed frames from a camera whose lighting
    changed, cost a fine-tuned model most of what it learned: 0.98 accuracy on the new conditions fell
    to 0.80.)"""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    pixel_input = PixelInput(processing)
    count = min(frames, len(x))
    if reviewed is not None and reviewed_share > 0 and reviewed.any() and not reviewed.all():
        mine, others = np.flatnonzero(reviewed), np.flatnonzero(~reviewed)
        take = round(count * reviewed_share)
        rng = np.random.default_rng(0)
        pick = np.concatenate([rng.choice(mine, take), rng.choice(others, count - take, replace=len(others) < count)])
        rng.shuffle(pick)
    else:
        # A spread of frames, not the first ones: a snapshot lists reviewed frames last.
        pick = np.linspace(0, len(x) - 1, count).astype(int)
    for i in range(0, len(pick), 128):
        model(model_inputs(pixel_input, x[pick[i : i + 128]]))
    model.eval()


def _batches(rng: np.random.Generator, n: int, batch_size: int, steps: int, reviewed: np.ndarray | None,
             reviewed_share: float) -> list[np.ndarray]:
    """One epoch's batch indices: a permutation, or, with reviewed frames and a share for them, that
    share of each batch drawn from the reviewed frames and the rest from the others."""
    if reviewed is None or reviewed_share <= 0 or not reviewed.any() or reviewed.all():
        order = rng.permutation(n)
        return [order[b * batch_size : (b + 1) * batch_size] for b in range(steps)]
    mine, others = np.flatnonzero(reviewed), np.flatnonzero(~reviewed)
    take = max(1, round(batch_size * reviewed_share))
    rest = batch_size - take
    return [np.concatenate([rng.choice(mine, take), rng.choice(others, rest, replace=len(others) < rest)])
            for _ in range(steps)]


def fit(x: np.ndarray, y: np.ndarray, processing: Processing, params: FitParams, *,
        reviewed: np.ndarray | None = None, init_weights: bytes | None = None, resume: bytes | None = None,
        on_epoch: Callable[[dict, Callable[[], EpochCheckpoint]], None] | None = None,
        on_step: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None) -> FitOutcome:
    """The optimisation loop. Each epoch's shuffle and dropout draw from (seed, epoch), and a checkpoint
    holds the model, optimiser and schedule, so a run resumed from epoch k continues as the same run
    would have. `on_epoch(report, capture)` after every epoch: `capture()` makes its checkpoint (only
    callers that keep checkpoints pay for one). `should_stop` is asked before every step:
    TrainingStopped when it says so."""
    torch.manual_seed(params.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.monotonic()
    model = build_model(params.architecture, len(processing.classes))
    if init_weights is not None:  # fine-tuning: start from the parent version's weights
        model.load_state_dict(torch.load(io.BytesIO(init_weights), map_location="cpu", weights_only=True))
    for m in model.modules():
        # torchvision's MobileNetV3 uses BN momentum 0.01, tuned for long ImageNet runs: its running
        # statistics would lag far behind a few hundred steps. 0.1 keeps them current.
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    steps_per_epoch = max(1, len(x) // params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=params.learning_rate, total_steps=total_steps,
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
    for epoch in range(start_epoch, params.epochs):
        model.train()
        correct = seen = 0
        rng = np.random.default_rng([params.seed, epoch])
        torch.manual_seed(params.seed * 1000 + epoch)
        for idx in _batches(rng, len(x), params.batch_size, steps_per_epoch, reviewed, params.reviewed_share):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped in epoch {epoch + 1} at step {step}")
            xb = x[idx]
            # Flips keep the label (a scratch is a scratch either way up) and double the variety.
            if rng.random() < 0.5:
                xb = xb[:, :, ::-1]
            if rng.random() < 0.5:
                xb = xb[:, ::-1]
            labels = torch.from_numpy(y[idx])
            logits = model(model_inputs(pixel_input, xb))
            loss = torch.nn.functional.cross_entropy(logits, labels)
            # The epoch's running training accuracy: what `sightline up` shows while v1 trains.
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = loss.item()
            report = {"epoch": epoch + 1, "epochs": params.epochs, "step": step, "steps": total_steps,
                      "loss": round(loss_value, 4), "accuracy": round(correct / max(1, seen), 4),
                      "elapsed_s": round(time.monotonic() - started, 1)}
            if on_step is not None:
                on_step(report)
            if params.time_budget_s is not None and time.monotonic() - started > params.time_budget_s:
                stopped_early = True
                break
        if on_epoch is not None and not stopped_early:
            on_epoch(report, functools.partial(EpochCheckpoint.capture, epoch + 1, step, round(loss_value, 4), model,
                                               optimizer, schedule))
        if stopped_early:
            break
    epochs_done = params.epochs if not stopped_early else epoch + 1
    return FitOutcome(model, step, round(loss_value, 4), epochs_done - start_epoch, start_epoch, stopped_early)


@torch.no_grad()
def served_outputs(model: torch.nn.Module, processing: Processing, x: np.ndarray,
                   novelty: NoveltyModel | None = None, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(logits, novelty features) of frames through the served graph; with `novelty`, the second
    array is the served novelty score instead of the features."""
    served = ServedModel(model.eval(), processing, novelty).eval()
    logits, second = [], []
    for i in range(0, len(x), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))
        out = served(batch) if novelty is not None else served.features(batch)
        assert isinstance(out, tuple)
        logits.append(out[0].numpy())
        second.append(out[1].numpy())
    return np.concatenate(logits), np.concatenate(second)


def calibrate_novelty(model: torch.nn.Module, processing: Processing, train_x: np.ndarray,
                      calibration_x: np.ndarray, percentile: float) -> NoveltyModel:
    """Fit the novelty Gaussian on the training frames and their flips (flipped frames are frames the
    camera could send: the generator's parts and belt look the same either way up), and set the
    threshold on the held-out calibration frames."""
    views = (train_x, train_x[:, :, ::-1], train_x[:, ::-1], train_x[:, ::-1, ::-1])
    fit_features = np.concatenate([served_outputs(model, processing, view)[1] for view in views])
    _, calibration_features = served_outputs(model, processing, calibration_x)
    return calibrate(fit_features, calibration_features, percentile)


def reference_rows(model: torch.nn.Module, processing: Processing, novelty: NoveltyModel,
                   x: np.ndarray) -> list[dict]:
    """What serving would have recorded for these frames: the drift reference of this version."""
    logits, scores = served_outputs(model, processing, x, novelty)
    qualities = quality_features_batch(x)
    return [{**quality, "label": d.label, "confidence": d.confidence, "novelty": d.novelty,
             "unfamiliar": d.unfamiliar}
            for quality, d in zip(qualities, processing.decide(logits, scores), strict=True)]


def finish(model: torch.nn.Module, processing: Processing, splits: dict[str, SplitArrays],
           percentile: float, reviewed_share: float = 0.0) -> tuple[NoveltyModel, list[dict], dict[str, dict]]:
    """After the last epoch: batch-norm statistics (over frames mixed as the batches were), novelty
    calibration, the drift reference (held-out frames) and the metrics on every held-out named set."""
    train_x = splits["train"].x
    recalibrate_batchnorm(model, processing, train_x, reviewed=splits["train"].reviewed,
                          reviewed_share=reviewed_share)
    novelty = calibrate_novelty(model, processing, train_x, splits["calibration"].x, percentile)
    reference = reference_rows(model, processing, novelty, splits["holdout"].x)
    evaluations: dict[str, dict] = {name: evaluate(model, processing, splits[name].x, splits[name].y)
                                    for name in ("holdout", "reviewed_holdout")
                                    if name in splits and len(splits[name].y)}
    return novelty, reference, evaluations


def train(config: TrainingConfig, progress: Callable[[dict], None] | None = None) -> TrainingResult:
    """Train on frames generated from `config` (what `sightline model bootstrap` runs); `progress` is
    called after every epoch."""
    started = time.monotonic()
    processing = Processing(classes=tuple(config.classes), input_size=config.input_size)
    splits = generated_splits(config.base_set(), processing)
    generate_s = time.monotonic() - started

    def on_epoch(report: dict, _: Callable[[], EpochCheckpoint]) -> None:
        if progress is not None:
            progress({k: report[k] for k in ("epoch", "epochs", "step", "loss", "accuracy", "elapsed_s")})

    outcome = fit(splits["train"].x, splits["train"].y, processing, config.fit_params(), on_epoch=on_epoch)
    model = outcome.model
    novelty, reference, evaluations = finish(model, processing, splits, config.novelty_percentile)
    held_out = evaluations["holdout"]
    metrics = {
        "held_out_accuracy": held_out["accuracy"],
        "held_out_per_class_accuracy": held_out["per_class_accuracy"],
        "held_out_frames": held_out["frames"],
        "train_frames": len(splits["train"].y),
        "final_loss": outcome.final_loss,
        "steps": outcome.steps,
        "stopped_early": outcome.stopped_early,
        "generate_seconds": round(generate_s, 1),
        "train_seconds": round(time.monotonic() - started - generate_s, 1),
        "sets": evaluations,
    }
    return TrainingResult(model, processing, config.architecture, metrics, config.snapshot_id(), config.to_dict(),
                          novelty, reference)
