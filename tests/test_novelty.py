"""Unfamiliar frames: the novelty score in the model's graph, its threshold calibrated at training time
and stored in the artifacts, and serving's `unfamiliar` flag. Frames of scenes the model never saw (an
empty belt, another object, noise, a natural image) are flagged; frames of the camera it was trained
for almost never are."""

from __future__ import annotations

import numpy as np
import pytest

from infra.store import put_frame
from serving.backends import make_backend
from serving.client import ServingClient
from vision.artifacts import NOVELTY, ONNX, WEIGHTS, load_verified
from vision.camera import encode_jpeg, generate_frames
from vision.decode import decode_frame
from vision.novelty import NoveltyModel, upper_bound_quantile
from vision.scenes import SCENES, render_scene, scene_frames
from vision.training import served_outputs

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]


def _pixels(images, processing) -> np.ndarray:
    """As serving sees a frame: JPEG from the camera, decoded, resized."""
    return np.stack([processing.resize(decode_frame(encode_jpeg(image, 90)).pixels) for image in images])


def _flagged(trained_model, images) -> np.ndarray:
    _, scores = served_outputs(trained_model.model, trained_model.processing,
                               _pixels(images, trained_model.processing), trained_model.novelty)
    return scores > 1.0


@pytest.mark.parametrize("scene", SCENES)
def test_frames_of_other_scenes_are_unfamiliar(trained_model, scene):
    flagged = _flagged(trained_model, scene_frames(scene, 120, seed=3))
    assert flagged.mean() >= 0.95, f"{scene}: only {flagged.mean():.1%} flagged"


def test_frames_of_the_trained_camera_are_familiar(trained_model):
    # Another camera id and seed than training or calibration saw: normal production frames.
    frames = generate_frames("novelty-normal-line", 600, seed=31337)
    flagged = _flagged(trained_model, [f.image for f in frames])
    assert flagged.mean() <= 0.01, f"{flagged.sum()} of {len(frames)} normal frames flagged"


def test_the_threshold_is_calibrated_and_stored_with_the_version(trained_model, model_store, production_model):
    novelty = trained_model.novelty
    assert novelty is not None and novelty.percentile == 99.5 and novelty.calibration_frames == 1500
    manifest, files = load_verified(model_store, production_model.manifest_key, production_model.manifest_sha256,
                                    (NOVELTY,))
    stored = NoveltyModel.from_bytes(files[NOVELTY])
    assert stored.threshold == pytest.approx(novelty.threshold)
    assert manifest.novelty["threshold"] == pytest.approx(novelty.threshold, rel=1e-4)
    assert manifest.novelty["percentile"] == 99.5 and manifest.novelty["unfamiliar_above"] == 1.0


def test_the_threshold_bounds_the_percentile_from_above():
    scores = np.random.default_rng(0).chisquare(100, 2000)
    threshold = upper_bound_quantile(scores, 99.5)
    assert np.percentile(scores, 99.5) <= threshold <= scores.max()
    assert upper_bound_quantile(scores[:10], 99.5) == scores[:10].max()  # too few frames: the largest


def test_every_backend_computes_the_same_score_in_its_graph(trained_model, model_store, production_model):
    manifest, files = load_verified(model_store, production_model.manifest_key, production_model.manifest_sha256,
                                    (ONNX, WEIGHTS), optional=(NOVELTY,))
    images = [render_scene("noise", 1, i) for i in range(4)] + [f.image for f in generate_frames("nb", 4, seed=2)]
    pixels = _pixels(images, manifest.processing)
    _, reference = served_outputs(trained_model.model, trained_model.processing, pixels, trained_model.novelty)
    for name in ("onnxruntime", "torch-cpu"):
        logits, novelty = make_backend(name, manifest, files, threads=1).scores(pixels)
        assert logits.shape == (8, 4) and novelty is not None
        np.testing.assert_allclose(novelty, reference, rtol=1e-3, atol=1e-3)
    decisions = manifest.processing.decide(logits, novelty)
    assert [d.unfamiliar for d in decisions[:4]] == [True] * 4 and not any(d.unfamiliar for d in decisions[4:])


async def test_serving_answers_novelty_and_unfamiliar(serving_url, model_store):
    normal = [f.jpeg() for f in generate_frames("novelty-serve-line", 6, seed=41)]
    other = [encode_jpeg(render_scene(scene, 41, 0)) for scene in SCENES]
    keys = [(f"f{i}", put_frame(model_store, data, "image/jpeg")) for i, data in enumerate(normal + other)]
    async with ServingClient(serving_url) as client:
        response = await client.classify(keys)
    by_id = {p.frame_id: p for p in response.predictions}
    for i in range(len(normal)):
        p = by_id[f"f{i}"]
        assert p.novelty is not None and 0 < p.novelty < 1 and p.unfamiliar is False
    for i in range(len(normal), len(keys)):
        p = by_id[f"f{i}"]
        assert p.novelty is not None and p.novelty > 1 and p.unfamiliar is True
