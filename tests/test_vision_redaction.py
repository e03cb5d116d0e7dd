"""vision.redaction on its own: a real photo with a face (scikit-image's data.astronaut()), regions blurred
and filled, what is left alone left alone, and settings it refuses."""

from __future__ import annotations

import io

import numpy as np
import pytest
import simplejpeg
from PIL import Image
from skimage import data

from vision.decode import FrameRejected
from vision.redaction import InvalidRegion, Redacted, RedactionSettings, Region, encode_jpeg, redact

MCU = 16  # a 4:2:0 JPEG's block of pixels: each is encoded on its own


def astronaut_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def decoded(jpeg: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(jpeg).astype(np.int16)


def untouched_mask(shape: tuple[int, ...], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Pixels away from every 16x16 block a box touches (and the one pixel around those blocks that the
    decoder's chroma upsampling reads from them)."""
    height, width = shape[:2]
    mask = np.ones((height, width), bool)
    for x, y, w, h in boxes:
        x0, y0 = max(0, (x // MCU) * MCU - 2), max(0, (y // MCU) * MCU - 2)
        x1, y1 = min(width, ((x + w - 1) // MCU + 1) * MCU + 2), min(height, ((y + h - 1) // MCU + 1) * MCU + 2)
        mask[y0:y1, x0:x1] = False
    return mask


def test_a_face_is_blurred_and_the_rest_of_the_photo_is_left_as_it_was() -> None:
    source = astronaut_jpeg()
    result = redact(source, RedactionSettings(7, faces=True))
    assert isinstance(result, Redacted) and result.revision == 7 and result.data[:3] == b"\xff\xd8\xff"
    assert (result.width, result.height) == (512, 512)
    # Eileen Collins' face is at about (177-272, 66-161) in data.astronaut(): one face, found there.
    assert len(result.faces) == 1, result.faces
    x, y, w, h = result.faces[0]
    assert x <= 180 and y <= 70 and x + w >= 270 and y + h >= 158, result.faces
    original, stored = decoded(source), decoded(result.data)
    face = np.abs(stored[y:y + h, x:x + w] - original[y:y + h, x:x + w]).mean()
    assert face > 15, f"the face changed by only {face:.1f} grey levels on average"  # measured 25.6
    # Outside it: the original's pixels, composited untouched, then one JPEG encode. Against the original
    # re-encoded by the same encoder they are bit-identical away from the blocks the face touched; against
    # what the camera sent, the one re-encode's drift only (measured: mean 0.47, 99% within 4 levels).
    rest = untouched_mask(original.shape, list(result.faces))
    reencoded = decoded(encode_jpeg(original.astype(np.uint8)))
    assert np.array_equal(stored[rest], reencoded[rest])
    drift = np.abs(stored - original)[rest]
    assert drift.mean() < 1.0 and np.percentile(drift, 99) <= 6, (drift.mean(), np.percentile(drift, 99))


def test_regions_are_filled_and_blurred_only_inside() -> None:
    source = astronaut_jpeg()
    fill = Region.rect(0.75, 0.75, 1.0, 1.0, "fill")
    triangle = Region("blur", ((0.30, 0.08), (0.56, 0.08), (0.43, 0.36)))  # over the face: detail to lose
    result = redact(source, RedactionSettings(8, regions=(fill, triangle)))
    assert result.faces == () and result.regions == 2 and result.summary() == {"revision": 8, "faces": 0,
                                                                                 "regions": 2}
    original, stored = decoded(source), decoded(result.data)
    # Filled: black inside, a few pixels in from its edge (the encode blurs the edge itself).
    assert stored[392:510, 392:510].max() <= 3
    # Blurred: well inside the triangle the detail is gone (neighbouring pixels' differences: measured 0.9
    # against 7.7 grey levels) and the pixels moved far from the original's (measured 30.6 on average).
    inner = (slice(60, 100), slice(200, 240))
    assert np.abs(np.diff(stored[inner], axis=1)).mean() < 0.25 * np.abs(np.diff(original[inner], axis=1)).mean()
    assert np.abs(stored[inner] - original[inner]).mean() > 15
    # Outside the triangle's bounding box (pixels 154-287 x 41-184) and the fill: untouched but for the encode.
    rest = untouched_mask(original.shape, [(153, 40, 136, 146), (383, 383, 129, 129)])
    assert np.array_equal(stored[rest], decoded(encode_jpeg(original.astype(np.uint8)))[rest])


def test_the_same_frame_under_the_same_revision_redacts_to_the_same_bytes() -> None:
    settings = RedactionSettings(3, faces=True, regions=(Region.rect(0, 0, 0.1, 0.1, "fill"),))
    assert redact(astronaut_jpeg(), settings).data == redact(astronaut_jpeg(), settings).data


def test_a_png_is_redacted_to_a_jpeg() -> None:
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()[:200, 100:350]).save(buf, "PNG")
    result = redact(buf.getvalue(), RedactionSettings(4, regions=(Region.rect(0, 0, 0.5, 0.5, "fill"),)))
    assert result.content_type == "image/jpeg" and (result.width, result.height) == (250, 200)
    assert decoded(result.data)[4:88, 4:108].max() <= 6  # black, but for the encode near its edges


def test_settings_that_change_nothing_are_not_active() -> None:
    assert not RedactionSettings(1).active
    assert RedactionSettings(1, faces=True).active and RedactionSettings(1, regions=(Region.rect(0, 0, 1, 1),)).active
    parsed = RedactionSettings.from_json(9, True, [{"mode": "fill", "rect": [0, 0, 0.5, 0.5]},
                                                   {"mode": "blur", "polygon": [[0, 0], [1, 0], [1, 1]]}])
    assert parsed.regions[0] == Region.rect(0, 0, 0.5, 0.5, "fill") and len(parsed.regions[1].polygon) == 3


@pytest.mark.parametrize(("region", "reason"), [
    ({"mode": "smudge", "rect": [0, 0, 1, 1]}, "mode"),
    ({"mode": "blur", "rect": [0, 0, 1.2, 1]}, "outside the frame"),
    ({"mode": "blur", "rect": [0.5, 0, 0.2, 1]}, "x0 < x1"),
    ({"mode": "fill", "polygon": [[0, 0], [1, 1]]}, "3-64 points"),
    ({"mode": "fill"}, "rect"),
])
def test_bad_regions_are_refused_with_the_reason(region: dict, reason: str) -> None:
    with pytest.raises(InvalidRegion, match=reason):
        Region.from_json(region)


def test_bytes_that_are_not_a_frame_are_refused_not_passed_through() -> None:
    with pytest.raises(FrameRejected):
        redact(b"\xff\xd8\xff not really a jpeg", RedactionSettings(1, faces=True))
