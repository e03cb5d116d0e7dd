"""Mean average precision of detected boxes against ground truth, by pycocotools' COCOeval (the
reference implementation every detection paper reports), so the number means what it means elsewhere.

Boxes are relative (vision.boxes); they are scaled to the generated camera's frame size for COCO, which
only matters for COCO's small/medium/large breakdown, not for the IoU-based AP reported here.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from vision.boxes import Box
from vision.camera import FRAME_SIZE


def _xywh(box: Box, size: int) -> list[float]:
    return [box.x0 * size, box.y0 * size, (box.x1 - box.x0) * size, (box.y1 - box.y0) * size]


def mean_average_precision(truth: Sequence[Sequence[Box]], detections: Sequence[Sequence[Box]],
                           classes: Sequence[str], size: int = FRAME_SIZE) -> dict:
    """{"map_50", "map_50_95", "ap50_by_class": {class: AP@0.5}, "frames", "boxes"}: COCO's AP over
    101 recall points, up to 100 detections a frame. Frames without any true box count too: a box
    answered there is a false positive."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(truth) != len(detections):
        raise ValueError("one list of detections per frame of ground truth")
    ids = {c: k + 1 for k, c in enumerate(classes)}
    images = [{"id": i + 1, "width": size, "height": size} for i in range(len(truth))]
    annotations: list[dict] = []
    results: list[dict] = []
    for i, (frame_truth, frame_detections) in enumerate(zip(truth, detections, strict=True)):
        for box in frame_truth:
            xywh = _xywh(box, size)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": ids[box.label],
                                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
        for box in frame_detections:
            results.append({"image_id": i + 1, "category_id": ids[box.label], "bbox": _xywh(box, size),
                            "score": float(box.score if box.score is not None else 1.0)})
    empty = {"map_50": 0.0, "map_50_95": 0.0, "ap50_by_class": {c: 0.0 for c in classes},
             "frames": len(truth), "boxes": len(annotations)}
    if not annotations or not results:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k, "name": c} for c, k in ids.items()]}
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max dets]
    by_class = {}
    for k, c in enumerate(classes):
        p = precision[0, :, k, 0, -1]
        by_class[c] = round(float(p[p > -1].mean()), 4) if (p > -1).any() else 0.0
    return {"map_50": round(max(0.0, float(evaluation.stats[1])), 4),
            "map_50_95": round(max(0.0, float(evaluation.stats[0])), 4),
            "ap50_by_class": by_class, "frames": len(truth), "boxes": len(annotations)}


def recall_at(truth: Sequence[Sequence[Box]], detections: Sequence[Sequence[Box]], score: float,
              threshold: float = 0.5) -> float:
    """The share of true boxes matched (same class, IoU >= threshold) by a detection scoring >= score."""
    from vision.boxes import match

    found = total = 0
    for frame_truth, frame_detections in zip(truth, detections, strict=True):
        kept = [b for b in frame_detections if (b.score or 0.0) >= score]
        found += len(match(list(frame_truth), kept, threshold))
        total += len(frame_truth)
    return float(np.float64(found) / total) if total else 1.0
