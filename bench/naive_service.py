"""The naive baseline of bench/ingest.py: the service every "it worked in the demo" system starts as.
One FastAPI endpoint that decodes the uploaded frames and runs the same model synchronously inside the
request, answering when it is done. No queue, no durability, no retries, no review.

Run by bench/ingest.py as `python bench/naive_service.py PORT`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, File, UploadFile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from serving.backends.base import make_backend, required_files
from vision.artifacts import load_verified
from vision.decode import FrameRejected, decode_frame
from vision.registry import ModelRegistry


def build_app() -> FastAPI:
    settings = get_settings()
    version = ModelRegistry(database_url(settings)).resolve("production")
    manifest, files = load_verified(store_from_settings(settings), version.manifest_key, version.manifest_sha256,
                                    required_files("onnxruntime"))
    backend = make_backend("onnxruntime", manifest, files)
    processing = manifest.processing
    app = FastAPI()

    @app.post("/classify")
    def classify(frames: list[UploadFile] = File(...)) -> dict[str, Any]:
        pixels: list[np.ndarray] = []
        results: list[dict[str, Any]] = []
        for upload in frames:
            try:
                pixels.append(processing.resize(decode_frame(upload.file.read()).pixels))
            except FrameRejected as exc:
                results.append({"rejected": str(exc)})
        if pixels:
            logits = backend.predict(np.stack(pixels))
            results += [{"label": d.label, "confidence": d.confidence} for d in processing.decide(logits)]
        return {"model_version": manifest.version, "results": results}

    return app


if __name__ == "__main__":
    uvicorn.run(build_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
