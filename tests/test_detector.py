"""The detector's model side: the generated camera's ground-truth boxes, the detector's training loop
(checkpoints and resume), its ONNX export against torch, mAP, and the per-frame decisions serving
answers. Tiny models on a few frames: the goal-sized training run is `make detector` (bench/detector.py)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vision import camera
from vision.boxes import Box
from vision.camera import Conditions, generate_frames
from vision.detection_metrics import mean_average_precision
from vision.detector import CenterNetDetector, ServedDetector, decide_detections, export_detector_onnx, frame_label
from vision.detector_training import (
    DEFECT_CLASSES,
    DETECTOR_PROFILES,
    fit_detector,
    generated_detection_splits,
    served_detections,
    targets,
)
from vision.novelty import calibrate
from vision.processing import Processing
from vision.training import EpochCheckpoint


def test_adding_boxes_changed_no_pixel_of_any_frame():
    # The sha256 of these frames' pixels as the camera drew them before it returned boxes: models trained
    # on a seed's frames, and the tests that rely on them, see the same frames.
    digest = hashlib.sha256()
    for frame in generate_frames("golden", 8, seed=3):
        digest.update(np.asarray(frame.image).tobytes())
    for frame in generate_frames("golden", 4, seed=5, conditions=Conditions(defect_style="changed",
                                                                             viewpoint_shift=0.5)):
        digest.update(np.asarray(frame.image).tobytes())
    assert digest.hexdigest() == "c092f83812765069f590f7d50f9b6a206e07996e29949991bee17f29a3cb4fd7"


def _unmarked(monkeypatch, label: str):
    """The defect's drawing function, made to draw on a copy: the RNG advances as before, so the frame
    comes out identical except for the defect's own mark."""
    original = camera._DEFECTS[label]

    def draw_on_copy(img, rng, geo, style):
        return original(img.copy(), rng, geo, style)

    monkeypatch.setitem(camera._DEFECTS, label, draw_on_copy)


@pytest.mark.parametrize("style", ["standard", "changed"])
def test_ground_truth_boxes_cover_the_pixels_the_defect_changed(monkeypatch, style):
    conditions = Conditions(defect_style=style)
    frames = [f for f in generate_frames("gt-line", 40, seed=9, conditions=conditions) if f.label != "ok"]
    assert {f.label for f in frames} == set(DEFECT_CLASSES)
    size = camera.FRAME_SIZE
    for frame in frames:
        assert len(frame.boxes) == 1 and frame.boxes[0].label == frame.label
        box = frame.boxes[0]
        box.check()
        with monkeypatch.context() as patch:
            _unmarked(patch, frame.label)
            clean = camera.render_frame(frame.label, camera._frame_seed("gt-line", 9, frame.index), conditions)
        changed = np.abs(np.asarray(frame.image, np.int16) - np.asarray(clean, np.int16)).max(axis=2) > 12
        ys, xs = np.nonzero(changed)
        assert len(xs) > 0, frame.index
        # Every clearly changed pixel lies in the box (a pixel of slack for the part outline's blur)...
        assert xs.min() >= box.x0 * size - 2 and xs.max() < box.x1 * size + 2, (frame.index, box)
        assert ys.min() >= box.y0 * size - 2 and ys.max() < box.y1 * size + 2, (frame.index, box)
        # ...and the box is tight around them, not the whole part: each side about the changed pixels'
        # extent, or the minimum a box has (a hairline scratch's box is MIN_BOX_PX tall).
        for lo, hi, extent in ((box.x0, box.x1, xs.max() + 1 - xs.min()), (box.y0, box.y1, ys.max() + 1 - ys.min())):
            assert (hi - lo) * size <= max(1.3 * extent + 4, camera.MIN_BOX_PX + 1), (frame.index, box, extent)
            assert (hi - lo) * size >= camera.MIN_BOX_PX - 0.01
    assert all(not f.boxes for f in generate_frames("gt-line", 40, seed=9) if f.label == "ok")


def test_targets_put_one_peak_per_box_at_its_centre_cell():
    box = Box(0.25, 0.5, 0.5, 0.75, "dent")
    heat, frames, cells, offsets, sizes = targets([(box,), ()], DEFECT_CLASSES, grid=8)
    assert heat.shape == (2, 3, 8, 8) and float(heat[1].max()) == 0.0
    k = DEFECT_CLASSES.index("dent")
    assert float(heat[0, k].max()) == 1.0 and int(heat[0, k].argmax()) == cells[0] == 5 * 8 + 3
    assert float(heat[0, 0].max()) == 0.0 and float(heat[0, 2].max()) == 0.0
    np.testing.assert_allclose(offsets[0].numpy(), [0.0, 0.0])
    np.testing.assert_allclose(sizes[0].numpy(), [2.0, 2.0])
    assert frames.tolist() == [0]


def test_mean_average_precision_counts_misses_and_false_alarms():
    truth = [[Box(0.1, 0.1, 0.4, 0.4, "dent")], [Box(0.5, 0.5, 0.9, 0.9, "stain")], []]
    perfect = [[Box(0.1, 0.1, 0.4, 0.4, "dent", 0.9)], [Box(0.5, 0.5, 0.9, 0.9, "stain", 0.8)], []]
    assert mean_average_precision(truth, perfect, DEFECT_CLASSES)["map_50"] == 1.0
    wrong_place = [[Box(0.6, 0.6, 0.9, 0.9, "dent", 0.9)], [Box(0.5, 0.5, 0.9, 0.9, "stain", 0.8)], []]
    result = mean_average_precision(truth, wrong_place, DEFECT_CLASSES)
    assert result["ap50_by_class"]["dent"] == 0.0 and result["ap50_by_class"]["stain"] == 1.0
    # A confident box on a frame without a defect ranks above the true one: the stain's AP falls.
    false_alarm = [perfect[0], perfect[1], [Box(0.2, 0.2, 0.5, 0.5, "stain", 0.95)]]
    assert mean_average_precision(truth, false_alarm, DEFECT_CLASSES)["ap50_by_class"]["stain"] < 0.6


def test_a_frames_answer_comes_from_its_best_box():
    assert frame_label([]) == ("ok", 1.0)
    assert frame_label([Box(0, 0, 0.5, 0.5, "dent", 0.3)]) == ("ok", 0.7)
    assert frame_label([Box(0, 0, 0.5, 0.5, "dent", 0.3), Box(0, 0, 0.5, 0.5, "stain", 0.9)]) == ("stain", 0.9)
    processing = Processing(DEFECT_CLASSES, 64)
    boxes = np.array([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.6]]], np.float32)
    decisions = decide_detections(processing, [boxes, np.array([[0.8, 0.01]], np.float32),
                                               np.array([[1, 0]]), np.array([1.5], np.float32)])
    [d] = decisions
    assert d.label == "dent" and d.confidence == 0.8 and d.unfamiliar and d.novelty == 1.5
    assert d.boxes == [{"x0": 0.1, "y0": 0.2, "x1": 0.3, "y1": 0.4, "label": "dent", "score": 0.8}]  # 0.01 dropped
    assert d.probabilities == {"scratch": 0.0, "dent": 0.8, "stain": 0.0}


@pytest.fixture(scope="module")
def tiny_splits():
    config = DETECTOR_PROFILES["tiny"]
    processing = Processing(DEFECT_CLASSES, config.input_size)
    return processing, generated_detection_splits(config.base_set(), processing)


def test_detector_trains_resumes_like_an_uninterrupted_run_and_exports_to_onnx(tiny_splits):
    processing, splits = tiny_splits
    train = splits["train"]
    x, boxes = train.x[:48], train.boxes[:48]
    losses: list[float] = []
    checkpoints: list[EpochCheckpoint] = []
    knobs = {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "seed": 3}
    whole = fit_detector(x, boxes, processing, **knobs,  # type: ignore[arg-type]
                         on_step=lambda r: losses.append(r["loss"]),
                         on_epoch=lambda r, capture: checkpoints.append(capture()))
    assert whole.steps == 6 and len(checkpoints) == 2 and losses[-1] < losses[0], losses
    # Resumed from the first epoch's checkpoint, the run ends where the uninterrupted one did.
    resumed = fit_detector(x, boxes, processing, **knobs, resume=checkpoints[0].state)  # type: ignore[arg-type]
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 1
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)

    model = whole.model.eval()
    assert isinstance(model, CenterNetDetector)
    features = served_detections(model, processing, x)[1]
    novelty = calibrate(features, served_detections(model, processing, splits["calibration"].x)[1])
    onnx = export_detector_onnx(model, processing, novelty)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "classes", "novelty"]
    pixels = splits["holdout"].x[:5]  # a batch size the export was not traced with
    ort_out = session.run(None, {"pixels": pixels})
    with torch.no_grad():
        torch_out = [t.numpy() for t in ServedDetector(model, processing, novelty).eval()(torch.from_numpy(pixels))]
    assert ort_out[0].shape == (5, 8, 4) and ort_out[1].shape == (5, 8) and ort_out[3].shape == (5,)
    np.testing.assert_allclose(ort_out[1], torch_out[1], atol=1e-5)
    np.testing.assert_array_equal(ort_out[2], torch_out[2])
    np.testing.assert_allclose(ort_out[0], torch_out[0], atol=1e-4)
    np.testing.assert_allclose(ort_out[3], torch_out[3], rtol=1e-3)
    # And the decisions serving makes from either are the same.
    assert decide_detections(processing, ort_out) == decide_detections(processing, torch_out)
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    assert weights.getbuffer().nbytes > 0


def test_a_snapshot_gives_the_detector_drawn_and_reviewed_boxes(tmp_path):
    from infra.store import LocalStore, put_frame, sha256_hex
    from vision.datasets import BaseSetSpec, ReviewedFrame, SnapshotRequest, materialize
    from vision.detector_training import load_detection_splits

    store = LocalStore(tmp_path / "objects")
    base = BaseSetSpec("snap-det", 3, 8, 4, 4)
    frames = generate_frames("reviewed-cam", 3, seed=77)
    reviewed_boxes = [{"x0": 0.2, "y0": 0.2, "x1": 0.4, "y1": 0.5, "label": "dent"}]
    reviewed = []
    for n, (frame, boxes) in enumerate(zip(frames, [reviewed_boxes, [], None], strict=True)):
        data = frame.jpeg()
        label = "dent" if boxes else ("ok" if boxes == [] else "stain")  # the last: a class decision only
        reviewed.append(ReviewedFrame(f"rf-{n}", put_frame(store, data, "image/jpeg"), sha256_hex(data), label, boxes))
    manifest, _, _ = materialize(store, SnapshotRequest(base, reviewed, 0))
    processing = Processing(DEFECT_CLASSES, 64)
    splits = load_detection_splits(store, manifest, processing)
    drawn = {f"{cam}/{f.index}": f.boxes for _, cam, seed, count, cond in base.split_sources()
             for f in generate_frames(cam, count, seed, cond)}
    generated = [e for e in manifest.entries if e.source == "generated" and e.split == "holdout"]
    assert splits["holdout"].boxes == [drawn[e.name] for e in generated]
    train = splits["train"]
    # 8 generated frames, then the reviewed ones: a box set, an empty one; the class-only defect left out.
    assert len(train.boxes) == 10 and train.reviewed.tolist() == [False] * 8 + [True, True]
    assert train.boxes[8:] == [(Box(0.2, 0.2, 0.4, 0.5, "dent"),), ()]
    assert train.x.shape == (10, 64, 64, 3)


def test_the_shadow_gate_judges_detection_versions_by_box_agreement():
    from activities.rollout import box_agreement

    dent = {"x0": 0.2, "y0": 0.2, "x1": 0.4, "y1": 0.4, "label": "dent", "score": 0.9}
    moved = {**dent, "x0": 0.3, "x1": 0.5}  # IoU 1/3 with dent
    faint = {**dent, "x0": 0.6, "x1": 0.8, "label": "stain", "score": 0.2}  # below what either acts on
    pairs: list[dict] = [{"shadow_boxes": [dent, faint], "production_boxes": [{**dent, "score": 0.7}]},  # agree
             {"shadow_boxes": [moved], "production_boxes": [dent]},  # same class, too far apart
             {"shadow_boxes": [], "production_boxes": []},  # both: no defect
             {"shadow_boxes": [{**dent, "label": "stain"}], "production_boxes": [dent]}]  # another class
    assert box_agreement(pairs) == 0.5


def test_photometric_jitter_moves_lighting_and_white_balance_but_no_pixel_position():
    from vision.detector_training import _photometric

    frames = np.full((64, 8, 8, 3), 200, np.uint8)
    frames[:, :4] = 100  # a pattern: jitter must not move it
    out = _photometric(np.random.default_rng(0), frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    gain = out[:, 4:].astype(np.float32) / 200
    assert gain.min() >= 0.55 * 0.9 - 0.01 and gain.max() <= 1.15 * 1.1 + 0.01
    assert gain.max() - gain.min() > 0.4  # frames differ: some dimmer than a 0.65 line, some brighter
    assert (gain[..., 0] != gain[..., 2]).any()  # and the channels' gains differ
    np.testing.assert_array_equal(out[:, :4] < out[:, 4:], np.ones_like(out[:, 4:], bool))


def test_a_retrained_detector_takes_its_bn_statistics_from_frames_mixed_like_its_batches(tiny_splits):
    """Fine-tuned on a dimmer line with half of each batch reviewed, the served statistics must be the
    batches' mix; the base set's alone cost the fine-tuned model what it learned (README, "The detector")."""
    import copy

    from vision.detector_training import DetectionArrays, DetectionRecipe, finish_detector, retrain_detector

    processing, splits = tiny_splits
    train = splits["train"]
    reviewed = np.zeros(len(train.boxes), bool)
    reviewed[-16:] = True
    x = train.x.copy()
    x[reviewed] = 0  # reviewed frames of a line gone dark
    splits = {**splits, "train": DetectionArrays(x, train.boxes, reviewed)}
    recipe = DetectionRecipe(epochs=1, batch_size=16, learning_rate=2e-3, reviewed_share=0.5)
    outcome, _, _, sets = retrain_detector(splits, processing, recipe, seed=1)
    mixed = outcome.model
    assert isinstance(mixed, CenterNetDetector) and "holdout" in sets
    unmixed = copy.deepcopy(mixed)
    finish_detector(unmixed, processing, splits, recipe.novelty_percentile, reviewed_share=0.0)
    # The first BN's mean on a dark frame: where statistics over half dark frames must sit nearer.
    def first(model: CenterNetDetector, kind: type) -> torch.nn.Module:
        return next(m for m in model.stem.modules() if isinstance(m, kind))

    with torch.no_grad():
        from vision.model import PixelInput

        unshuffled = mixed.stem[0](PixelInput(processing)(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)))
        dark_mean = first(mixed, torch.nn.Conv2d)(unshuffled).mean(dim=(0, 2, 3))
    to_dark = {name: float((first(m, torch.nn.BatchNorm2d).running_mean - dark_mean).norm()) for name, m in
               (("mixed", mixed), ("unmixed", unmixed))}
    assert to_dark["mixed"] < 0.7 * to_dark["unmixed"], to_dark
