"""Training a classifier on generated camera frames, on the CPU, within a time budget.

The training pixels go through `Processing.resize` and `PixelInput`, the resize the Serve preprocessor
uses and the normalisation the served model carries in its graph, so training and serving cannot
disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from vision.camera import CLASSES, NORMAL, Conditions, GeneratedFrame, generate_frames
from vision.model import DEFAULT_ARCHITECTURE, PixelInput, build_model
from vision.processing import Processing


@dataclass
class TrainingConfig:
    architecture: str = DEFAULT_ARCHITECTURE
    input_size: int = 128
    train_frames: int = 3200
    eval_frames: int = 800
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 4e-3
    seed: int = 0
    camera_id: str = "train-line"
    # Stop early (and report it) rather than run past this; None: no limit.
    time_budget_s: float | None = None
    classes: tuple[str, ...] = CLASSES
    conditions: Conditions = NORMAL

    def snapshot_id(self) -> str:
        """Names the generated dataset: the same config always names the same frames."""
        desc = {"camera_id": self.camera_id, "seed": self.seed, "train_frames": self.train_frames,
                "classes": list(self.classes), "conditions": self.conditions.as_dict()}
        digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]
        return f"generated-{digest}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["conditions"] = self.conditions.as_dict()
        return d


# Named configurations for the bootstrap of version 1 (settings.bootstrap_profile). "tiny" trains a
# 64 px model in well under a minute: for CI and smoke tests of the whole stack, not for real cameras.
PROFILES = {
    "standard": TrainingConfig(time_budget_s=270.0),
    "tiny": TrainingConfig(input_size=64, train_frames=960, eval_frames=160, epochs=8, batch_size=32,
                           learning_rate=2e-3, seed=7, camera_id="test-train"),
}


@dataclass
class TrainingResult:
    model: torch.nn.Module
    processing: Processing
    architecture: str
    metrics: dict
    dataset_snapshot_id: str
    config: dict = field(default_factory=dict)


def frames_to_arrays(frames: list[GeneratedFrame], processing: Processing) -> tuple[np.ndarray, np.ndarray]:
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
def _recalibrate_batchnorm(model: torch.nn.Module, processing: Processing, x: np.ndarray, frames: int = 1024) -> None:
    """Recompute BN running statistics as a plain average over training frames with the final
    weights, so evaluation and serving see statistics that match the weights they run with."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    pixel_input = PixelInput(processing)
    for i in range(0, min(frames, len(x)), 128):
        model(model_inputs(pixel_input, x[i : i + 128]))
    model.eval()


def train(config: TrainingConfig, progress: Callable[[dict], None] | None = None) -> TrainingResult:
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rng = np.random.default_rng(config.seed)
    processing = Processing(classes=tuple(config.classes), input_size=config.input_size)
    started = time.monotonic()

    train_x, train_y = frames_to_arrays(
        generate_frames(config.camera_id, config.train_frames, config.seed, config.conditions, config.classes),
        processing)
    # Held out: another camera id and seed, so no frame can appear in both sets.
    eval_x, eval_y = frames_to_arrays(
        generate_frames(f"{config.camera_id}-holdout", config.eval_frames, config.seed + 10_000, NORMAL,
                        config.classes),
        processing)
    generate_s = time.monotonic() - started

    model = build_model(config.architecture, len(config.classes))
    for m in model.modules():
        # torchvision's MobileNetV3 uses BN momentum 0.01, tuned for long ImageNet runs: its running
        # statistics would lag far behind a few hundred steps. 0.1 keeps them current.
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    steps_per_epoch = max(1, len(train_x) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=total_steps,
                                                   pct_start=0.2)

    pixel_input = PixelInput(processing)
    step, stopped_early, loss_value = 0, False, float("nan")
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(train_x))
        for b in range(steps_per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            xb = train_x[idx]
            # Flips keep the label (a scratch is a scratch either way up) and double the variety.
            if rng.random() < 0.5:
                xb = xb[:, :, ::-1]
            if rng.random() < 0.5:
                xb = xb[:, ::-1]
            inputs = model_inputs(pixel_input, xb)
            loss = torch.nn.functional.cross_entropy(model(inputs), torch.from_numpy(train_y[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_value = loss.item()
            if config.time_budget_s is not None and time.monotonic() - started > config.time_budget_s:
                stopped_early = True
                break
        if progress:
            progress({"epoch": epoch + 1, "epochs": config.epochs, "step": step, "loss": round(loss_value, 4),
                      "elapsed_s": round(time.monotonic() - started, 1)})
        if stopped_early:
            break

    _recalibrate_batchnorm(model, processing, train_x)
    model.eval()
    held_out = evaluate(model, processing, eval_x, eval_y)
    metrics = {
        "held_out_accuracy": held_out["accuracy"],
        "held_out_per_class_accuracy": held_out["per_class_accuracy"],
        "held_out_frames": held_out["frames"],
        "train_frames": len(train_x),
        "final_loss": round(loss_value, 4),
        "steps": step,
        "stopped_early": stopped_early,
        "generate_seconds": round(generate_s, 1),
        "train_seconds": round(time.monotonic() - started - generate_s, 1),
    }
    return TrainingResult(model, processing, config.architecture, metrics, config.snapshot_id(), config.to_dict())
