"""A detection task on the reviewer page, in real Chromium (Debian's, through Playwright) against the real
app, worker and Postgres: the model's boxes are drawn on the frame; the reviewer deletes one, moves one,
draws one with the mouse, gives it a class with a key and confirms with Enter; the label row holds the
box set. And the API's 422s for a box outside the frame or without a class, naming the field."""

from __future__ import annotations

import asyncio
import functools
import uuid

from infra.store import put_frame
from tests.frames import jpeg_frame
from tests.polling import eventually
from tests.review_support import fetch_one, review_input
from tests.test_review_page import browser, next_task_of, press, served, sign_in  # noqa: F401  (fixtures)
from tests.test_review_page import pytestmark as browser_mark
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import review_workflow_id

pytestmark = browser_mark

CLASSES = ["ok", "scratch", "dent", "stain"]
MODEL_BOXES = [{"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3, "label": "scratch", "score": 0.44},
               {"x0": 0.6, "y0": 0.6, "x1": 0.8, "y1": 0.8, "label": "dent", "score": 0.31},
               # A second class's weak peak on the scratch: below routing's box floor, never drawn (nor confirmed).
               {"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3, "label": "dent", "score": 0.07}]


async def open_detection_task(api, batch: str, position: int = 0) -> str:
    key = await asyncio.to_thread(put_frame, api.store, jpeg_frame(40 + position, size=160), "image/jpeg")
    input = review_input(batch, position, object_key=key, priority="urgent", classes=CLASSES, boxes=MODEL_BOXES)
    review_id = review_workflow_id(input.frame_id, input.reason)
    await api.client.start_workflow(ReviewTaskWorkflow.run, input, id=review_id,
                                    task_queue=api.settings.orchestration_task_queue)
    await eventually(functools.partial(fetch_one, api.pool, "SELECT 1 AS ok FROM review_tasks WHERE review_id = %s",
                                       review_id), message="the task in the queue")
    return review_id


async def test_reviewer_edits_boxes_with_the_mouse_and_confirms_with_the_keyboard(api, served, browser):  # noqa: F811
    batch = f"batch-boxes-{uuid.uuid4().hex[:6]}"
    review_id = await open_detection_task(api, batch)
    page = await sign_in(browser, served, api.keys["reviewer"])
    await page.goto(f"/review?batch_id={batch}")
    assert await next_task_of(page, {review_id}) == review_id
    await page.wait_for_function("document.getElementById('frame').naturalWidth > 0")
    assert await page.inner_text("#model-boxes") == "2"
    assert await page.inner_text("#boxes-left-off") == "(1 below 30% not drawn)"
    assert await page.locator("#overlay .box.model").count() == 2
    frame = await page.locator("#overlay").bounding_box()
    assert frame is not None and frame["width"] > 200

    def at(x: float, y: float) -> tuple[float, float]:
        return frame["x"] + x * frame["width"], frame["y"] + y * frame["height"]

    # Delete the dent box: click it, then Delete.
    await page.mouse.click(*at(0.7, 0.7))
    await page.keyboard.press("Delete")
    assert await page.locator("#overlay .box").count() == 1
    # Move the scratch box by (+0.1, +0.05).
    await page.mouse.move(*at(0.2, 0.2))
    await page.mouse.down()
    await page.mouse.move(*at(0.25, 0.22), steps=3)
    await page.mouse.move(*at(0.3, 0.25), steps=3)
    await page.mouse.up()
    # Draw a new box from (0.55, 0.5) to (0.85, 0.75), and make it a stain (key 3).
    await page.mouse.move(*at(0.55, 0.5))
    await page.mouse.down()
    await page.mouse.move(*at(0.7, 0.6), steps=3)
    await page.mouse.move(*at(0.85, 0.75), steps=3)
    await page.mouse.up()
    await page.keyboard.press("3")
    assert await page.locator("#overlay .box").count() == 2
    assert "selected: stain" in await page.inner_text("#box-count")
    await press(page, "Enter")
    assert "Saved 2 boxes" in await page.inner_text("#flash")

    row = await eventually(functools.partial(
        fetch_one, api.pool, "SELECT label, boxes, reviewer_name FROM review_labels WHERE review_id = %s", review_id),
        message="the label row")
    assert row["reviewer_name"] == "test reviewer"
    boxes = sorted(row["boxes"], key=lambda b: b["x0"])
    assert [b["label"] for b in boxes] == ["scratch", "stain"]
    expected = [(0.2, 0.15, 0.4, 0.35), (0.55, 0.5, 0.85, 0.75)]
    for box, corners in zip(boxes, expected, strict=True):
        got = (box["x0"], box["y0"], box["x1"], box["y1"])
        assert all(abs(a - b) < 0.01 for a, b in zip(got, corners, strict=True)), (got, corners)
    assert row["label"] == "stain"  # the largest box's class is the frame's (0.3 x 0.25 against 0.2 x 0.2)
    handle = api.client.get_workflow_handle_for(ReviewTaskWorkflow.run, review_id)
    result = await handle.result()
    assert result.final_boxes is not None and len(result.final_boxes) == 2


async def test_bad_boxes_answer_422_naming_the_field(api):
    batch = f"batch-boxes-{uuid.uuid4().hex[:6]}"
    review_id = await open_detection_task(api, batch)
    headers = api.auth("reviewer")
    claimed = await api.http.post(f"/v1/reviews/{review_id}/claim", headers=headers)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["task"]["boxes"] == MODEL_BOXES
    good = {"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3, "label": "dent"}
    for boxes, field in (([good, {**good, "x1": 1.2}], "boxes[1].x1"),
                         ([{**good, "label": ""}], "boxes[0].label"),
                         ([{**good, "label": "rust"}], "boxes[0].label")):
        answer = await api.http.post(f"/v1/reviews/{review_id}/decision", json={"boxes": boxes}, headers=headers)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"]["field"] == field
    audited = await fetch_one(api.pool, "SELECT count(*) AS n FROM audit_log WHERE action = 'review.decision'"
                              " AND workflow_id = %s AND details->>'outcome' = 'refused'", review_id)
    assert audited is not None and audited["n"] == 3
    decided = await api.http.post(f"/v1/reviews/{review_id}/decision", json={"boxes": [good]}, headers=headers)
    assert decided.status_code == 200 and decided.json()["final_boxes"] == [good]
