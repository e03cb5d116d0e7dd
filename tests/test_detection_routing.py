"""Routing by box, end to end through the API on the real stack (Temporal, Postgres, the store, the real
classification activity; the inference service scripted per frame, tests.conftest.ScriptedClassifier):
a confident defect box alerts and the webhook carries the boxes, a low-confidence box or an unfamiliar
frame goes to review with the model's boxes in the task, and the predictions table keeps the boxes."""

from __future__ import annotations

import asyncio
import json

from temporalio.api.enums.v1 import EventType
from temporalio.converter import DataConverter

from infra.outbound_addresses import AddressPolicy
from infra.tables.webhook_subscriptions import register_webhook
from tests.frames import jpeg_frame, multipart
from tests.polling import eventually
from tests.webhook_receiver import Receiver
from workflows.batch_types import RoutingRules
from workflows.review_types import ReviewTaskInput, review_workflow_id
from workflows.routing import routes_for_boxes


def _box(label: str, score: float, x0: float = 0.3) -> dict:
    return {"x0": x0, "y0": 0.3, "x1": x0 + 0.2, "y1": 0.5, "label": label, "score": score}


def test_routes_by_box_follow_the_rules():
    rules = RoutingRules()
    assert routes_for_boxes([_box("dent", 0.95)], False, rules, 0.5) == [("alert", "defect")]
    assert routes_for_boxes([_box("dent", 0.5)], False, rules, 0.5) == [("review", "low_confidence")]
    # A confident box and an unsure one in the same frame: the alert goes out, and a person looks too.
    assert routes_for_boxes([_box("dent", 0.95), _box("stain", 0.4, 0.6)], False, rules, 0.5) == [
        ("review", "low_confidence"), ("alert", "defect")]
    assert routes_for_boxes([_box("dent", 0.1)], False, rules, 0.5) == []  # background, below the floor
    assert routes_for_boxes([], False, rules, 0.5) == []
    assert routes_for_boxes([], False, rules, 0.001) == [("review", "qa_sample")]
    assert routes_for_boxes([_box("dent", 0.99)], True, rules, 0.5) == [("review", "unfamiliar")]


async def _review_input(api, review_id: str) -> ReviewTaskInput:
    history = await api.client.get_workflow_handle(review_id).fetch_history()
    started = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    payloads = started.workflow_execution_started_event_attributes.input.payloads
    [task] = DataConverter.default.payload_converter.from_payloads(payloads, [ReviewTaskInput])
    return task


async def test_a_detection_versions_boxes_route_the_frame_and_travel_with_it(api):
    from infra.store import frame_key, sha256_hex

    frames = [jpeg_frame(640 + i) for i in range(4)]
    keys = [frame_key(sha256_hex(f)) for f in frames]
    confident, unsure, unfamiliar = [_box("dent", 0.97)], [_box("scratch", 0.55)], [_box("stain", 0.99)]
    api.classifier.script_boxes(keys[0], confident)
    api.classifier.script_boxes(keys[1], unsure)
    api.classifier.script_boxes(keys[2], unfamiliar, unfamiliar=True)
    api.classifier.script_boxes(keys[3], [])
    with Receiver([]) as receiver:
        async with api.pool.connection() as conn:
            await register_webhook(conn, receiver.url, "det-site",
                                   AddressPolicy.allowing(api.settings.webhook_allowed_networks))
        response = await api.http.post(
            "/v1/batches",
            data={"camera_id": "det-cam", "site_id": "det-site", "idempotency_key": "det1",
                  "webhook_url": receiver.url},
            files=multipart([(f"f{i}.jpg", f, "image/jpeg") for i, f in enumerate(frames)]),
        )
        assert response.status_code == 202, response.text
        batch_id = response.json()["batch_id"]
        result = await asyncio.wait_for(api.client.get_workflow_handle(batch_id).result(), 60)
        assert (result["sent_to_review"], result["defects"], result["unfamiliar"]) == (2, 1, 1)

        async def alerted():
            return receiver.requests[:1]

        alert = await eventually(alerted, 30, "the defect alert")
        defects = json.loads(alert[0][1])["data"]["defects"]
        assert [(d["frame_id"], d["label"], d["boxes"]) for d in defects] == [(f"{batch_id}:0000", "dent", confident)]

    batch = (await api.http.get(f"/v1/batches/{batch_id}")).json()
    routes = {f["position"]: f["routes"] for f in batch["frames"]}
    assert routes == {0: ["alert:defect"], 1: ["review:low_confidence"], 2: ["review:unfamiliar"], 3: []}
    task = await _review_input(api, review_workflow_id(f"{batch_id}:0001", "low_confidence"))
    assert task.boxes == unsure and task.predicted_label == "scratch"  # its best box, at 0.55
    odd = await _review_input(api, review_workflow_id(f"{batch_id}:0002", "unfamiliar"))
    assert odd.boxes == unfamiliar
    async with api.pool.connection() as conn:
        cur = await conn.execute("SELECT frame_id, boxes FROM predictions WHERE frame_id LIKE %s ORDER BY frame_id",
                                 (f"{batch_id}:%",))
        stored = {r["frame_id"]: r["boxes"] for r in await cur.fetchall()}
    assert stored == {f"{batch_id}:0000": confident, f"{batch_id}:0001": unsure, f"{batch_id}:0002": unfamiliar,
                      f"{batch_id}:0003": []}
