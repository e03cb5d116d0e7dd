"""Camera health: is a camera still seeing what it saw when it was calibrated?

Pure numbers, judged once per classified chunk from aggregates Postgres computes over the chunk's
frames (infra.tables.camera_health): no loop over frames here. Three metrics are derived from the
preprocessor's quality features (vision.quality) so that each moves for one fault only:

- `brightness`: a dark sensor (or a dead light) lowers it, a saturated one raises it;
- `rel_contrast`, contrast over brightness: fog or glare on the lens washes it out, and it does not move
  when the scene only gets darker (both scale together);
- `rel_sharpness`, the Laplacian's variance over contrast squared: a blurred or dirty lens lowers it, sensor
  noise raises it, and a darker scene leaves it where it was.

Each camera is calibrated on its own first frames, not on the model's training reference: cameras differ
(one line's belt is darker, one lens is set a little softer), and a band wide enough for every camera the
model was trained on would miss one camera's lens fogging over, while a narrow one would flag a camera
that is merely different. What an operator expects is "as it was when it was installed": so the camera's
first `calibration_frames` accepted frames set its bands (mean +- `tolerance` standard deviations of a
single frame), and after maintenance or a deliberate change an operator recalibrates it.

A chunk is judged by a moving average over the last few frames (`window_frames`), so one odd frame or a
batch of one frame cut by a camera stream's timer does not flap the state, and a whole batch of degraded
frames does. A frozen camera is one whose last `frozen_frames` accepted frames had the same sha256: the
run is carried from chunk to chunk, so it is found across batches of any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

METRICS = ("brightness", "rel_contrast", "rel_sharpness")
# (metric, side) -> the reason a camera is degraded when its recent average leaves the band on that side.
REASONS = {
    ("brightness", "low"): "dark",
    ("brightness", "high"): "saturated",
    ("rel_contrast", "low"): "low_contrast",
    ("rel_sharpness", "low"): "blurred",
    ("rel_sharpness", "high"): "noisy",
}
FROZEN = "frozen"
ALL_REASONS = (*REASONS.values(), FROZEN)

CALIBRATING, HEALTHY, DEGRADED = "calibrating", "healthy", "degraded"
DEGRADED_EVENT, RECOVERED_EVENT = "camera.degraded", "camera.recovered"

# A band is never narrower than this share of its mean either side: a camera calibrated on a scene that
# hardly changes would otherwise be flagged for a cloud passing over the skylight.
MIN_RELATIVE_HALF_WIDTH = 0.10


@dataclass(frozen=True)
class HealthPolicy:
    calibration_frames: int = 64
    tolerance: float = 3.0  # band half-width, in standard deviations of one calibration frame
    window_frames: int = 8  # the moving average's span, in frames
    frozen_frames: int = 8  # this many identical frames in a row: frozen


@dataclass
class Moments:
    """Count, sum and sum of squares of one metric: merged by adding, so chunks combine exactly."""

    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None) -> Moments:
        d = d or {}
        return cls(int(d.get("n") or 0), float(d.get("sum") or 0.0), float(d.get("sumsq") or 0.0))

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "sum": round(self.sum, 6), "sumsq": round(self.sumsq, 6)}

    def plus(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.sum + other.sum, self.sumsq + other.sumsq)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else 0.0

    @property
    def std(self) -> float:
        if self.n < 2:
            return 0.0
        return math.sqrt(max(0.0, (self.sumsq - self.sum * self.sum / self.n) / (self.n - 1)))


@dataclass(frozen=True)
class Band:
    low: float
    high: float
    mean: float


def band(moments: Moments, tolerance: float) -> Band:
    half = max(tolerance * moments.std, MIN_RELATIVE_HALF_WIDTH * abs(moments.mean))
    return Band(moments.mean - half, moments.mean + half, moments.mean)


def bands(calibration: dict[str, Moments], tolerance: float) -> dict[str, Band]:
    return {metric: band(m, tolerance) for metric, m in calibration.items() if m.n >= 2}


@dataclass
class ChunkStats:
    """What Postgres aggregated over a chunk's accepted frames, in position order."""

    frames: int
    metrics: dict[str, Moments]
    leading_sha256: str = ""
    leading_run: int = 0
    trailing_sha256: str = ""
    trailing_run: int = 0
    single_run: bool = False
    longest_run: int = 0


@dataclass
class CameraState:
    state: str = CALIBRATING
    reasons: list[str] = field(default_factory=list)
    announced: str = HEALTHY
    calibration: dict[str, Moments] = field(default_factory=dict)
    calibrated: bool = False
    recent: dict[str, float] = field(default_factory=dict)
    last_sha256: str = ""
    repeated_frames: int = 0


@dataclass
class Judgement:
    camera: CameraState
    # The webhook this chunk raises (camera.degraded / camera.recovered), only when the announced state moves.
    event: str | None
    state_changed: bool
    just_calibrated: bool


def _calibrated_frames(calibration: dict[str, Moments]) -> int:
    return min((calibration.get(metric, Moments()).n for metric in METRICS), default=0)


def out_of_band(recent: dict[str, float], calibrated: dict[str, Band]) -> list[str]:
    reasons = []
    for (metric, side), reason in REASONS.items():
        value, b = recent.get(metric), calibrated.get(metric)
        if value is None or b is None:
            continue
        if (side == "low" and value < b.low) or (side == "high" and value > b.high):
            reasons.append(reason)
    return reasons


def judge(before: CameraState, chunk: ChunkStats, policy: HealthPolicy) -> Judgement:
    """The camera after one chunk: its state and reasons, and what (if anything) to announce."""
    after = CameraState(announced=before.announced, calibration=dict(before.calibration),
                        calibrated=before.calibrated, recent=dict(before.recent),
                        last_sha256=before.last_sha256, repeated_frames=before.repeated_frames)

    # Frozen: the run of identical frames the camera ends this chunk with, carried over from the last.
    if chunk.trailing_sha256:
        carried = before.repeated_frames if chunk.leading_sha256 == before.last_sha256 else 0
        after.last_sha256 = chunk.trailing_sha256
        after.repeated_frames = chunk.trailing_run + (carried if chunk.single_run else 0)
    frozen = after.repeated_frames >= policy.frozen_frames
    # A run that long anywhere in the chunk: its frames tell nothing about the camera's range.
    stuck = frozen or chunk.longest_run >= policy.frozen_frames

    just_calibrated = False
    was_calibrated = before.calibrated
    if not before.calibrated:
        if not stuck:
            after.calibration = {metric: after.calibration.get(metric, Moments()).plus(chunk.metrics[metric])
                                 for metric in METRICS if metric in chunk.metrics}
        if _calibrated_frames(after.calibration) >= policy.calibration_frames:
            after.calibrated = just_calibrated = True
            after.recent = {metric: m.mean for metric, m in after.calibration.items() if m.n}
    else:
        # An average over about `window_frames` frames: a chunk of n frames weighs 1 - (1 - 1/w)^n.
        keep = 1.0 - 1.0 / max(1, policy.window_frames)
        for metric, m in chunk.metrics.items():
            if not m.n:
                continue
            weight = 1.0 - keep ** m.n
            previous = after.recent.get(metric, m.mean)
            after.recent[metric] = round(previous * (1 - weight) + m.mean * weight, 6)

    reasons = [FROZEN] if frozen else []
    if was_calibrated:
        reasons += out_of_band(after.recent, bands(after.calibration, policy.tolerance))
    after.reasons = reasons
    after.state = DEGRADED if reasons else (HEALTHY if after.calibrated else CALIBRATING)

    event = None
    if after.state == DEGRADED and before.announced != DEGRADED:
        event, after.announced = DEGRADED_EVENT, DEGRADED
    elif after.state == HEALTHY and before.announced == DEGRADED:
        event, after.announced = RECOVERED_EVENT, HEALTHY
    return Judgement(after, event, after.state != before.state, just_calibrated)
