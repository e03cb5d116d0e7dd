"""The generated camera: deterministic by seed, balanced classes, conditions that really change frames."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from vision.camera import CLASSES, Conditions, generate_frames
from vision.decode import decode_frame
from vision.processing import Processing
from vision.quality import quality_features


def _features(frames):
    p = Processing(classes=CLASSES, input_size=96)
    feats = [quality_features(p.resize(f.image)) for f in frames]
    return {k: sum(f[k] for f in feats) / len(feats) for k in feats[0]}


def test_same_seed_same_frames_and_other_seed_other_frames():
    a = generate_frames("line-1", 8, seed=3)
    b = generate_frames("line-1", 8, seed=3)
    c = generate_frames("line-1", 8, seed=4)
    assert [f.jpeg() for f in a] == [f.jpeg() for f in b]
    assert [f.label for f in a] == [f.label for f in b]
    assert [f.image.tobytes() for f in a] != [f.image.tobytes() for f in c]
    assert generate_frames("line-2", 1, seed=3)[0].image.tobytes() != a[0].image.tobytes()


def test_every_class_appears_in_fair_shares():
    labels = [f.label for f in generate_frames("line-1", 200, seed=1)]
    assert len(CLASSES) >= 4
    for c in CLASSES:
        assert 30 <= labels.count(c) <= 70, (c, labels.count(c))


def test_conditions_move_the_quality_features():
    normal = _features(generate_frames("line-1", 12, seed=2))
    dim = _features(generate_frames("line-1", 12, seed=2, conditions=Conditions(brightness=0.6)))
    blurred = _features(generate_frames("line-1", 12, seed=2, conditions=Conditions(blur=2.0)))
    tinted = _features(generate_frames("line-1", 12, seed=2, conditions=Conditions(tint=(1.2, 1.0, 0.7))))
    assert dim["brightness"] < 0.7 * normal["brightness"]
    assert blurred["sharpness"] < 0.5 * normal["sharpness"]
    assert tinted["r_mean"] - tinted["b_mean"] > normal["r_mean"] - normal["b_mean"] + 0.05


def test_changed_defect_style_draws_other_pixels_for_the_same_frame():
    a = generate_frames("line-1", 12, seed=5)
    b = generate_frames("line-1", 12, seed=5, conditions=Conditions(defect_style="changed"))
    for fa, fb in zip(a, b, strict=True):
        same = fa.image.tobytes() == fb.image.tobytes()
        assert same == (fa.label == "ok"), fa.label  # only defects change; ok frames stay identical


@pytest.mark.parametrize("bad", [{"brightness": 0}, {"viewpoint_shift": 2}, {"tint": (1, 1)}, {"defect_style": "x"}])
def test_invalid_conditions_are_refused(bad):
    with pytest.raises(ValueError):
        Conditions(**bad)


def test_camera_command_writes_decodable_jpegs_and_labels(tmp_path):
    import typer

    from cli.camera import camera_command

    app = typer.Typer()
    app.command("camera")(camera_command)
    app.command("other")(lambda: None)  # two commands, so typer keeps the `camera` name as in sightline
    result = CliRunner().invoke(app, ["camera", "--camera-id", "line-1", "--count", "6", "--brightness", "0.6",
                                      "--seed", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert len(rows) == 6 and {r["label"] for r in rows} <= set(CLASSES)
    expected = generate_frames("line-1", 6, seed=1, conditions=Conditions(brightness=0.6))
    for row, frame in zip(rows, expected, strict=True):
        data = (tmp_path / row["filename"]).read_bytes()
        decoded = decode_frame(data)
        assert decoded.format == "JPEG" and row["label"] == frame.label
        assert decoded.pixels.shape == (decoded.height, decoded.width, 3)
