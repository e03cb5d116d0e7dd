"""Redaction of a frame before it is stored: faces blurred, configured regions blurred or filled.

One implementation for every place a frame enters Sightline (the API's accept path, the edge agent), so
a camera's frames are redacted the same way wherever they come in. The input is the frame's bytes as
received (JPEG or PNG; WebP too, through vision.decode) and a settings revision; the output is JPEG
bytes and what ran. The frame is decoded once (vision.decode, the project's one decoder, with its pixel
bound), the pixels are changed where the settings say, and the result is encoded once.

Faces: OpenCV's Haar cascade that ships inside opencv-python-headless (no download), run on a grey copy
scaled so its longer side is at most DETECT_MAX_SIDE (about 8x less work on a 1280x720 frame; faces
smaller than MIN_FACE_PX at that scale are missed, about 36 px in a 1280 px wide frame). Each face box
is grown by FACE_MARGIN on every side (the cascade's box is tight around eyes and mouth) and blurred.

Blur is irreversible on purpose: the area is scaled down until its shorter side is BLUR_CELLS pixels and
back up with smoothing, so no detail finer than a cell survives (a Gaussian alone of a moderate radius
can be partly undone by deconvolution). Fill paints the area black.

Only the redacted areas change: the other pixels are the decoded input's, composited untouched, so the
only drift outside them is the one JPEG encode (at ENCODE_QUALITY with 4:2:0 chroma, what cameras
send: on data.astronaut() a mean of 0.45 grey levels, 99% of pixels within 4). The encode is
deterministic for given pixels, so the same bytes under the same revision give the same output.

Leaf module: numpy, OpenCV, simplejpeg and vision.decode only; never Temporal, Ray or FastAPI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import simplejpeg

from vision.decode import DEFAULT_MAX_PIXELS, decode_frame

MODES = ("blur", "fill")
ENCODE_QUALITY = 90
DETECT_MAX_SIDE = 480
MIN_FACE_PX = 20  # at the detection scale
FACE_MARGIN = 0.15  # of the face box's size, added on each side
BLUR_CELLS = 8
MIN_POLYGON_POINTS = 3
MAX_POLYGON_POINTS = 64
MAX_REGIONS = 32
_CASCADE_FILE = "haarcascade_frontalface_default.xml"
_FILL = (0, 0, 0)


class InvalidRegion(ValueError):
    """A region the settings cannot hold: the message names what is wrong."""


@dataclass(frozen=True)
class Region:
    """An area of the frame in relative coordinates (0..1 of its width and height): a polygon of at least
    three points; a rectangle is its four corners (`Region.rect`)."""

    mode: str
    polygon: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidRegion(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if not MIN_POLYGON_POINTS <= len(self.polygon) <= MAX_POLYGON_POINTS:
            raise InvalidRegion(f"a polygon has {MIN_POLYGON_POINTS}-{MAX_POLYGON_POINTS} points, not "
                                f"{len(self.polygon)}")
        for x, y in self.polygon:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise InvalidRegion(f"point ({x}, {y}) is outside the frame: coordinates are relative, 0..1")

    @classmethod
    def rect(cls, x0: float, y0: float, x1: float, y1: float, mode: str = "blur") -> Region:
        if not (x0 < x1 and y0 < y1):
            raise InvalidRegion(f"rectangle ({x0}, {y0}, {x1}, {y1}) needs x0 < x1 and y0 < y1")
        return cls(mode, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Region:
        """{"mode": ..., "rect": [x0, y0, x1, y1]} or {"mode": ..., "polygon": [[x, y], ...]}."""
        mode = str(value.get("mode", ""))
        if value.get("rect") is not None:
            x0, y0, x1, y1 = (float(v) for v in value["rect"])
            return cls.rect(x0, y0, x1, y1, mode)
        points = value.get("polygon")
        if not points:
            raise InvalidRegion("a region has a `rect` or a `polygon`")
        return cls(mode, tuple((float(x), float(y)) for x, y in points))

    def pixel_points(self, width: int, height: int) -> np.ndarray:
        return np.array([[round(x * width), round(y * height)] for x, y in self.polygon], np.int32)


@dataclass(frozen=True)
class RedactionSettings:
    """A camera's (or a site's default) privacy settings as of one revision. Revisions are immutable:
    a frame redacted under revision N was redacted exactly as N says."""

    revision: int
    faces: bool = False
    regions: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        if len(self.regions) > MAX_REGIONS:
            raise InvalidRegion(f"at most {MAX_REGIONS} regions, not {len(self.regions)}")

    @property
    def active(self) -> bool:
        """Whether frames under these settings change at all (a revision that turns everything off
        stores frames as received, byte for byte)."""
        return self.faces or bool(self.regions)

    @classmethod
    def from_json(cls, revision: int, faces: bool, regions: Iterable[Mapping[str, Any]]) -> RedactionSettings:
        return cls(revision, bool(faces), tuple(Region.from_json(r) for r in regions))


@dataclass(frozen=True)
class Redacted:
    """The redacted frame (JPEG) and what ran on it."""

    data: bytes
    revision: int
    width: int
    height: int
    faces: tuple[tuple[int, int, int, int], ...] = ()  # x, y, w, h in pixels, after the margin
    regions: int = 0
    elapsed_ms: float = 0.0
    content_type: str = field(default="image/jpeg")

    def summary(self) -> dict[str, Any]:
        """What ran, without any pixel: the revision and how many faces and regions were redacted."""
        return {"revision": self.revision, "faces": len(self.faces), "regions": self.regions}


_local = threading.local()


def _cascade() -> cv2.CascadeClassifier:
    """One classifier per thread: OpenCV does not promise detectMultiScale is safe to share."""
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE_FILE)  # type: ignore[attr-defined]
        if cascade.empty():
            raise RuntimeError(f"OpenCV's {_CASCADE_FILE} did not load from {cv2.data.haarcascades}")  # type: ignore[attr-defined]
        _local.cascade = cascade
    return cascade


def detect_faces(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Faces in RGB pixels, as (x, y, w, h) boxes in those pixels' coordinates, margin included."""
    height, width = pixels.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    found = _cascade().detectMultiScale(grey, scaleFactor=1.2, minNeighbors=5, minSize=(MIN_FACE_PX, MIN_FACE_PX))
    boxes = []
    for x, y, w, h in (found if len(found) else []):
        x, y, w, h = (v / scale for v in (x, y, w, h))
        mx, my = w * FACE_MARGIN, h * FACE_MARGIN
        x0, y0 = max(0, int(x - mx)), max(0, int(y - my))
        x1, y1 = min(width, int(np.ceil(x + w + mx))), min(height, int(np.ceil(y + h + my)))
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1 - x0, y1 - y0))
    return boxes


def _blurred(area: np.ndarray) -> np.ndarray:
    """The area with no detail finer than 1/BLUR_CELLS of its shorter side left."""
    h, w = area.shape[:2]
    step = max(1.0, min(h, w) / BLUR_CELLS)
    small = cv2.resize(area, (max(1, round(w / step)), max(1, round(h / step))), interpolation=cv2.INTER_AREA)
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    k = max(3, int(step) | 1)
    return cv2.GaussianBlur(up, (k, k), 0)


def _apply_mask(pixels: np.ndarray, polygon: np.ndarray, mode: str) -> None:
    """Blur or fill the polygon (pixel coordinates) in place; only pixels inside it change."""
    height, width = pixels.shape[:2]
    x, y, w, h = cv2.boundingRect(polygon)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [polygon - np.array([x0, y0], np.int32)], 255)
    inside = mask.astype(bool)
    area = pixels[y0:y1, x0:x1]
    if mode == "fill":
        area[inside] = _FILL
    else:
        area[inside] = _blurred(area)[inside]


def redact_pixels(pixels: np.ndarray, settings: RedactionSettings) -> tuple[tuple[int, int, int, int], ...]:
    """Redact uint8 RGB pixels in place; the face boxes that were blurred. Faces are found on the frame as
    it came (a region filled first could hide a face from the detector, never reveal one)."""
    height, width = pixels.shape[:2]
    faces = tuple(detect_faces(pixels)) if settings.faces else ()
    for x, y, w, h in faces:  # fillPoly includes its corners: the last pixel of the box is x + w - 1
        _apply_mask(pixels, np.array([[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]], np.int32),
                    "blur")
    for region in settings.regions:
        _apply_mask(pixels, region.pixel_points(width, height), region.mode)
    return faces


def encode_jpeg(pixels: np.ndarray) -> bytes:
    return bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=ENCODE_QUALITY, colorspace="RGB",
                                        colorsubsampling="420"))


def redact(data: bytes, settings: RedactionSettings, max_pixels: int = DEFAULT_MAX_PIXELS) -> Redacted:
    """The frame redacted under `settings`, as JPEG bytes, and what ran. vision.decode.FrameRejected when
    the bytes are not a frame it can decode (then nothing of it may be stored: the caller refuses it)."""
    started = time.perf_counter()
    frame = decode_frame(data, max_pixels)
    pixels = frame.pixels if frame.pixels.flags.writeable else frame.pixels.copy()
    faces = redact_pixels(pixels, settings)
    out = encode_jpeg(pixels)
    return Redacted(out, settings.revision, frame.width, frame.height, faces, len(settings.regions),
                    round((time.perf_counter() - started) * 1000, 2))


def redact_many(frames: Sequence[bytes], settings: RedactionSettings,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Redacted]:
    """Every frame of a batch, in order (one thread hand-off for the batch, not one per frame)."""
    return [redact(data, settings, max_pixels) for data in frames]
