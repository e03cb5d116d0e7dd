"""Does decoding at the model's scale change what the model says? Accuracy and the unfamiliar rate on the
production model's held-out generated frames, decoded in full (as the naive service does) and at the
smallest JPEG DCT scale that still covers the model's input size (as serving does), at the generated
frames' own 160 px and as 1280x720 camera frames of the same scenes; and the CPU each way costs.

Needs the local stack's registry (`make up`):
    .venv/bin/python bench/decode_scale.py
The throughput issue's bound: accuracy within 0.5 points, and at most 1% of normal frames unfamiliar.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from serving.backends.base import make_backend, required_files
from vision.artifacts import load_verified
from vision.datasets import generate_base_frames
from vision.decode import decode_frame
from vision.registry import ModelRegistry
from vision.training import PROFILES


def at_resolution(jpeg: bytes, resolution: tuple[int, int] | None) -> bytes:
    """The frame as a camera of that resolution would send it (the scene stretched to the width: the
    model's square resize undoes it)."""
    if resolution is None:
        return jpeg
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).resize(resolution).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="standard", help="the training profile whose held-out set to use")
    parser.add_argument("--frames", type=int, default=400, help="held-out frames to check")
    args = parser.parse_args()
    settings = get_settings()
    version = ModelRegistry(database_url(settings)).resolve("production")
    manifest, files = load_verified(store_from_settings(settings), version.manifest_key, version.manifest_sha256,
                                    required_files("onnxruntime"))
    backend = make_backend("onnxruntime", manifest, files)
    p = manifest.processing
    held_out = [(label, data) for split, label, _, data in generate_base_frames(PROFILES[args.profile].base_set())
                if split == "holdout"][: args.frames]
    print(f"model {version.version} ({manifest.architecture}, {p.input_size} px), {len(held_out)} held-out frames")
    for resolution in (None, (1280, 720)):
        frames = [(label, at_resolution(data, resolution)) for label, data in held_out]
        shape = f"{resolution[0]}x{resolution[1]}" if resolution else "160x160"
        results = {}
        for name, min_side in (("full decode", 0), ("DCT-scaled decode", p.input_size)):
            started = time.process_time()
            pixels = np.stack([p.resize(decode_frame(data, min_side=min_side).pixels) for _, data in frames])
            cpu_ms = (time.process_time() - started) * 1000 / len(frames)
            logits, novelty = backend.scores(pixels)
            decisions = p.decide(logits, novelty)
            accuracy = float(np.mean([d.label == label for d, (label, _) in zip(decisions, frames, strict=True)]))
            unfamiliar = float(np.mean([d.unfamiliar for d in decisions]))
            results[name] = accuracy
            print(f"  {shape} {name}: accuracy {accuracy * 100:.2f}%, unfamiliar {unfamiliar * 100:.2f}%, "
                  f"decode + resize {cpu_ms:.2f} ms of CPU per frame")
        delta = (results["DCT-scaled decode"] - results["full decode"]) * 100
        print(f"  {shape}: accuracy changed by {delta:+.2f} points")


if __name__ == "__main__":
    main()
