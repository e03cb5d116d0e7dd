"""The live traffic split (vision.traffic, stored by the registry, followed by serving): measured over
many frames it matches its weights; a frame always goes to the same version; a larger canary keeps the
frames a smaller one had; every prediction names the version that made it; the shadow's answers come
back apart; changing the split fails no request."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from infra.store import put_frame
from serving.client import ServingClient
from tests.polling import eventually
from vision.camera import generate_frames
from vision.traffic import TrafficSplit

pytest_plugins = ["tests.serving_fixtures"]

FRAMES = [f"batch:line-1:k{i // 64}:{i % 64:04d}" for i in range(20_000)]


@pytest.mark.parametrize("share", [0.05, 0.25, 0.5])
def test_the_split_over_many_frames_matches_its_weights(share: float):
    split = TrafficSplit.canary("v2", "v1", share, shadow_version="v3", shadow_share=0.3)
    counts = Counter(split.version_for(f, "v1") for f in FRAMES)
    assert abs(counts["v2"] / len(FRAMES) - share) < 0.015
    assert abs(sum(split.shadows(f) for f in FRAMES) / len(FRAMES) - 0.3) < 0.015
    # A retried request sends every frame where it went before.
    assert [split.version_for(f, "v1") for f in FRAMES[:500]] == [split.version_for(f, "v1") for f in FRAMES[:500]]


def test_a_larger_canary_keeps_the_frames_of_a_smaller_one():
    small, large = TrafficSplit.canary("v2", "v1", 0.05), TrafficSplit.canary("v2", "v1", 0.25)
    in_small = {f for f in FRAMES if small.version_for(f, "v1") == "v2"}
    assert in_small and all(large.version_for(f, "v1") == "v2" for f in in_small)
    assert TrafficSplit().version_for(FRAMES[0], "v7") == "v7" and not TrafficSplit().shadows(FRAMES[0])
    with pytest.raises(ValueError):
        TrafficSplit((("v2", -1.0),))


def test_the_registry_records_each_split_once(registry, production_model):
    before = len(registry.traffic_history())
    split = TrafficSplit(((production_model.version, 1.0),), rollout_id="test-registry")
    try:
        assert registry.set_traffic(split, "tests", "one") is True
        assert registry.set_traffic(split, "tests", "again") is False  # a retry records nothing
        assert registry.traffic().as_dict() == split.as_dict()
        assert len(registry.traffic_history()) == before + 1
    finally:
        registry.set_traffic(TrafficSplit(), "tests", "reset")
    assert registry.traffic() == TrafficSplit(changed_by="tests", reason="reset")


async def test_serving_follows_the_split_and_names_each_prediction_version(
        serving_url, model_store, registry, trained_model, production_model):
    from vision.publishing import register_trained

    other = register_trained(registry, model_store, trained_model, created_by="tests").version
    production = production_model.version
    frames = generate_frames("split-line", 48, seed=31)
    stored = [put_frame(model_store, f.jpeg(), "image/jpeg") for f in frames]
    # Many frame ids over a few stored frames: the split is drawn from the frame id alone.
    keys = [(f"split:{i:05d}", stored[i % len(stored)]) for i in range(600)]
    split = TrafficSplit.canary(other, production, 0.25, shadow_version=other, shadow_share=0.2,
                                rollout_id="test-serving")
    try:
        async with ServingClient(serving_url) as client:
            registry.set_traffic(split, "tests", "split 25%")

            async def followed():
                answer = await client.classify(keys[:64])
                return answer if {p.model_version for p in answer.predictions} == {production, other} else None

            await eventually(followed, timeout=30, message="serving to follow the split")
            # Requests in flight while the split changes again all succeed.
            changing = asyncio.gather(*(client.classify(keys[i:i + 100]) for i in range(0, 600, 100)))
            registry.set_traffic(TrafficSplit.canary(other, production, 0.5, rollout_id="test-serving"), "tests", "50")
            registry.set_traffic(split, "tests", "back to 25%")
            assert all(len(r.predictions) == 100 for r in await changing)

            await eventually(followed, timeout=30, message="the 25% split again")
            first = await client.classify(keys)
            again = await client.classify(keys)
        by_frame = {p.frame_id: p.model_version for p in first.predictions}
        assert by_frame == {p.frame_id: p.model_version for p in again.predictions}
        assert by_frame == {f: split.version_for(f, production) for f, _ in keys}
        share = sum(v == other for v in by_frame.values()) / len(keys)
        assert abs(share - 0.25) < 0.06, share
        assert first.model_version == production and not first.version_failures
        shadowed = {s.frame_id for s in first.shadow_predictions}
        assert shadowed == {f for f, _ in keys if split.shadows(f)}
        assert all(s.model_version == other for s in first.shadow_predictions)
        # A request naming a version does not follow the split.
        async with ServingClient(serving_url) as client:
            pinned = await client.classify(keys[:50], model=production)
        assert {p.model_version for p in pinned.predictions} == {production} and not pinned.shadow_predictions
    finally:
        registry.set_traffic(TrafficSplit(), "tests", "reset after the split test")
