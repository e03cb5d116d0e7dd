"""The Ray Serve application, in one of two layouts.

The pair: a preprocessing deployment (HTTP ingress, CPU replicas) composed with `bind()` in front of a
classifier deployment that batches frames across requests with `@serve.batch`: the layout for a
classifier on a GPU. Fused: one deployment whose replicas each fetch, decode and classify a request's
frames in their own process (single-threaded onnxruntime, one replica per core): the layout for CPU
hosts, where the hop between two replicas cost more than cross-request batching gained.

Request path: POST /v1/classify with object keys -> Preprocessor (serving.preprocessor) fetches each
frame from the object store, decodes and validates it, resizes it and computes quality features;
frames it cannot use come back as per-frame rejections, never as a failed batch -> Classifier
(serving.classifier) batches the pixels of concurrent requests, runs the backend, and answers with the
version that produced the numbers. The two exchange the values of serving.messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ray import serve

from serving.backends.base import default_backend
from serving.classifier import BATCH_WAIT_TIMEOUT_S, MAX_BATCH_SIZE, Classifier
from serving.client import APP_NAME  # noqa: F401  (declared with the client, which may not import Ray)
from serving.config import ServingConfig
from serving.preprocessor import Preprocessor


@dataclass(frozen=True)
class AppOptions:
    """How the application is laid out on the cluster, and how the classifier batches."""

    preprocessor_replicas: int = 1
    classifier_replicas: int = 1
    # Ray resources per replica: they decide placement, they do not limit use.
    preprocessor_cpus: float = 0.5
    classifier_cpus: float = 1.0
    # None: one GPU where the backend runs on CUDA. Ray hides GPUs from actors that did not ask for one.
    classifier_gpus: float | None = None
    # Frames per forward pass and how long a pass waits for more. A redeploy that changes only these
    # reaches the running classifier replicas (user_config), without restarting them.
    max_batch_size: int = MAX_BATCH_SIZE
    batch_wait_timeout_s: float = BATCH_WAIT_TIMEOUT_S
    # "pair", "fused", or "auto": fused unless the classifier runs on a GPU.
    layout: str = "auto"
    fused_replicas: int | None = None  # None: one per core
    fused_cpus: float = 0.5  # placement only: two fit on a 2-core head beside whatever else asks


def resolved_layout(config: ServingConfig, options: AppOptions) -> str:
    if options.layout not in ("auto", "pair", "fused"):
        raise ValueError(f"unknown serving layout {options.layout!r}: use auto, pair or fused")
    if options.layout != "auto":
        return options.layout
    return "pair" if _needs_gpu(config.backend) else "fused"


def _needs_gpu(backend: str) -> bool:
    return backend in ("torch-cuda", "tensorrt") or (backend == "auto" and default_backend() == "torch-cuda")


def build_app(config: ServingConfig, options: AppOptions) -> serve.Application:
    if resolved_layout(config, options) == "fused":
        replicas = options.fused_replicas or os.cpu_count() or 1
        fused = Preprocessor.options(  # type: ignore[attr-defined]
            num_replicas=replicas, ray_actor_options={"num_cpus": options.fused_cpus})
        return fused.bind(None, config)
    gpus = options.classifier_gpus
    if gpus is None:
        gpus = 1 if _needs_gpu(config.backend) else 0
    batching = {"max_batch_size": options.max_batch_size, "batch_wait_timeout_s": options.batch_wait_timeout_s}
    # The ignores: @serve.deployment makes each class a Deployment, which mypy cannot see through a
    # class decorator.
    classifier = Classifier.options(  # type: ignore[attr-defined]
        num_replicas=options.classifier_replicas, user_config=batching,
        ray_actor_options={"num_cpus": options.classifier_cpus, "num_gpus": gpus},
    ).bind(config)
    preprocessor = Preprocessor.options(  # type: ignore[attr-defined]
        num_replicas=options.preprocessor_replicas, ray_actor_options={"num_cpus": options.preprocessor_cpus})
    return preprocessor.bind(classifier, config)
