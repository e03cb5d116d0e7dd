"""Raw backend throughput vs served throughput through Ray Serve, side by side in one run.

    .venv/bin/python bench/serving.py --backend onnxruntime --clients 64
    .venv/bin/python bench/serving.py --backend torch-cuda --input-size 224   # on a GPU host

1. One model version is registered (random initial weights: throughput does not depend on the
   weights; `--task detection --weights det.pt` serves a trained detector) in a registry and object
   store of its own.
2. Raw: the backend alone, built from the same verified artifacts, on resized uint8 frames (the model
   normalises in its graph), at each --batch-sizes and, on a CPU backend, in both ways of using the
   cores: one instance with every core's thread, or one single-threaded instance per core. The best
   is the reference, and the served classifier runs the same way (replicas x threads).
3. Served: the real Serve application (preprocessor + batched classifier, same backend) on a local Ray;
   --clients concurrent clients send object keys of generated JPEG frames for --duration seconds,
   --frames-per-request at a time (default: the batch workflow's chunk), through each --transport:
   `http` (Serve's proxy and JSON, as outside callers do) and `handle` (the application's handle, as
   the inference workers may). Served images/s therefore include fetch, decode, validation, resize,
   quality features and the Ray hops, plus HTTP for the first.
Prints images/s for each, `served/raw ratio: X.XX` and `served/raw-pipeline ratio: X.XX` per transport,
the CPU each part spent per served image, and p50/p95/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.schema_migrations import apply_migrations
from infra.settings import Settings
from infra.store import LocalStore, put_frame
from serving.app import AppOptions, resolved_layout
from serving.backends.base import (
    Backend,
    BackendUnavailable,
    default_backend,
    make_backend,
    required_files,
)
from serving.config import ServingConfig
from vision.artifacts import load_verified
from vision.camera import CLASSES, generate_frames
from vision.detector import DETECTOR_ARCHITECTURE, build_detector, decide_detections, load_detector
from vision.detector_training import DEFECT_CLASSES
from vision.model import build_model
from vision.processing import Processing
from vision.registry import ModelRegistry
from vision.training import TrainingResult


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _repeat_to(frames_u8: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([frames_u8] * int(np.ceil(n / len(frames_u8))))[:n]


def bench_raw(backends: list[Backend], frames_u8: np.ndarray, batch_sizes: list[int],
              seconds: float) -> dict[int, float]:
    """Images/s of the backend alone on resized uint8 frames (normalisation is in the model's graph),
    per batch size. With more than one backend instance, each runs on a thread of its own at the same
    time (onnxruntime and torch release the GIL): N single-threaded sessions, the other way to use N
    cores, which on small models often beats one session with N threads."""
    results = {}
    for bs in batch_sizes:
        batch = _repeat_to(frames_u8, bs)
        for backend in backends:
            backend.predict(batch)  # warm-up (allocations, CUDA kernels, graph optimisation)
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        with ThreadPoolExecutor(len(backends)) as pool:
            done = sum(pool.map(_predict_until, backends, [batch] * len(backends), [deadline] * len(backends)))
        results[bs] = done / (time.perf_counter() - started)
    return results


def _predict_until(backend: Backend, batch: np.ndarray, deadline: float) -> int:
    done = 0
    while time.perf_counter() < deadline:
        backend.predict(batch)
        done += len(batch)
    return done


def bench_raw_pipeline(backends: list[Backend], processing: Processing, jpegs: list[bytes], batch_size: int,
                       seconds: float) -> float:
    """What the machine does without Serve: decode, resize, quality features and the backend, in
    batches of `batch_size`, one loop per backend instance (the raw layout), each on a thread of its
    own. Separates Serve's own overhead from the preprocessing cost the backend-only figure leaves out."""
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    with ThreadPoolExecutor(len(backends)) as pool:
        done = sum(pool.map(_pipeline_until, backends, [processing] * len(backends), [jpegs] * len(backends),
                            [batch_size] * len(backends), [deadline] * len(backends)))
    return done / (time.perf_counter() - started)


def _pipeline_until(backend: Backend, processing: Processing, jpegs: list[bytes], batch_size: int,
                    deadline: float) -> int:
    from vision.decode import decode_frame
    from vision.quality import quality_features_batch

    done = 0
    while time.perf_counter() < deadline:
        chunk = [jpegs[(done + j) % len(jpegs)] for j in range(batch_size)]
        pixels = np.stack([processing.resize(decode_frame(data).pixels) for data in chunk])
        quality_features_batch(pixels)
        if hasattr(backend, "outputs") and processing.classes == DEFECT_CLASSES:  # a detector: boxes per frame
            decide_detections(processing, backend.outputs(pixels))
        else:
            processing.decide(backend.predict(pixels))
        done += batch_size
    return done


def _cpu_seconds_by_role(bench_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each part of the served path, from every process on the machine."""
    import psutil

    roles = (("Preprocessor", "preprocessor"), ("Classifier", "classifier"), ("ProxyActor", "HTTP proxy"))
    totals: dict[str, float] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is None:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        role = "load generator" if proc.info["pid"] == bench_pid else next(
            (name for marker, name in roles if marker in cmdline), "Ray and the rest of the machine")
        totals[role] = totals.get(role, 0.0) + times.user + times.system
    return totals


Ask = Callable[[list[dict[str, str]]], Awaitable[tuple[int, dict[str, Any]]]]


def http_transport(url: str, clients: int) -> tuple[Ask, Callable[[], Awaitable[None]]]:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    http = httpx.AsyncClient(base_url=url, timeout=300, limits=limits)

    async def ask(frames: list[dict[str, str]]) -> tuple[int, dict[str, Any]]:
        r = await http.post("/v1/classify", json={"frames": frames, "model": "production"})
        return r.status_code, r.json()

    return ask, http.aclose


def handle_transport() -> tuple[Ask, Callable[[], Awaitable[None]]]:
    from ray import serve

    from serving.client import APP_NAME
    from serving.schema import ClassifyRequest

    handle = serve.get_app_handle(APP_NAME)

    async def ask(frames: list[dict[str, str]]) -> tuple[int, dict[str, Any]]:
        status, body = await handle.classify_keys.remote(ClassifyRequest.model_validate({"frames": frames}))
        return status, body

    async def close() -> None:
        return None

    return ask, close


async def bench_served(transport: str, url: str, keys: list[str], clients: int, frames_per_request: int,
                       seconds: float, warmup: float) -> tuple[float, list[float], int, dict[str, float]]:
    """Images/s of the requests that complete inside the measured window, their latencies, errors,
    and the CPU seconds each part of the served path used in that window."""
    latencies: list[float] = []
    images = 0
    errors = 0
    ask, close = http_transport(url, clients) if transport == "http" else handle_transport()
    try:
        measuring_from = time.perf_counter() + warmup
        stop_at = measuring_from + seconds

        async def client(cid: int) -> None:
            nonlocal images, errors
            i = cid * frames_per_request
            while True:
                frames = [{"frame_id": f"c{cid}-{i + j}", "object_key": keys[(i + j) % len(keys)]}
                          for j in range(frames_per_request)]
                i += frames_per_request
                sent = time.perf_counter()
                status, body = await ask(frames)
                done = time.perf_counter()
                if not measuring_from <= done <= stop_at:
                    continue
                if status != 200:
                    errors += 1
                    continue
                latencies.append((done - sent) * 1000)
                images += len(body["predictions"])

        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        await asyncio.sleep(measuring_from - time.perf_counter())
        cpu_before = _cpu_seconds_by_role(os.getpid())
        await asyncio.sleep(stop_at - time.perf_counter())
        cpu_after = _cpu_seconds_by_role(os.getpid())
        for task in tasks:  # requests still in flight are not counted: stop them
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await close()
    cpu = {role: cpu_after[role] - cpu_before.get(role, 0.0) for role in cpu_after}
    return images / seconds, latencies, errors, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="onnxruntime", help="onnxruntime, torch-cuda, torch-cpu, tensorrt or auto")
    ap.add_argument("--architecture", default="mobilenet_v3_small")
    ap.add_argument("--task", default="classification", choices=("classification", "detection"),
                    help="detection: the detector (vision.detector), served as a detection version")
    ap.add_argument("--weights", default="", help="with --task detection: a trained detector's state dict "
                    "(`python -m bench.detector --save det.pt`) instead of initial weights")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--frames-per-request", type=int, default=Settings().classify_chunk_size,
                    help="frames in each request (default: what a batch workflow's classify activity sends)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of measured served load")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--raw-seconds", type=float, default=4.0, help="per batch size")
    ap.add_argument("--batch-sizes", default="1,8,16,32,64,128")
    ap.add_argument("--max-batch-size", type=int, default=None, help="served batch size (default: the raw best)")
    ap.add_argument("--batch-wait-ms", type=float, default=10.0)
    ap.add_argument("--layout", default=None, help="REPLICASxTHREADS for the backend, e.g. 1x2 or 2x1 "
                    "(default: on a CPU backend both, measured raw, and the faster one is served)")
    ap.add_argument("--preprocessor-replicas", type=int, default=1)
    ap.add_argument("--preprocess-threads", type=int, default=ServingConfig.preprocess_threads,
                    help="requests each preprocessor replica prepares at once")
    ap.add_argument("--transport", default="http,handle", help="http, handle, or both (comma-separated)")
    ap.add_argument("--app-layout", default="auto", choices=("auto", "pair", "fused"),
                    help="the application's layout: fused (each replica decodes and classifies; the CPU default), "
                         "pair (preprocessor + batching classifier; the GPU default)")
    ap.add_argument("--database-url", default=os.environ.get("SIGHTLINE_BENCH_DATABASE_URL", ""),
                    help="a Postgres to create the throwaway registry in, instead of starting one")
    ap.add_argument("--frames", type=int, default=256, help="distinct generated frames to cycle through")
    args = ap.parse_args()
    backend_name = default_backend() if args.backend == "auto" else args.backend
    cpus = os.cpu_count() or 1
    if args.layout:
        replicas, threads = (int(v) for v in args.layout.lower().split("x"))
        layouts = [(replicas, threads)]
    elif backend_name in ("onnxruntime", "torch-cpu") and cpus > 1:
        layouts = [(1, cpus), (cpus, 1)]
    else:
        layouts = [(1, cpus)]  # a GPU backend: one instance owns the device

    work = Path(tempfile.mkdtemp(prefix="sl-bench-"))
    work.chmod(0o755)
    pg = None
    try:
        db_url = args.database_url
        if not db_url:
            from infra.postgres_server import LocalPostgres

            pg = LocalPostgres(work / "pgdata")
            pg.start()
            db_url = pg.create_database(f"bench_{uuid.uuid4().hex[:6]}")
        apply_migrations(db_url)
        store = LocalStore(work / "objects")
        registry = ModelRegistry(db_url)
        from vision.publishing import register_trained

        if args.task == "detection":
            processing = Processing(classes=DEFECT_CLASSES, input_size=args.input_size)
            args.architecture = DETECTOR_ARCHITECTURE
            detector = (load_detector(len(DEFECT_CLASSES), Path(args.weights).read_bytes()) if args.weights
                        else build_detector(len(DEFECT_CLASSES)).eval())
            note = f"trained ({args.weights}), for benchmarking" if args.weights else "untrained, for benchmarking"
            result = TrainingResult(detector, processing, DETECTOR_ARCHITECTURE, {"note": note}, "bench", {},
                                    task="detection")
        else:
            processing = Processing(classes=CLASSES, input_size=args.input_size)
            model = build_model(args.architecture, len(CLASSES)).eval()
            result = TrainingResult(model, processing, args.architecture, {"note": "untrained, for benchmarking"},
                                    "bench", {})
        version = register_trained(registry, store, result, created_by="bench")
        registry.set_alias("production", version.version, "bench", "benchmark")
        manifest, files = load_verified(store, version.manifest_key, version.manifest_sha256,
                                        required_files(backend_name))

        frames = generate_frames("bench-line", args.frames, seed=99)
        jpegs = [f.jpeg() for f in frames]
        keys = [put_frame(store, data, "image/jpeg") for data in jpegs]
        frames_u8 = np.stack([processing.resize(f.image) for f in frames])

        print(f"model {version.version}: {args.architecture} {args.input_size}px, backend {backend_name}, {cpus} cpus")
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        best = (0.0, 0, layouts[0])  # images/s, batch size, layout
        for replicas, threads in layouts:
            try:
                backends = [make_backend(backend_name, manifest, files, threads=threads) for _ in range(replicas)]
            except BackendUnavailable as exc:
                raise SystemExit(f"backend {backend_name} cannot run here: {exc}") from None
            for bs, ips in bench_raw(backends, frames_u8, batch_sizes, args.raw_seconds).items():
                print(f"raw {replicas}x{threads} (instances x threads) batch {bs:4d}: {ips:9.1f} images/s")
                best = max(best, (ips, bs, (replicas, threads)))
        raw_before, best_bs, (replicas, threads) = best
        backends = [make_backend(backend_name, manifest, files, threads=threads) for _ in range(replicas)]
        pipeline = bench_raw_pipeline(backends, processing, jpegs, best_bs, args.raw_seconds)
        load_raw = os.getloadavg()[0]

        from infra.postgres_server import free_port
        from serving.cluster import start_ray
        from serving.deploy import classifier_cpus, run_app, stop

        config = ServingConfig(database_url=db_url, store_url=f"file://{store.root}", backend=backend_name,
                               backend_threads=threads, preprocess_threads=args.preprocess_threads)
        port = free_port()
        (work / "ray").mkdir()
        start_ray(temp_dir=str(work / "ray"))
        try:
            max_bs = args.max_batch_size or best_bs  # the classifier splits bigger requests into batches of this
            options = AppOptions(preprocessor_replicas=args.preprocessor_replicas, classifier_replicas=replicas,
                                 classifier_cpus=classifier_cpus(replicas, args.preprocessor_replicas),
                                 max_batch_size=max_bs, batch_wait_timeout_s=args.batch_wait_ms / 1000,
                                 layout=args.app_layout, fused_replicas=replicas)
            layout = resolved_layout(config, options)
            run_app(config, "127.0.0.1", port, options)
            runs = {transport: asyncio.run(bench_served(
                transport, f"http://127.0.0.1:{port}", keys, args.clients, args.frames_per_request, args.duration,
                args.warmup)) for transport in args.transport.split(",")}
            load_served = os.getloadavg()[0]
        finally:
            stop()
        # The raw run again, after the served one: on a shared machine the load moves, and the ratio
        # should compare like with like, so the reference is the mean of the two raw runs.
        raw_after = bench_raw(backends, frames_u8, [best_bs], args.raw_seconds)[best_bs]
        best_raw = (raw_before + raw_after) / 2

        print(f"raw:    {best_raw:9.1f} images/s (best: {replicas}x{threads}, batch size {best_bs}; {raw_before:.1f} "
              f"before and {raw_after:.1f} after the served run)")
        print(f"raw pipeline (decode + resize + quality + model, no Serve, {replicas}x{threads}, batch {best_bs}): "
              f"{pipeline:9.1f} images/s")
        for transport, (served, latencies, errors, cpu) in runs.items():
            shape = (f"fused: {replicas} replica(s) x {threads} thread(s), passes of {config.infer_chunk}"
                     if layout == "fused" else f"pair: {replicas} classifier replica(s) x {threads} thread(s), "
                     f"max batch {max_bs}, wait {args.batch_wait_ms} ms")
            print(f"served over {transport}: {served:9.1f} images/s ({args.clients} clients, "
                  f"{args.frames_per_request} frames/request, {shape}, {errors} errors)")
            print(f"  {transport} served/raw ratio: {served / best_raw:.2f}")
            print(f"  {transport} served/raw-pipeline ratio: {served / pipeline:.2f}")
            served_images = served * args.duration
            if served_images:
                print("  CPU ms per served image: " + ", ".join(
                    f"{role} {seconds * 1000 / served_images:.2f}"
                    for role, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]))
                    + f"; raw backend alone: {cpus * 1000 / best_raw:.2f} at full load")
            print(f"  latency per request ms: p50 {percentile(latencies, 50):.1f}  p95 {percentile(latencies, 95):.1f}"
                  f"  p99 {percentile(latencies, 99):.1f}  (n={len(latencies)}, "
                  f"mean {statistics.fmean(latencies) if latencies else float('nan'):.1f})")
        print(f"1-min load average: {load_raw:.2f} during raw, {load_served:.2f} during served "
              f"({os.cpu_count()} cpus; other processes on the machine count too)")
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
