"""The real Ray Serve application: the fused layout on these CPU hosts (one deployment that fetches,
decodes and classifies in each replica) and the pair (preprocessor + batching classifier, the GPU
layout), the same answers from both, dynamic batching, several versions at once, clear errors. One app
per session (tests.serving_fixtures.serving_url); the pair's tests deploy it in its place and restore it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from infra.store import put_frame
from serving.client import ServingClient, ServingError, parse_reply
from tests.polling import wait_until
from vision.camera import generate_frames

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]


def _put(store, frames):
    return [(f"f-{f.camera_id}-{f.index}", put_frame(store, f.jpeg(), "image/jpeg")) for f in frames]


async def test_frames_are_classified_by_the_production_version(serving_url, model_store, production_model):
    frames = generate_frames("serve-line", 24, seed=21)
    keys = _put(model_store, frames)
    async with ServingClient(serving_url) as client:
        response = await client.classify(keys)
    assert response.model_version == production_model.version
    assert response.backend == "onnxruntime" and response.rejections == []
    assert [p.frame_id for p in response.predictions] == [k for k, _ in keys]
    correct = sum(p.label == f.label for p, f in zip(response.predictions, frames, strict=True))
    assert correct >= 0.65 * len(frames)
    for p in response.predictions:
        assert abs(sum(p.probabilities.values()) - 1) < 1e-3 and p.confidence == max(p.probabilities.values())
        assert set(p.quality) >= {"brightness", "contrast", "sharpness", "saturation"}
        assert {"fetch_ms", "preprocess_ms", "infer_ms"} <= set(p.timings)


async def test_bad_frames_are_rejected_with_a_reason_and_the_rest_still_classified(serving_url, model_store):
    good = _put(model_store, generate_frames("serve-line", 2, seed=22))
    corrupt = put_frame(model_store, b"\xff\xd8\xff\xe0 not really a jpeg")
    tiny = put_frame(model_store, generate_frames("serve-line", 1, seed=22, size=8)[0].jpeg())
    frames = [good[0], ("corrupt", corrupt), ("missing", "frames/sha256/00/" + "0" * 64), ("tiny", tiny),
              ("badkey", "../etc/passwd"), good[1]]
    async with ServingClient(serving_url) as client:
        response = await client.classify(frames)
    assert [p.frame_id for p in response.predictions] == [good[0][0], good[1][0]]
    reasons = {r.frame_id: r.reason for r in response.rejections}
    assert set(reasons) == {"corrupt", "missing", "tiny", "badkey"}
    assert "not an image" in reasons["corrupt"] or "corrupt" in reasons["corrupt"]
    assert "not found" in reasons["missing"] and "too small" in reasons["tiny"]
    assert "invalid object key" in reasons["badkey"]


async def test_errors_say_whether_a_retry_can_help(serving_url, registry):
    async with ServingClient(serving_url) as client:
        with pytest.raises(ServingError) as unknown:
            await client.classify([("a", "frames/x")], model="v999999")
        assert unknown.value.status == 404 and not unknown.value.retryable and unknown.value.code == "model_not_found"
    # A request the service refuses as invalid: 422, and not worth retrying.
    async with httpx.AsyncClient(base_url=serving_url) as http:
        response = await http.post("/v1/classify", json={"frames": [], "model": "production"})
    with pytest.raises(ServingError) as invalid:
        parse_reply(response.status_code, response.json())
    assert invalid.value.status == 422 and not invalid.value.retryable
    # Nothing listening: a connection error, worth retrying.
    from infra.postgres_server import free_port

    async with ServingClient(f"http://127.0.0.1:{free_port()}") as down:
        with pytest.raises(ServingError) as refused:
            await down.classify([("a", "frames/x")])
        assert refused.value.retryable and refused.value.status is None


async def test_the_handle_answers_as_http_does(serving_url, model_store, production_model):
    """The inference worker may reach the application through its handle (a Ray driver on the serving
    cluster) instead of HTTP: the same answers and the same errors, without the proxy and JSON."""
    from serving.client import ServingHandleClient

    frames = [*_put(model_store, generate_frames("handle-line", 6, seed=24)),
              ("missing", "frames/sha256/00/" + "0" * 64)]
    async with ServingClient(serving_url) as http_client, ServingHandleClient() as handle_client:
        over_http = await http_client.classify(frames)
        over_handle = await handle_client.classify(frames)
        assert over_handle.model_version == over_http.model_version == production_model.version
        assert [(p.frame_id, p.label, p.confidence) for p in over_handle.predictions] == [
            (p.frame_id, p.label, p.confidence) for p in over_http.predictions]
        assert [r.frame_id for r in over_handle.rejections] == ["missing"]
        with pytest.raises(ServingError) as unknown:
            await handle_client.classify(frames[:1], model="v999999")
        assert unknown.value.status == 404 and not unknown.value.retryable


def _deploy(config, options) -> None:
    from ray import serve

    from serving.app import APP_NAME, build_app

    serve.run(build_app(config, options), name=APP_NAME, route_prefix="/")


@pytest.fixture
def pair_layout(serving_url, serving_config_for):
    """The pair layout in place of the session's application, for this test; the session's back after."""
    from serving.app import AppOptions

    _deploy(serving_config_for, AppOptions(layout="pair"))
    try:
        yield serving_url
    finally:
        _deploy(serving_config_for, AppOptions())


def _replicas_by_deployment() -> dict[str, int]:
    from ray import serve

    from serving.app import APP_NAME

    app = serve.status().applications[APP_NAME]
    return {name: sum(d.replica_states.values()) for name, d in app.deployments.items()}


async def test_on_a_cpu_host_each_replica_fetches_decodes_and_classifies(serving_url, model_store):
    assert set(_replicas_by_deployment()) == {"Preprocessor"}, "the fused layout: no classifier deployment"
    async with ServingClient(serving_url) as client:
        response = await client.classify(_put(model_store, generate_frames("fused-line", 40, seed=27)))
    # The replica runs a request's frames through the model in chunks (ServingConfig.infer_chunk).
    assert len(response.predictions) == 40 and response.timings["batch_frames"] == 8


async def test_both_layouts_give_the_same_answers(serving_url, serving_config_for, model_store):
    from serving.app import AppOptions

    keys = _put(model_store, generate_frames("layouts-line", 12, seed=28))
    async with ServingClient(serving_url) as client:
        fused = await client.classify(keys)
        _deploy(serving_config_for, AppOptions(layout="pair"))
        try:
            assert set(_replicas_by_deployment()) == {"Preprocessor", "Classifier"}
            pair = await client.classify(keys)
        finally:
            _deploy(serving_config_for, AppOptions())
    assert [(p.frame_id, p.label, p.confidence, p.novelty) for p in fused.predictions] == [
        (p.frame_id, p.label, p.confidence, p.novelty) for p in pair.predictions]


async def test_concurrent_requests_are_batched_together(pair_layout, model_store):
    keys = _put(model_store, generate_frames("batch-line", 32, seed=23))
    async with ServingClient(pair_layout) as client:
        responses = await asyncio.gather(*(client.classify([k]) for k in keys))
    # Each request holds one frame; the classifier's forward passes held several.
    assert max(r.timings["batch_frames"] for r in responses) > 1
    assert all(len(r.predictions) == 1 for r in responses)


def test_batch_size_is_reconfigured_at_runtime_through_user_config(pair_layout, serving_config_for, model_store):
    import httpx

    from serving.app import AppOptions

    serving_url = pair_layout
    keys = _put(model_store, generate_frames("reconf-line", 12, seed=24))
    body = {"frames": [{"frame_id": f, "object_key": k} for f, k in keys], "model": "production"}
    before = httpx.post(f"{serving_url}/v1/classify", json=body, timeout=60).json()
    assert before["timings"]["batch_frames"] == 12
    try:
        _deploy(serving_config_for, AppOptions(layout="pair", max_batch_size=4))

        def small_batches():
            r = httpx.post(f"{serving_url}/v1/classify", json=body, timeout=60).json()
            return r if r["timings"]["batch_frames"] <= 4 else None

        after = wait_until(small_batches, timeout=60, interval=0.2, message="reconfigured batch size")
        assert len(after["predictions"]) == 12
        assert [p["label"] for p in after["predictions"]] == [p["label"] for p in before["predictions"]]
    finally:
        _deploy(serving_config_for, AppOptions(layout="pair"))


async def test_several_versions_are_held_at_once_and_a_promotion_takes_effect(serving_url, registry, model_store,
                                                                               trained_model, production_model):
    from vision.publishing import register_trained

    second = register_trained(registry, model_store, trained_model, parent_version=production_model.version,
                              created_by="tests")
    keys = _put(model_store, generate_frames("multi-line", 4, seed=25))
    async with ServingClient(serving_url) as client:
        # In the fused layout each replica holds its own versions and a request may land on any of them, so
        # ask for both until the replica that answers GET /v1/models holds the two at once.
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            by_version = await client.classify(keys, model=second.version)
            by_alias = await client.classify(keys, model="production")
            assert by_version.model_version == second.version and by_alias.model_version == production_model.version
            loaded = {m["version"] for m in await client.models()}
            if {second.version, production_model.version} <= loaded:
                break
            assert asyncio.get_running_loop().time() < deadline, f"no replica held both versions: {loaded}"
        registry.set_alias("production", second.version, "tests", "promotion test")
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while (await client.classify(keys)).model_version != second.version:
                assert asyncio.get_running_loop().time() < deadline, "promotion never reached serving"
                await asyncio.sleep(0.1)
        finally:
            registry.set_alias("production", production_model.version, "tests", "restore")


async def test_serving_refuses_a_version_whose_files_were_tampered_with(serving_url, registry, model_store,
                                                                        trained_model, production_model):
    from vision.artifacts import ONNX, Manifest
    from vision.publishing import register_trained

    version = register_trained(registry, model_store, trained_model, created_by="tests")
    entry = Manifest.from_json(model_store.get(version.manifest_key)).files[ONNX]
    model_store.put(entry["key"], model_store.get(entry["key"])[:-1] + b"\0")
    async with ServingClient(serving_url) as client:
        with pytest.raises(ServingError) as refused:
            await client.classify(_put(model_store, generate_frames("t-line", 1, seed=26)), model=version.version)
        assert refused.value.code == "model_integrity" and "sha256" in str(refused.value)
        assert version.version not in {m["version"] for m in await client.models()}


def test_only_the_applications_own_refusals_are_final():
    """While serving restarts, Serve's proxy answers before the application is deployed (404, plain
    text): worth retrying. The application's own 404 (an unknown model) and 422 are not."""
    with pytest.raises(ServingError) as proxy:
        parse_reply(404, None, "Path '/v1/classify' not found. Ping http://127.0.0.1:8001/-/routes for routes.")
    assert proxy.value.retryable
    with pytest.raises(ServingError) as unknown:
        parse_reply(404, {"error": "model_not_found", "detail": "no model version 'v9'", "retryable": False})
    assert not unknown.value.retryable and unknown.value.code == "model_not_found"
    with pytest.raises(ServingError) as invalid:
        parse_reply(422, {"detail": [{"msg": "List should have at least 1 item"}]})
    assert not invalid.value.retryable
