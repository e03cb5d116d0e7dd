"""End-to-end ingest benchmark: N concurrent clients submit batches of generated frames for a fixed
time through the Sightline API; then the same load against a naive synchronous service (bench/
naive_service.py: one FastAPI endpoint running the same model inside the request). One run, one
machine, side by side.

Prints frames/s end to end (submitted -> predictions recorded in Postgres), p50/p95/p99 of the API's
accept latency and of frame-to-prediction latency, Temporal history events per batch, the ratio of
end-to-end frames/s to the raw backend's images/s, and a last line comparing with the naive service.

Needs the local stack with serving: `make up` (or `.venv/bin/sightline up`), then
    .venv/bin/python bench/ingest.py --clients 8 --seconds 30 --frames 16
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.postgres_server import free_port
from infra.settings import get_settings
from infra.stack_urls import database_url
from infra.store import store_from_settings
from infra.tables.api_keys import create_key
from infra.temporal import connect
from serving.backends.base import make_backend, required_files
from vision.artifacts import load_verified
from vision.camera import NORMAL, generate_frames
from vision.registry import ModelRegistry


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def latency_line(name: str, values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return f"{name}: p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms, p99 {pct(ms, 99):.0f} ms (n={len(ms)})"


def raw_backend_images_per_s(settings, db_url: str, seconds: float = 5.0) -> tuple[float, int]:
    """The production model's onnxruntime backend alone on resized uint8 frames, at its best batch size."""
    version = ModelRegistry(db_url).resolve("production")
    manifest, files = load_verified(store_from_settings(settings), version.manifest_key, version.manifest_sha256,
                                    required_files("onnxruntime"))
    backend = make_backend("onnxruntime", manifest, files)
    size = manifest.processing.input_size
    best = (0.0, 0)
    for batch in (8, 32, 64, 128):
        x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        backend.predict(x)  # warm
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 4:
            backend.predict(x)
            done += batch
        best = max(best, (done / (time.perf_counter() - started), batch))
    return best


class Load:
    """N clients, each submitting one batch after another until the deadline."""

    def __init__(self, frames: list[bytes], frames_per_batch: int, clients: int, seconds: float) -> None:
        self.frames, self.per_batch, self.clients, self.seconds = frames, frames_per_batch, clients, seconds
        self.latencies: list[float] = []
        self.responses: list[dict] = []
        self.errors: list[str] = []

    def files(self, rng: random.Random) -> list:
        return [("frames", (f"f{i}.jpg", rng.choice(self.frames), "image/jpeg")) for i in range(self.per_batch)]

    async def run(self, send) -> float:
        deadline = time.monotonic() + self.seconds

        async def client(n: int) -> None:
            rng = random.Random(n)
            seq = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = await send(self.files(rng), f"c{n}-{seq}")
                    response.raise_for_status()
                    self.latencies.append(time.perf_counter() - started)
                    self.responses.append(response.json())
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))
                seq += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(self.clients)))
        return time.perf_counter() - started


async def run_sightline(settings, db_url: str, load: Load, run_tag: str) -> dict:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        key = (await create_key(conn, f"bench ingest {run_tag}", "ingest")).raw_key
    headers = {"Authorization": f"Bearer {key}"}
    camera = f"bench-{run_tag}"
    async with httpx.AsyncClient(base_url=settings.resolved_api_url, headers=headers, timeout=120) as http:
        async def send(files, idem):
            return await http.post("/v1/batches", files=files,
                                   data={"camera_id": camera, "site_id": "bench", "idempotency_key": idem})

        t0 = time.perf_counter()
        await load.run(send)
        batch_ids = [r["batch_id"] for r in load.responses]
        # Wait until every submitted batch has its predictions recorded.
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as data:
            deadline = time.monotonic() + 600
            while True:
                cur = await data.execute(
                    "SELECT count(*) FROM batches WHERE batch_id = ANY(%s) AND status = 'completed'", (batch_ids,))
                row = await cur.fetchone()
                if (row is not None and row[0] == len(batch_ids)) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - t0
            cur = await data.execute(
                "SELECT extract(epoch FROM p.created_at - b.created_at) FROM predictions p "
                "JOIN frames f USING (frame_id) JOIN batches b ON b.batch_id = f.batch_id WHERE b.batch_id = ANY(%s)",
                (batch_ids,),
            )
            frame_latencies = [float(r[0]) for r in await cur.fetchall()]
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    events = [len((await client.get_workflow_handle(b).fetch_history()).events) for b in batch_ids[:20]]
    return {"elapsed": elapsed, "frames": len(frame_latencies), "frame_latencies": frame_latencies,
            "events": events, "batches": len(batch_ids)}


async def run_naive(port: int, load: Load) -> dict:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        async def send(files, _idem):
            return await http.post("/classify", files=files)

        elapsed = await load.run(send)
    frames = sum(len(r["results"]) for r in load.responses)
    return {"elapsed": elapsed, "frames": frames}


def start_naive(port: int) -> subprocess.Popen:
    log = Path(__file__).with_name("naive_service.log")
    with open(log, "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("naive_service.py")), str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"the naive service did not start: see {log}") from None
            time.sleep(0.2)
    raise SystemExit("the naive service did not start within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--frames", type=int, default=16, help="frames per batch")
    args = parser.parse_args()

    settings = get_settings()
    db_url = database_url(settings)
    try:
        httpx.get(f"{settings.resolved_api_url}/healthz", timeout=2).raise_for_status()
        httpx.get(f"{settings.serving_url}/healthz", timeout=2).raise_for_status()
    except httpx.HTTPError:
        raise SystemExit("the local stack is not up with serving: run `make up` first") from None

    frames = [f.jpeg() for f in generate_frames("bench", 256, seed=7, conditions=NORMAL)]
    raw_ips, raw_batch = raw_backend_images_per_s(settings, db_url)
    print(f"raw backend measured; loading {args.clients} clients on Sightline for {args.seconds:.0f} s", flush=True)
    tag = f"{int(time.time())}"

    ours = Load(frames, args.frames, args.clients, args.seconds)
    sightline = asyncio.run(run_sightline(settings, db_url, ours, tag))
    port = free_port()
    proc = start_naive(port)
    try:
        baseline = Load(frames, args.frames, args.clients, args.seconds)
        naive = asyncio.run(run_naive(port, baseline))
    finally:
        proc.terminate()
        proc.wait(30)

    ours_fps = sightline["frames"] / sightline["elapsed"]
    naive_fps = naive["frames"] / naive["elapsed"]
    print(f"load: {args.clients} clients x {args.frames}-frame batches for {args.seconds:.0f} s, "
          "generated camera JPEGs")
    print(f"raw backend (onnxruntime, batch {raw_batch}): {raw_ips:.0f} images/s")
    print(f"sightline: {sightline['batches']} batches, {sightline['frames']} frames recorded in "
          f"{sightline['elapsed']:.1f} s = {ours_fps:.1f} frames/s end to end"
          + (f"; {len(ours.errors)} errors" if ours.errors else ""))
    print(latency_line("  API accept latency", ours.latencies))
    print(latency_line("  frame-to-prediction latency", sightline["frame_latencies"]))
    print(f"  Temporal history events per batch: median {statistics.median(sightline['events']):.0f}, "
          f"max {max(sightline['events'])}")
    print(f"end-to-end/raw ratio: {ours_fps / raw_ips:.2f}")
    print(f"naive synchronous service: {naive['frames']} frames in {naive['elapsed']:.1f} s = {naive_fps:.1f} frames/s"
          + (f"; {len(baseline.errors)} errors" if baseline.errors else ""))
    print(latency_line("  accept latency (= full processing)", baseline.latencies))
    print(f"throughput vs naive synchronous service: {ours_fps / naive_fps:.1f}x "
          f"(p99 accept {pct(ours.latencies, 99) * 1000:.0f} ms vs {pct(baseline.latencies, 99) * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
