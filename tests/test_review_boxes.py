"""Detection review tasks: a box set is the decision, consensus matches box sets by IoU, adjudication
takes over when they do not match; the labels, the queue and the reviewed-labels view keep the boxes.
Against real Temporal and Postgres; the consensus run stores its history for tests/test_replay.py."""

from __future__ import annotations

from functools import partial

import pytest
import pytest_asyncio
from temporalio.client import WorkflowUpdateFailedError
from temporalio.worker import Worker

from tests.polling import eventually
from tests.review_support import fetch_all, fetch_one, insert_batch, review_input
from tests.test_review_workflow import projection, refusal, review_activities, start
from vision.boxes import BoxError
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import (
    NO_DEFECT,
    ClaimRequest,
    Decision,
    DecisionRequest,
    box_decision_label,
    checked_boxes,
    decisions_agree,
)

CLASSES = ["ok", "scratch", "dent", "stain"]
MODEL_BOXES = [{"x0": 0.2, "y0": 0.2, "x1": 0.5, "y1": 0.5, "label": "scratch", "score": 0.42}]
NEAR = [{"x0": 0.21, "y0": 0.2, "x1": 0.52, "y1": 0.5, "label": "scratch"}]  # IoU with MODEL_BOXES ~0.9
FAR = [{"x0": 0.6, "y0": 0.6, "x1": 0.9, "y1": 0.9, "label": "scratch"}]     # IoU 0


def decision(boxes, label=""):
    return Decision("k", "k", label or (box_decision_label(boxes) if boxes is not None else "unusable"), None,
                    "2026-01-01T00:00:00+00:00", "review", boxes)


@pytest.mark.parametrize(("items", "field"), [
    ([{"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3, "label": "dent"},
      {"x0": 0.1, "y0": 0.1, "x1": 1.3, "y1": 0.3, "label": "dent"}], "boxes[1].x1"),
    ([{"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3, "label": " "}], "boxes[0].label"),
    ([{"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3, "label": "rust"}], "boxes[0].label"),
    ([{"x0": 0.1, "y0": 0.1, "x1": 0.3, "label": "dent"}], "boxes[0].y1"),
    ([{"x0": 0.3, "y0": 0.1, "x1": 0.1, "y1": 0.3, "label": "dent"}], "boxes[0]"),
    ([["not", "a", "box"]], "boxes[0]"),
    ("boxes", "boxes"),
])
def test_a_bad_box_names_its_field(items, field):
    with pytest.raises(BoxError) as refused:
        checked_boxes(items, CLASSES)
    assert refused.value.field == field


def test_box_sets_agree_by_iou_and_class():
    assert checked_boxes(MODEL_BOXES, CLASSES) == [{k: v for k, v in MODEL_BOXES[0].items() if k != "score"}]
    small_dent = {"x0": 0, "y0": 0, "x1": 0.05, "y1": 0.05, "label": "dent"}
    assert box_decision_label([]) == NO_DEFECT
    assert box_decision_label([*NEAR, small_dent]) == "scratch"  # the largest box's class
    assert decisions_agree([decision(MODEL_BOXES), decision(NEAR)])
    assert not decisions_agree([decision(MODEL_BOXES), decision(FAR)])
    assert not decisions_agree([decision(NEAR), decision([{**NEAR[0], "label": "dent"}])])
    assert not decisions_agree([decision(NEAR), decision(NEAR + FAR)])
    assert decisions_agree([decision([]), decision([])])  # both: no defect
    assert not decisions_agree([decision(NEAR), decision(None)])  # boxes against unusable
    assert decisions_agree([decision(None, "scratch"), decision(None, "scratch")])  # classification as before


@pytest_asyncio.fixture
async def review_worker(temporal_client, db_pool, task_queue):
    async with Worker(temporal_client, task_queue=task_queue, workflows=[ReviewTaskWorkflow],
                      activities=review_activities(db_pool)):
        yield


async def _decide(handle, reviewer: str, boxes):
    await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest(reviewer, reviewer))
    return await handle.execute_update(ReviewTaskWorkflow.decide, DecisionRequest(reviewer, "", boxes=boxes))


async def test_two_reviewers_with_close_boxes_agree(temporal_client, db_pool, task_queue, review_worker,
                                                    record_history):
    input = review_input(reviews_required=2, classes=CLASSES, boxes=MODEL_BOXES, predicted_label="scratch")
    await insert_batch(db_pool, input.batch_id)
    handle = await start(temporal_client, task_queue, input)
    await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")
    first = await _decide(handle, "key-a", MODEL_BOXES)  # accepted as the model drew it
    assert (first.status, first.decisions_count) == ("pending", 1)
    final = await _decide(handle, "key-b", NEAR)  # moved a little: IoU about 0.9
    assert (final.status, final.stage, final.final_label) == ("decided", "review", "scratch")
    assert final.final_boxes == NEAR
    result = await handle.result()
    assert result.final_boxes == NEAR and result.corrected is False
    await record_history(handle, "review_task_box_consensus")

    labels = await fetch_all(db_pool, "SELECT reviewer_id, label, boxes FROM review_labels WHERE review_id = %s"
                             " ORDER BY reviewer_id", handle.id)
    assert [(r["reviewer_id"], r["label"], r["boxes"]) for r in labels] == [
        ("key-a", "scratch", [{k: v for k, v in MODEL_BOXES[0].items() if k != "score"}]),
        ("key-b", "scratch", NEAR)]

    async def decided():
        row = await projection(db_pool, handle.id)
        return row if row and row["status"] == "decided" else None

    row = await decided() or await eventually(decided, message="the decided projection")
    assert row["boxes"] == MODEL_BOXES and row["final_boxes"] == NEAR
    trained = await fetch_one(db_pool, "SELECT label, boxes, source FROM reviewed_frame_labels WHERE frame_id = %s",
                              input.frame_id)
    assert trained == {"label": "scratch", "boxes": NEAR, "source": "review"}


async def test_disjoint_boxes_go_to_adjudication(temporal_client, db_pool, task_queue, review_worker):
    input = review_input(reviews_required=2, classes=CLASSES, boxes=MODEL_BOXES)
    await insert_batch(db_pool, input.batch_id)
    handle = await start(temporal_client, task_queue, input)
    await eventually(lambda: projection(db_pool, handle.id), message="the task in the queue")
    await _decide(handle, "key-a", NEAR)
    second = await _decide(handle, "key-b", FAR)  # the same class, elsewhere: IoU 0
    assert (second.status, second.stage, second.final_label) == ("pending", "adjudication", None)
    final = await _decide(handle, "key-c", [])  # the adjudicator sees no defect
    assert (final.status, final.final_label, final.final_boxes) == ("decided", "ok", [])
    assert (await handle.result()).corrected is True  # the model said scratch


async def test_boxes_and_classes_are_not_mixed(temporal_client, db_pool, task_queue, review_worker):
    classification = await start(temporal_client, task_queue, review_input())
    detection = await start(temporal_client, task_queue, review_input(classes=CLASSES, boxes=[]))
    for handle in (classification, detection):
        await eventually(partial(projection, db_pool, handle.id), message="the task in the queue")
        await handle.execute_update(ReviewTaskWorkflow.claim, ClaimRequest("key-a", "a"))
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await classification.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-a", "", boxes=NEAR))
    assert refusal(refused.value) == "InvalidRequest"
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await detection.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-a", "scratch"))
    assert refusal(refused.value) == "InvalidRequest"
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await detection.execute_update(ReviewTaskWorkflow.decide, DecisionRequest(
            "key-a", "", boxes=[{**NEAR[0], "x1": 1.5}]))
    assert refusal(refused.value) == "InvalidLabel" and "boxes[0].x1" in str(refused.value.cause)
    view = await detection.execute_update(ReviewTaskWorkflow.decide, DecisionRequest("key-a", "unusable"))
    assert (view.final_label, view.final_boxes) == ("unusable", None)
    for handle in (classification,):
        await handle.terminate("test over")
