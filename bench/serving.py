"""Raw backend throughput vs served throughput through Ray Serve, side by side in one run.

    .venv/bin/python bench/serving.py --backend onnxruntime --clients 64
    .venv/bin/python bench/serving.py --backend torch-cuda --input-size 224   # on a GPU host

1. One model version is registered (random initial weights by default: throughput does not depend on
   the weights) in a registry and object store of its own, unless --database-url/--model name one.
2. Raw: the backend alone, built from the same verified artifacts, on already-preprocessed batches,
   at each --batch-sizes; the best is the reference.
3. Served: the real Serve application (preprocessor + batched classifier, same backend) on a local Ray;
   --clients concurrent HTTP clients send object keys of generated JPEG frames for --duration seconds.
   Served images/s therefore include fetch, decode, resize, quality features, HTTP and Ray hops.
Prints images/s for both, `served/raw ratio: X.XX` on a line of its own, and p50/p95/p99 latency.
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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.db import apply_migrations
from infra.store import LocalStore, put_frame
from serving.artifacts import load_verified
from serving.backends.base import (
    BackendUnavailable,
    default_backend,
    make_backend,
    required_files,
)
from serving.camera import CLASSES, generate_frames
from serving.model import build_model
from serving.processing import Processing
from serving.registry import ModelRegistry
from serving.training import TrainingResult


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def bench_raw(backend, processing: Processing, frames_u8: np.ndarray, batch_sizes: list[int], seconds: float) -> dict[int, float]:
    results = {}
    for bs in batch_sizes:
        reps = int(np.ceil(bs / len(frames_u8)))
        batch = processing.normalize(np.concatenate([frames_u8] * reps)[:bs])
        backend.predict(batch)  # warm-up (allocations, CUDA kernels, graph optimisation)
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            backend.predict(batch)
            n += bs
        results[bs] = n / (time.perf_counter() - started)
    return results


def bench_raw_pipeline(backend, processing: Processing, jpegs: list[bytes], batch_size: int, seconds: float) -> float:
    """What one process does per frame without Serve: decode, resize, quality features, normalise and
    run the backend, in batches of `batch_size`. Separates Serve's own overhead from the preprocessing
    cost that the backend-only figure leaves out."""
    from serving.decode import decode_frame
    from serving.quality import quality_features_batch

    n, i, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = [jpegs[(i + j) % len(jpegs)] for j in range(batch_size)]
        i += batch_size
        pixels = np.stack([processing.resize(decode_frame(data).image) for data in chunk])
        quality_features_batch(pixels)
        processing.decide(backend.predict(processing.normalize(pixels)))
        n += batch_size
    return n / (time.perf_counter() - started)


async def bench_served(url: str, keys: list[str], clients: int, frames_per_request: int, seconds: float, warmup: float):
    import httpx

    latencies: list[float] = []
    images = 0
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        measuring_from = time.perf_counter() + warmup
        stop_at = measuring_from + seconds

        async def client(cid: int) -> None:
            nonlocal images, errors
            i = cid * frames_per_request
            while True:
                now = time.perf_counter()
                if now >= stop_at:
                    return
                body = {"frames": [{"frame_id": f"c{cid}-{i + j}", "object_key": keys[(i + j) % len(keys)]}
                                   for j in range(frames_per_request)], "model": "production"}
                i += frames_per_request
                r = await http.post("/v1/classify", json=body)
                done = time.perf_counter()
                if r.status_code != 200:
                    errors += 1
                    continue
                if now >= measuring_from and done <= stop_at:
                    latencies.append((done - now) * 1000)
                    images += len(r.json()["predictions"])

        await asyncio.gather(*(client(c) for c in range(clients)))
    return images / seconds, latencies, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="onnxruntime", help="onnxruntime, torch-cuda, torch-cpu, tensorrt or auto")
    ap.add_argument("--architecture", default="mobilenet_v3_small")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--frames-per-request", type=int, default=8)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of measured served load")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--raw-seconds", type=float, default=4.0, help="per batch size")
    ap.add_argument("--batch-sizes", default="1,8,16,32,64,128")
    ap.add_argument("--max-batch-size", type=int, default=None, help="served batch size (default: the raw best)")
    ap.add_argument("--batch-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None, help="backend threads (default: all cores)")
    ap.add_argument("--preprocessor-replicas", type=int, default=1)
    ap.add_argument("--database-url", default=os.environ.get("SIGHTLINE_BENCH_DATABASE_URL", ""),
                    help="use this registry (with --store-dir and --model) instead of a throwaway one")
    ap.add_argument("--frames", type=int, default=256, help="distinct generated frames to cycle through")
    args = ap.parse_args()
    backend_name = default_backend() if args.backend == "auto" else args.backend
    threads = args.threads or os.cpu_count() or 1

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
        processing = Processing(classes=CLASSES, input_size=args.input_size)
        from serving.publishing import register_trained

        model = build_model(args.architecture, len(CLASSES)).eval()
        result = TrainingResult(model, processing, args.architecture, {"note": "untrained, for benchmarking"}, "bench", {})
        version = register_trained(registry, store, result, created_by="bench")
        registry.set_alias("production", version.version, "bench", "benchmark")
        manifest, files = load_verified(store, version.manifest_key, version.manifest_sha256, required_files(backend_name))

        frames = generate_frames("bench-line", args.frames, seed=99)
        keys = [put_frame(store, f.jpeg(), "image/jpeg") for f in frames]
        frames_u8 = np.stack([processing.resize(f.image) for f in frames])
        jpegs = [f.jpeg() for f in frames]

        print(f"model {version.version}: {args.architecture} {args.input_size}px, backend {backend_name}, "
              f"{os.cpu_count()} cpus, backend threads {threads}")
        try:
            backend = make_backend(backend_name, manifest, files, threads=threads)
        except BackendUnavailable as exc:
            raise SystemExit(f"backend {backend_name} cannot run here: {exc}") from None
        raw = bench_raw(backend, processing, frames_u8, [int(b) for b in args.batch_sizes.split(",")], args.raw_seconds)
        for bs, ips in raw.items():
            print(f"raw batch {bs:4d}: {ips:9.1f} images/s")
        best_bs, raw_before = max(raw.items(), key=lambda kv: kv[1])
        pipeline = bench_raw_pipeline(backend, processing, jpegs, best_bs, args.raw_seconds)
        load_raw = os.getloadavg()[0]

        from infra.postgres_server import free_port
        from serving.app import ServingConfig
        from serving.deploy import run_app, start_ray, stop

        config = ServingConfig(database_url=db_url, store_url=f"file://{store.root}", backend=backend_name,
                               backend_threads=threads, preprocess_threads=4)
        port = free_port()
        (work / "ray").mkdir()
        start_ray(temp_dir=str(work / "ray"))
        try:
            max_bs = args.max_batch_size or max(best_bs, args.frames_per_request)
            run_app(config, "127.0.0.1", port, preprocessor_replicas=args.preprocessor_replicas,
                    batch={"max_batch_size": max_bs, "batch_wait_timeout_s": args.batch_wait_ms / 1000})
            served, latencies, errors = asyncio.run(bench_served(
                f"http://127.0.0.1:{port}", keys, args.clients, args.frames_per_request, args.duration, args.warmup))
            load_served = os.getloadavg()[0]
        finally:
            stop()
        # The raw run again, after the served one: on a shared machine the load moves, and the ratio
        # should compare like with like, so the reference is the mean of the two raw runs.
        raw_after = bench_raw(backend, processing, frames_u8, [best_bs], args.raw_seconds)[best_bs]
        best_raw = (raw_before + raw_after) / 2

        print(f"raw:    {best_raw:9.1f} images/s (best batch size {best_bs}; {raw_before:.1f} before and "
              f"{raw_after:.1f} after the served run)")
        print(f"served: {served:9.1f} images/s ({args.clients} clients, {args.frames_per_request} frames/request, "
              f"max batch {max_bs}, wait {args.batch_wait_ms} ms, {errors} errors)")
        print(f"served/raw ratio: {served / best_raw:.2f}")
        print(f"raw pipeline (decode + resize + quality + model in one process, batch {best_bs}): "
              f"{pipeline:9.1f} images/s; served/raw-pipeline ratio: {served / pipeline:.2f}")
        print(f"1-min load average: {load_raw:.2f} during raw, {load_served:.2f} during served "
              f"({os.cpu_count()} cpus; other processes on the machine count too)")
        print(f"latency per request ms: p50 {percentile(latencies, 50):.1f}  p95 {percentile(latencies, 95):.1f}  "
              f"p99 {percentile(latencies, 99):.1f}  (n={len(latencies)}, mean {statistics.fmean(latencies) if latencies else float('nan'):.1f})")
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
