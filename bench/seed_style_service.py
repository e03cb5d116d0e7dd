"""The second baseline of bench/ingest.py: a service as teams write it from the examples they start from
(FastAPI and PyTorch tutorials): each uploaded frame opened with Pillow, converted to RGB and resized,
turned into a normalised tensor, and the model run in eager PyTorch inside the request. No queue, no
durability, no retries, no review, and none of Sightline's serving work (no onnxruntime, no OpenCV resize).

The same trained weights as production, so the answers are the same model's. Kept as a team would
write it: changing it to move a ratio would defeat its purpose, which is to show what Sightline gives a
team over the code it would have written.

Run by bench/ingest.py as `python bench/seed_style_service.py PORT`.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image, UnidentifiedImageError
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from vision.artifacts import WEIGHTS, load_verified
from vision.model import load_model
from vision.registry import ModelRegistry


def build_app() -> FastAPI:
    settings = get_settings()
    version = ModelRegistry(database_url(settings)).resolve("production")
    manifest, files = load_verified(store_from_settings(settings), version.manifest_key, version.manifest_sha256,
                                    (WEIGHTS,))
    p = manifest.processing
    model = load_model(manifest.architecture, len(p.classes), files[WEIGHTS])
    to_tensor = transforms.Compose([
        transforms.Resize((p.input_size, p.input_size)),
        transforms.ToTensor(),
        transforms.Normalize(p.mean, p.std),
    ])
    app = FastAPI()

    @app.post("/classify")
    def classify(frames: list[UploadFile] = File(...)) -> dict[str, Any]:
        tensors: list[torch.Tensor] = []
        results: list[dict[str, Any]] = []
        for upload in frames:
            try:
                tensors.append(to_tensor(Image.open(io.BytesIO(upload.file.read())).convert("RGB")))
            except (UnidentifiedImageError, OSError) as exc:
                results.append({"rejected": str(exc)})
        if tensors:
            with torch.no_grad():
                probabilities = torch.softmax(model(torch.stack(tensors)), dim=1)
            confidence, index = probabilities.max(dim=1)
            results += [{"label": p.classes[int(i)], "confidence": float(c)} for c, i in zip(confidence, index,
                                                                                          strict=True)]
        return {"model_version": manifest.version, "results": results}

    return app


if __name__ == "__main__":
    uvicorn.run(build_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
