"""The detector: where a defect is, as boxes with a class and a score. Trained here from scratch
(no weights are downloaded).

A CenterNet-style head ("objects as points") on a small backbone: its stride-8 and stride-16 maps are
merged at stride 8, and per cell the head answers a heatmap per defect class (how likely a defect's
centre lies in the cell), the centre's offset inside the cell and the box's width and height. Decoding
(a 3x3 max-pool keeps the local peaks, then the top K) runs inside the graph, so the served ONNX answers
fixed-shape arrays per frame: `boxes` [N, K, 4] (relative corners, vision.boxes), `scores` [N, K],
`classes` [N, K], and, when calibrated, `novelty` [N]. What it reaches and in how long on the 2-core
build machine: README, "The detector".

Novelty is the classifier's mechanism (vision.novelty): the same feature vector (the input's colour
layout and the first stage's pooled maps, vision.model.frame_features) and the same in-graph head.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from vision.boxes import Box
from vision.model import NoveltyHead, PixelInput, frame_features
from vision.novelty import NoveltyModel
from vision.processing import Decision, Processing

DETECTION = "detection"
CLASSIFICATION = "classification"
TASKS = (CLASSIFICATION, DETECTION)
DETECTOR_ARCHITECTURE = "centernet_small"
STRIDE = 8
TOP_K = 8  # boxes answered per frame, before the score threshold: the generated camera draws one defect
# A reply keeps the boxes at or above this score: below it a peak is background noise, not a defect the
# routing would act on (routing's own thresholds are far above it).
MIN_SCORE = 0.05
_NECK = 64
_WIDTHS = (32, 64, 96)
EARLY_GRID_DETECTOR = 2  # the stem's maps are pooled to 2x2 for the novelty features


def _conv(inputs: int, outputs: int, stride: int = 1) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False),
                               torch.nn.BatchNorm2d(outputs), torch.nn.ReLU(inplace=True))


class CenterNetDetector(torch.nn.Module):
    """A small plain CNN (3x3 conv, batch norm, ReLU) whose stem folds 4x4 pixel blocks into channels
    (space-to-depth), an FPN-like merge of strides 8 and 16 at stride 8, and the three heads. Plain
    convolutions and no full-resolution layer: on these cores a training step costs about half of one
    through mobilenet_v3_small's first blocks (hard-swish, squeeze-excite), which measured 2.5 s against
    1.3 s for 32 frames at 128 px under the build machine's load."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.PixelUnshuffle(4), _conv(48, _WIDTHS[0]),
                                        _conv(_WIDTHS[0], _WIDTHS[0]))  # stride 4: what novelty measures
        self.stage8 = torch.nn.Sequential(_conv(_WIDTHS[0], _WIDTHS[1], 2), _conv(_WIDTHS[1], _WIDTHS[1]))
        self.stage16 = torch.nn.Sequential(_conv(_WIDTHS[1], _WIDTHS[2], 2), _conv(_WIDTHS[2], _WIDTHS[2]))
        self.lateral8 = torch.nn.Conv2d(_WIDTHS[1], _NECK, 1)
        self.lateral16 = torch.nn.Conv2d(_WIDTHS[2], _NECK, 1)
        self.neck = _conv(_NECK, _NECK)
        self.heatmap = torch.nn.Conv2d(_NECK, num_classes, 1)
        self.offset = torch.nn.Conv2d(_NECK, 2, 1)  # the centre inside its cell, 0..1 of a cell
        self.size = torch.nn.Conv2d(_NECK, 2, 1)  # width and height, in cells
        # A prior of 0.1 on every cell (CenterNet's): the focal loss does not start by drowning the few
        # centre cells under the many background ones.
        assert self.heatmap.bias is not None
        torch.nn.init.constant_(self.heatmap.bias, -2.19)

    def maps(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(heatmap logits, offsets, sizes, first-stage maps) of normalised NCHW inputs."""
        early = self.stem(inputs)
        c8 = self.stage8(early)
        c16 = self.stage16(c8)
        up = torch.nn.functional.interpolate(self.lateral16(c16), size=c8.shape[-2:], mode="nearest")
        merged = self.neck(self.lateral8(c8) + up)
        return self.heatmap(merged), self.offset(merged), self.size(merged), early

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, offset, size, _ = self.maps(inputs)
        return heat, offset, size


def build_detector(num_classes: int) -> CenterNetDetector:
    return CenterNetDetector(num_classes)


def load_detector(num_classes: int, weights: bytes) -> CenterNetDetector:
    model = build_detector(num_classes)
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval()


def decode(heat_logits: torch.Tensor, offset: torch.Tensor, size: torch.Tensor,
           top_k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The heads' maps -> (boxes [N, K, 4] relative corners, scores [N, K], classes [N, K] int64), best
    first. Traceable: the served graph runs exactly this."""
    n, c, gh, gw = heat_logits.shape
    heat = torch.sigmoid(heat_logits)
    peaks = heat * (torch.nn.functional.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    scores, index = peaks.reshape(n, c * gh * gw).topk(top_k, dim=1)
    classes = torch.div(index, gh * gw, rounding_mode="floor")
    cell = index - classes * (gh * gw)
    cy = torch.div(cell, gw, rounding_mode="floor")
    cx = cell - cy * gw
    offsets = offset.reshape(n, 2, gh * gw).gather(2, cell.unsqueeze(1).expand(n, 2, top_k))
    sizes = size.reshape(n, 2, gh * gw).gather(2, cell.unsqueeze(1).expand(n, 2, top_k)).clamp(min=0)
    centre_x = (cx.to(heat.dtype) + offsets[:, 0]) / gw
    centre_y = (cy.to(heat.dtype) + offsets[:, 1]) / gh
    half_w, half_h = sizes[:, 0] / (2 * gw), sizes[:, 1] / (2 * gh)
    boxes = torch.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], dim=2)
    return boxes.clamp(0.0, 1.0), scores, classes


class ServedDetector(torch.nn.Module):
    """PixelInput, the detector and its decoding; with a NoveltyModel also the frame's novelty (1.0 at
    the calibrated threshold), from the same pass: (boxes, scores, classes[, novelty])."""

    def __init__(self, detector: CenterNetDetector, processing: Processing, novelty: NoveltyModel | None = None,
                 top_k: int = TOP_K) -> None:
        super().__init__()
        self.pixel_input = PixelInput(processing)
        self.detector = detector
        self.novelty = NoveltyHead(novelty) if novelty is not None else None
        self.top_k = top_k

    def features(self, pixels: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        inputs = self.pixel_input(pixels)
        heat, offset, size, early = self.detector.maps(inputs)
        return decode(heat, offset, size, self.top_k), frame_features(inputs, early, EARLY_GRID_DETECTOR)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        (boxes, scores, classes), features = self.features(pixels)
        if self.novelty is None:
            return boxes, scores, classes
        return boxes, scores, classes, self.novelty(features)


def export_detector_onnx(detector: CenterNetDetector, processing: Processing,
                         novelty: NoveltyModel | None = None) -> bytes:
    """ONNX taking uint8 NHWC pixels with a dynamic batch axis, like the classifier's export; outputs
    `boxes`, `scores`, `classes`, and `novelty` when calibrated."""
    served = ServedDetector(detector.eval(), processing, novelty).eval()
    example = torch.zeros(2, processing.input_size, processing.input_size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    outputs = ["boxes", "scores", "classes", *(["novelty"] if novelty is not None else [])]
    program = torch.onnx.export(
        served, (example,), dynamo=True, input_names=["pixels"], output_names=outputs,
        dynamic_shapes=({0: batch},), external_data=False, verbose=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    return program.model_proto.SerializeToString()


def boxes_of(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, names: tuple[str, ...],
             min_score: float = MIN_SCORE) -> list[list[Box]]:
    """One frame's list of Box per row of the decoded outputs, scores rounded to 4 decimals, best first."""
    out = []
    for frame_boxes, frame_scores, frame_classes in zip(boxes, scores, classes, strict=True):
        kept = []
        for (x0, y0, x1, y1), score, k in zip(frame_boxes.tolist(), frame_scores.tolist(), frame_classes.tolist(),
                                              strict=True):
            if score < min_score or x1 <= x0 or y1 <= y0:
                continue
            kept.append(Box(round(x0, 4), round(y0, 4), round(x1, 4), round(y1, 4), names[int(k)],
                            round(float(score), 4)))
        out.append(kept)
    return out


# A frame's own answer from a detection version (the predictions table's label, the drift reference):
# its best box's class when that box scores at least this, else "ok".
FRAME_DEFECT_SCORE = 0.5
NO_DEFECT = "ok"


def frame_label(boxes: list[Box]) -> tuple[str, float]:
    """The frame's label and confidence from its boxes: the best box's class and score when it scores
    FRAME_DEFECT_SCORE or more, else "ok" at one minus the best score."""
    best = max(boxes, key=lambda b: b.score or 0.0, default=None)
    if best is not None and (best.score or 0.0) >= FRAME_DEFECT_SCORE:
        return best.label, float(best.score or 0.0)
    return NO_DEFECT, round(1.0 - float(best.score or 0.0), 4) if best is not None else 1.0


def decide_detections(processing: Processing, outputs: list[np.ndarray]) -> list[Decision]:
    """A Decision per frame from the served detector's outputs (boxes, scores, classes[, novelty]): the
    frame's label from its best box, `probabilities` the best score of each class's boxes, and the boxes
    themselves, in the shape the review task and the predictions table store (Box.as_dict())."""
    boxes, scores, classes = outputs[0], outputs[1], outputs[2]
    novelty = outputs[3] if len(outputs) > 3 else np.zeros(len(boxes), np.float32)
    out = []
    for frame_boxes, score in zip(boxes_of(boxes, scores, classes, processing.classes), novelty.tolist(), strict=True):
        label, confidence = frame_label(frame_boxes)
        best = {c: 0.0 for c in processing.classes}
        for b in frame_boxes:
            best[b.label] = max(best[b.label], float(b.score or 0.0))
        out.append(Decision(label, round(confidence, 4), best, round(float(score), 4), bool(score > 1.0),
                            [b.as_dict() for b in frame_boxes]))
    return out
