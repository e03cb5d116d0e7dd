"""Training configurations, without the training code (and without torch): what the API, the drift
policy and the CLI need to name a profile's base set, and what vision.training runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from vision.camera import CLASSES, NORMAL, Conditions
from vision.datasets import BaseSetSpec
from vision.novelty import DEFAULT_PERCENTILE

DEFAULT_ARCHITECTURE = "mobilenet_v3_small"


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
    # Held-out frames that set the novelty threshold, and the percentile of their scores it sits at.
    calibration_frames: int = 2000
    novelty_percentile: float = DEFAULT_PERCENTILE

    def snapshot_id(self) -> str:
        """Names the generated dataset: the same config always names the same frames."""
        desc = {"camera_id": self.camera_id, "seed": self.seed, "train_frames": self.train_frames,
                "classes": list(self.classes), "conditions": self.conditions.as_dict()}
        digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]
        return f"generated-{digest}"

    def base_set(self) -> BaseSetSpec:
        return BaseSetSpec(self.camera_id, self.seed, self.train_frames, self.calibration_frames, self.eval_frames,
                           tuple(self.classes), self.conditions)

    def fit_params(self) -> FitParams:
        return FitParams(self.architecture, self.epochs, self.batch_size, self.learning_rate, self.seed,
                         self.time_budget_s)

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
                           learning_rate=2e-3, seed=7, camera_id="test-train", calibration_frames=1500),
    # Seconds, not minutes: for tests of the retraining machinery (snapshots, checkpoints, resume,
    # cancel), where what the model learns does not matter.
    "micro": TrainingConfig(input_size=32, train_frames=192, eval_frames=64, epochs=3, batch_size=32,
                            learning_rate=2e-3, seed=11, camera_id="micro-train", calibration_frames=300),
}


@dataclass
class FitParams:
    """The optimisation loop's knobs. `reviewed_share`: the share of every batch drawn from reviewed
    frames when the training split has any (they are few next to the generated base set, and they are
    what the camera sees now)."""

    architecture: str = DEFAULT_ARCHITECTURE
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 4e-3
    seed: int = 0
    time_budget_s: float | None = None
    reviewed_share: float = 0.0


