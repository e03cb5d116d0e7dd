"""The naive baseline of bench/ingest.py: the service every "it worked in the demo" system starts as.
One FastAPI endpoint that decodes the uploaded frames and runs the same model synchronously inside the
request, answering when it is done. No queue, no durability, no retries, no review.

Run by bench/ingest.py as `python bench/naive_service.py PORT`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, File, UploadFile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.settings import get_settings  # noqa: E402
from infra.stack_urls import database_url  # noqa: E402
from infra.store import store_from_settings  # noqa: E402
from vision.artifacts import load_verified  # noqa: E402
from serving.backends.base import make_backend, required_files  # noqa: E402
from vision.decode import FrameRejected, decode_frame  # noqa: E402
from vision.registry import ModelRegistry  # noqa: E402


def build_app() -> FastAPI:
    settings = get_settings()
    version = ModelRegistry(database_url(settings)).resolve("production")
    manifest, files = load_verified(store_from_settings(settings), version.manifest_key, version.manifest_sha256,
                                    required_files("onnxruntime"))
    backend = make_backend("onnxruntime", manifest, files)
    processing = manifest.processing
    app = FastAPI()

    @app.post("/classify")
    def classify(frames: list[UploadFile] = File(...)) -> dict:
        pixels, results = [], []
        for upload in frames:
            try:
                pixels.append(processing.resize(decode_frame(upload.file.read()).pixels))
            except FrameRejected as exc:
                results.append({"rejected": str(exc)})
        if pixels:
            logits = backend.predict(np.stack(pixels))
            results += [{"label": label, "confidence": conf} for label, conf, _ in processing.decide(logits)]
        return {"model_version": manifest.version, "results": results}

    return app


if __name__ == "__main__":
    uvicorn.run(build_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
