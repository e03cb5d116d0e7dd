"""What redaction before storage costs a frame, side by side: faces on (Haar cascade, plus one region),
regions only (two: a rectangle filled, a polygon blurred), and off (a camera without settings: the API's
one cached settings lookup per batch, shared by its frames, and the bytes stored as received), on the
generated 160 px frames and on the same scenes as 1280x720 camera frames.

No stack needed:
    .venv/bin/python bench/redaction.py [--frames 40] [--batch 32]
Timings are the process's CPU time a frame (every thread OpenCV uses counted), the median of --repeats
runs: less sensitive than wall time to other load on a shared machine, though not immune to it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.services import privacy
from vision.camera import generate_frames
from vision.redaction import RedactionSettings, Region, redact

SETTINGS = {
    "faces on": RedactionSettings(1, faces=True, regions=(Region.rect(0.0, 0.0, 0.2, 0.15, "fill"),)),
    "regions only": RedactionSettings(2, regions=(Region.rect(0.0, 0.0, 0.2, 0.15, "fill"),
                                                  Region("blur", ((0.6, 0.6), (0.95, 0.6), (0.8, 0.95))))),
}


def frames_at(count: int, resolution: tuple[int, int] | None) -> list[bytes]:
    frames = [f.jpeg() for f in generate_frames("bench-redaction", count, seed=24)]
    if resolution is None:
        return frames
    out = []
    for data in frames:
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).resize(resolution).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def redact_ms(frames: list[bytes], settings: RedactionSettings) -> float:
    started = time.process_time()
    for data in frames:
        redact(data, settings)
    return (time.process_time() - started) * 1000 / len(frames)


def off_ms(frames: list[bytes], batch: int) -> float:
    """A camera without settings: per batch, the cached lookup (warm, as it is for every batch but the
    first in CACHE_TTL_S); per frame, nothing: its bytes go to the store as they came."""
    privacy._cache[("bench", "no-settings")] = (float("inf"), None)

    async def run() -> float:
        started = time.process_time()
        for start in range(0, len(frames), batch):
            settings = await privacy.in_force(None, "bench", "no-settings")  # type: ignore[arg-type]
            assert settings is None
            stored = frames[start:start + batch]  # what the store is handed: the received bytes themselves
            assert all(s is f for s, f in zip(stored, frames[start:start + batch], strict=True))
        return (time.process_time() - started) * 1000 / len(frames)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32, help="frames a batch (the off path's lookup is per batch)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for label, resolution in (("160x160 generated", None), ("1280x720", (1280, 720))):
        frames = frames_at(args.frames, resolution)
        redact(frames[0], SETTINGS["faces on"])  # the cascade loads once per thread, not per frame
        cells = {name: statistics.median(redact_ms(frames, s) for _ in range(args.repeats))
                 for name, s in SETTINGS.items()}
        cells["off"] = statistics.median(off_ms(frames, args.batch) for _ in range(args.repeats))
        rows.append((label, cells, sum(len(f) for f in frames) // len(frames)))
    print(f"CPU ms a frame ({args.frames} frames, median of {args.repeats}; off: one cached lookup per "
          f"{args.batch}-frame batch)")
    print(f"{'frames':<20}{'bytes':>9}{'faces on':>11}{'regions only':>14}{'off':>10}{'faces/off':>12}")
    for label, cells, size in rows:
        ratio = cells["faces on"] / cells["off"] if cells["off"] > 0 else float("inf")
        print(f"{label:<20}{size:>9}{cells['faces on']:>11.2f}{cells['regions only']:>14.2f}{cells['off']:>10.4f}"
              f"{ratio:>11.0f}x")


if __name__ == "__main__":
    main()
