"""Where a classified frame goes: pure rules, applied by the classification activity right where the
predictions are recorded (so only the frames that go somewhere travel back into the batch's history).

A frame the model finds unfamiliar goes to review and never raises an alert: a confident softmax on
something the model was never trained on is not a defect, it is a question for a person. A detection
version's frame is routed by its boxes (routes_for_boxes): a confident defect box alerts, a box the model
is unsure of sends the frame to review.
"""

from __future__ import annotations

import hashlib

from workflows.batch_types import RoutingRules

REVIEW, ALERT = "review", "alert"
REVIEW_REASONS = ("low_confidence", "qa_sample", "unfamiliar")
DEFECT = "defect"


def qa_draw(frame_id: str) -> float:
    """A uniform draw in [0, 1) fixed by the frame id: every retry and replay samples the same frames."""
    return int.from_bytes(hashlib.sha256(frame_id.encode()).digest()[:8], "big") / 2**64


def routes_for(label: str, confidence: float, unfamiliar: bool, rules: RoutingRules,
               draw: float) -> list[tuple[str, str]]:
    """(route, reason) pairs for one classified frame; none for a confident, familiar, ok frame."""
    if unfamiliar:
        return [(REVIEW, "unfamiliar")]
    routes = []
    if confidence < rules.review_below:
        routes.append((REVIEW, "low_confidence"))
    elif draw < rules.qa_sample_rate:
        routes.append((REVIEW, "qa_sample"))
    if label not in rules.ok_labels and confidence >= rules.alert_at_or_above:
        routes.append((ALERT, DEFECT))
    return routes


def routes_for_boxes(boxes: list[dict], unfamiliar: bool, rules: RoutingRules,
                     draw: float) -> list[tuple[str, str]]:
    """(route, reason) pairs for a frame a detection version answered with these boxes (each with its
    `label` and `score`): unfamiliar -> review only; any box scoring from box_review_at_or_above up to
    review_below -> review (low confidence); any defect box at alert_at_or_above or more -> alert; a frame
    with neither is QA-sampled like a classified one."""
    if unfamiliar:
        return [(REVIEW, "unfamiliar")]
    scores = [float(b.get("score") or 0.0) for b in boxes if b.get("label") not in rules.ok_labels]
    routes = []
    if any(rules.box_review_at_or_above <= s < rules.review_below for s in scores):
        routes.append((REVIEW, "low_confidence"))
    elif draw < rules.qa_sample_rate:
        routes.append((REVIEW, "qa_sample"))
    if any(s >= rules.alert_at_or_above for s in scores):
        routes.append((ALERT, DEFECT))
    return routes
