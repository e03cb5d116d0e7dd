"""A generated inspection-line camera: products on a conveyor, some with defects, made on the spot.

Nothing is downloaded or shipped: every frame is drawn from a seed, so the same camera id, seed and
conditions always give the same frames. `Conditions` are the knobs later issues turn to cause drift on
purpose (a darker line, a dirty lens, a shifted camera, a new supplier whose defects look different).
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vision.boxes import Box

CLASSES: tuple[str, ...] = ("ok", "scratch", "dent", "stain")
FRAME_SIZE = 160  # pixels a side; the model resizes to its own input size


@dataclass(frozen=True)
class Conditions:
    brightness: float = 1.0  # multiplies every pixel; 0.6 is a dim line
    blur: float = 0.0  # Gaussian radius in pixels: an out-of-focus lens
    noise: float = 0.0  # std of additive sensor noise, in 0..255 units
    viewpoint_shift: float = 0.0  # 0..1: how far the part drifts off-centre and rotates
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel sensor gain (white balance)
    defect_style: str = "standard"  # "standard" or "changed": defects drawn a different way

    def __post_init__(self) -> None:
        if self.brightness <= 0:
            raise ValueError("brightness must be > 0")
        if self.blur < 0 or self.noise < 0 or not 0 <= self.viewpoint_shift <= 1:
            raise ValueError("blur and noise must be >= 0, viewpoint_shift within 0..1")
        if len(self.tint) != 3 or min(self.tint) <= 0:
            raise ValueError("tint must be three positive channel gains")
        if self.defect_style not in ("standard", "changed"):
            raise ValueError("defect_style must be 'standard' or 'changed'")

    def as_dict(self) -> dict:
        return {**asdict(self), "tint": list(self.tint)}


NORMAL = Conditions()


@dataclass
class GeneratedFrame:
    camera_id: str
    index: int
    label: str
    image: Image.Image  # RGB
    conditions: Conditions = field(default=NORMAL)
    # Where the drawn defect is (vision.boxes, relative corners): none on an "ok" frame.
    boxes: tuple[Box, ...] = ()

    def jpeg(self, quality: int = 90) -> bytes:
        return encode_jpeg(self.image, quality)


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _frame_seed(camera_id: str, seed: int, index: int) -> int:
    # Stable across processes (unlike hash()), and distinct per camera, seed and frame.
    digest = hashlib.sha256(f"{camera_id}/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _conveyor(rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    """A dark belt with faint horizontal ribs and grain."""
    base = rng.uniform(45, 70)
    rows = np.arange(size, dtype=np.float32)[:, None]
    ribs = 6 * np.sin(rows * 2 * math.pi / rng.uniform(9, 14) + rng.uniform(0, 6.3))
    grain = nrng.normal(0, 3, (size, size)).astype(np.float32)
    belt = base + ribs + grain
    return np.repeat(belt[:, :, None], 3, axis=2) * np.array([1.0, 1.0, 1.05], dtype=np.float32)


def _part_mask(rng: random.Random, size: int, shift: float) -> tuple[Image.Image, tuple[float, float, float]]:
    """The outline of one part: a rounded plate, a disc or a hexagon nut, placed near the centre."""
    c = size / 2
    cx = c + rng.uniform(-1, 1) * (4 + shift * size * 0.18)
    cy = c + rng.uniform(-1, 1) * (4 + shift * size * 0.18)
    r = size * rng.uniform(0.30, 0.36)
    angle = rng.uniform(-0.15, 0.15) + rng.uniform(-1, 1) * shift * 0.9
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    shape = rng.choice(("plate", "disc", "hex"))
    if shape == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        sides, stretch = (4, 1.25) if shape == "plate" else (6, 1.0)
        pts = []
        for k in range(sides):
            a = angle + math.pi / sides + k * 2 * math.pi / sides
            pts.append((cx + r * stretch * math.cos(a), cy + r * math.sin(a)))
        draw.polygon(pts, fill=255)
    # A bore hole in the middle: parts are not plain blobs.
    hole = r * rng.uniform(0.12, 0.2)
    draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=0)
    return mask, (cx, cy, r)


def _surface(rng: random.Random, nrng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed metal: a base grey-blue tone with directional streaks."""
    tone = np.array([rng.uniform(150, 185), rng.uniform(155, 190), rng.uniform(165, 200)], dtype=np.float32)
    streak = nrng.normal(0, 1, (size, 1)).astype(np.float32)
    streak = np.repeat(streak, size, axis=1)
    streak_image = Image.fromarray(((streak * 20) + 128).clip(0, 255).astype(np.uint8))
    streak = np.array(streak_image.filter(ImageFilter.BoxBlur(1)), np.float32) - 128
    if rng.random() < 0.5:
        streak = streak.T
    shade = np.linspace(-10, 10, size, dtype=np.float32)[None, :] * rng.choice((-1, 1))
    return tone[None, None, :] + (streak * 0.5 + shade)[:, :, None]


def _random_point_in(rng: random.Random, cx: float, cy: float, r: float, frac: float = 0.6) -> tuple[float, float]:
    a = rng.uniform(0, 2 * math.pi)
    d = r * rng.uniform(0.25, frac)
    return cx + d * math.cos(a), cy + d * math.sin(a)


def _draw_scratch(img: np.ndarray, rng: random.Random, geo, style: str) -> np.ndarray:
    cx, cy, r = geo
    layer = Image.new("L", img.shape[:2][::-1], 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(1, 2)):
        x0, y0 = _random_point_in(rng, cx, cy, r)
        a = rng.uniform(0, math.pi)
        length = r * rng.uniform(0.8, 1.3)
        if style == "changed":
            # A new supplier: short, dense, wavy scuffs instead of long straight scratches.
            pts = [(x0 + t * length * 0.5 * math.cos(a) + 3 * math.sin(t * 12), y0 + t * length * 0.5 * math.sin(a))
                   for t in np.linspace(-1, 1, 16)]
            draw.line(pts, fill=255, width=2)
        else:
            draw.line([(x0 - length / 2 * math.cos(a), y0 - length / 2 * math.sin(a)),
                       (x0 + length / 2 * math.cos(a), y0 + length / 2 * math.sin(a))],
                      fill=255, width=rng.choice((2, 3)))
    m = np.asarray(layer, np.float32)[:, :, None] / 255
    colour = 235.0 if style == "standard" else 70.0  # bright groove vs a dark scuff
    img[:] = img * (1 - m) + colour * m
    return m[:, :, 0]


def _draw_dent(img: np.ndarray, rng: random.Random, geo, style: str) -> np.ndarray:
    cx, cy, r = geo
    x0, y0 = _random_point_in(rng, cx, cy, r, 0.5)
    rad = r * rng.uniform(0.28, 0.4)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = (xx - x0) / rad, (yy - y0) / rad
    d2 = dx * dx + dy * dy
    inside = np.clip(1 - d2, 0, 1)
    # A dent is a shading pattern: lit on one rim, shadowed on the other, like light on a crater.
    a = rng.uniform(0, 2 * math.pi)
    relief = (dx * math.cos(a) + dy * math.sin(a)) * inside * (110 if style == "standard" else 45)
    if style == "changed":
        relief = relief - 45 * inside  # a deeper, darker dent with less relief
    img[:] = img + relief[:, :, None]
    return inside


def _draw_stain(img: np.ndarray, rng: random.Random, geo, style: str) -> np.ndarray:
    cx, cy, r = geo
    layer = Image.new("L", img.shape[:2][::-1], 0)
    draw = ImageDraw.Draw(layer)
    x0, y0 = _random_point_in(rng, cx, cy, r, 0.5)
    for _ in range(rng.randint(3, 6)):
        rr = r * rng.uniform(0.12, 0.24)
        ox, oy = x0 + rng.uniform(-rr, rr), y0 + rng.uniform(-rr, rr)
        draw.ellipse([ox - rr, oy - rr, ox + rr, oy + rr], fill=255)
    layer = layer.filter(ImageFilter.GaussianBlur(2))
    m = np.asarray(layer, np.float32)[:, :, None] / 255
    colour = np.array([110, 80, 40] if style == "standard" else [40, 90, 120], np.float32)  # oil vs coolant
    img[:] = img * (1 - 0.75 * m) + colour * 0.75 * m
    return m[:, :, 0]


_DEFECTS = {"scratch": _draw_scratch, "dent": _draw_dent, "stain": _draw_stain}


# A defect's box covers the pixels where its mark is at least this strong and the part (not the belt)
# shows it; boxes are at least MIN_BOX_PX a side (as a reviewer would draw one round a hairline), so a
# thin straight scratch has a box whose IoU does not hinge on a pixel row or two.
_VISIBLE = 0.2
MIN_BOX_PX = 12


def _box_of(influence: np.ndarray, part: np.ndarray, label: str, size: int) -> Box | None:
    """The box around the visible part of a defect's mark, in relative corners; None when none shows."""
    ys, xs = np.nonzero((influence >= _VISIBLE) & (part >= 0.5))
    if len(xs) == 0:
        return None
    x0, x1 = float(xs.min()), float(xs.max() + 1)
    y0, y1 = float(ys.min()), float(ys.max() + 1)
    if x1 - x0 < MIN_BOX_PX:
        mid = (x0 + x1) / 2
        x0, x1 = max(0.0, mid - MIN_BOX_PX / 2), min(float(size), mid + MIN_BOX_PX / 2)
    if y1 - y0 < MIN_BOX_PX:
        mid = (y0 + y1) / 2
        y0, y1 = max(0.0, mid - MIN_BOX_PX / 2), min(float(size), mid + MIN_BOX_PX / 2)
    return Box(round(x0 / size, 5), round(y0 / size, 5), round(x1 / size, 5), round(y1 / size, 5), label)


def render_frame_with_boxes(label: str, frame_seed: int, conditions: Conditions = NORMAL,
                            size: int = FRAME_SIZE) -> tuple[Image.Image, tuple[Box, ...]]:
    """The frame and the boxes of the defects drawn on it (one per defect; none for "ok"). The boxes
    come from the same draw as the pixels, so adding them changed no pixel of any seed's frame."""
    rng = random.Random(frame_seed)
    nrng = np.random.default_rng(frame_seed)
    img = _conveyor(rng, nrng, size)
    mask, geo = _part_mask(rng, size, conditions.viewpoint_shift)
    part = _surface(rng, nrng, size)
    defect = _DEFECTS.get(label)
    influence = defect(part, rng, geo, conditions.defect_style) if defect is not None else None
    m = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.8)), np.float32)[:, :, None] / 255
    img = img * (1 - m) + part * m
    # Lighting varies a little frame to frame even on a healthy line.
    img = img * rng.uniform(0.92, 1.08) * conditions.brightness * np.array(conditions.tint, np.float32)
    if conditions.noise > 0:
        img = img + nrng.normal(0, conditions.noise, img.shape).astype(np.float32)
    out = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    if conditions.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(conditions.blur))
    box = _box_of(influence, m[:, :, 0], label, size) if influence is not None else None
    return out, (box,) if box is not None else ()


def render_frame(label: str, frame_seed: int, conditions: Conditions = NORMAL, size: int = FRAME_SIZE) -> Image.Image:
    return render_frame_with_boxes(label, frame_seed, conditions, size)[0]


def generate_frames(
    camera_id: str,
    count: int,
    seed: int = 0,
    conditions: Conditions = NORMAL,
    classes: tuple[str, ...] = CLASSES,
    size: int = FRAME_SIZE,
    start: int = 0,
) -> list[GeneratedFrame]:
    """`count` frames, classes drawn evenly from a hash of (camera, seed, index): deterministic."""
    frames = []
    for index in range(start, start + count):
        fseed = _frame_seed(camera_id, seed, index)
        label = classes[fseed % len(classes)]
        image, boxes = render_frame_with_boxes(label, fseed, conditions, size)
        frames.append(GeneratedFrame(camera_id, index, label, image, conditions, boxes))
    return frames


def write_frames(frames: list[GeneratedFrame], out: Path, quality: int = 90) -> Path:
    """JPEG files plus labels.csv (filename,label) in `out`; returns the labels file."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["filename,label,camera_id,index"]
    for f in frames:
        name = f"{f.camera_id}-{f.index:06d}.jpg"
        (out / name).write_bytes(f.jpeg(quality))
        lines.append(f"{name},{f.label},{f.camera_id},{f.index}")
    labels = out / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return labels
