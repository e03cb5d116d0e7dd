"""A detection version on the real Ray Serve application (tests.serving_fixtures): boxes with class and
score per frame and the novelty score, in both layouts, batched across requests in the pair layout;
the classifier's replies keep their shape beside it."""

from __future__ import annotations

import asyncio

import pytest

from infra.store import put_frame
from serving.client import ServingClient
from vision.boxes import boxes_from
from vision.camera import generate_frames
from vision.detector_training import DETECTOR_PROFILES, train_detector

pytest_plugins = ["tests.serving_fixtures"]


@pytest.fixture(scope="module")
def detection_version(registry, model_store):
    from vision.publishing import register_trained

    result = train_detector(DETECTOR_PROFILES["tiny"])
    return register_trained(registry, model_store, result, created_by="tests")


def _put(store, frames):
    return [(f"d-{f.camera_id}-{f.index}", put_frame(store, f.jpeg(), "image/jpeg")) for f in frames]


def _deploy(config, options) -> None:
    from ray import serve

    from serving.app import APP_NAME, build_app

    serve.run(build_app(config, options), name=APP_NAME, route_prefix="/")


def _answers(response):
    return [(p.frame_id, p.label, p.confidence, p.novelty, p.boxes) for p in response.predictions]


async def test_a_detection_version_answers_boxes_per_frame_in_both_layouts(serving_url, serving_config_for,
                                                                           model_store, detection_version,
                                                                           production_model):
    from serving.app import AppOptions

    assert detection_version.task == "detection"
    keys = _put(model_store, generate_frames("det-serve", 20, seed=31))
    async with ServingClient(serving_url) as client:
        fused = await client.classify(keys, model=detection_version.version)
        classified = await client.classify(keys[:2])  # production, the classifier, beside it
        assert fused.model_version == detection_version.version and len(fused.predictions) == 20
        assert fused.timings["batch_frames"] == 8  # the fused replica's passes of infer_chunk frames
        for p in fused.predictions:
            assert isinstance(p.boxes, list) and p.novelty is not None
            boxes = boxes_from(p.boxes)  # every box is a valid vision.boxes.Box, score included
            assert all(b.score is not None and b.label in ("scratch", "dent", "stain") for b in boxes)
            scores = [b.score or 0.0 for b in boxes]
            assert scores == sorted(scores, reverse=True)
            assert p.label in ("ok", "scratch", "dent", "stain") and set(p.probabilities) == {"scratch", "dent",
                                                                                          "stain"}
        assert any(p.boxes for p in fused.predictions)
        assert all(p.boxes is None for p in classified.predictions)
        _deploy(serving_config_for, AppOptions(layout="pair"))
        try:
            pair = await client.classify(keys, model=detection_version.version)
            # One frame a request, sent together: the classifier deployment batches them into shared passes.
            singles = await asyncio.gather(*(client.classify([k], model=detection_version.version)
                                             for k in keys[:12]))
        finally:
            _deploy(serving_config_for, AppOptions())
    assert _answers(pair) == _answers(fused)
    assert max(r.timings["batch_frames"] for r in singles) > 1
    assert [r.predictions[0].boxes for r in singles] == [p.boxes for p in fused.predictions[:12]]
