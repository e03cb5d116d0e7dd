"""End-to-end ingest benchmark: Sightline through its API against a naive synchronous service on the same
machine, in one run, at 16-, 64- and 256-frame batches.

For each batch size:
1. the naive service (bench/naive_service.py: one FastAPI endpoint that decodes the frames and runs the
   same model inside the request, with Sightline's decode and onnxruntime) under a closed loop of
   clients: its saturated frames/s; and the service as the seeds' own examples write it
   (bench/seed_style_service.py: Pillow, torchvision transforms, eager PyTorch in the request) the same way;
2. Sightline's sustained rate: a closed-loop probe estimates its capacity, then open-loop runs (batches
   at a fixed rate, whatever the answers) step down from above it until the backlog of batches in
   flight stops growing and nothing is refused (429); two bisections between the highest such rate and the
   lowest unstable one narrow it: the highest stable rate is the sustained rate;
3. at 70% of the sustained rate, open loop again: API accept latency, frame-to-prediction latency
   (prediction recorded minus batch accepted, both by Postgres' clock), history events per batch, and
   the CPU each part of the stack spent per batch, read from /proc before and after (the naive
   service's CPU per batch is read the same way during its run).

Once per run it also measures the floor of the design (bench/minimal_workflow.py): the CPU that the
stack's Temporal server and the SDK spend on a workflow running one empty activity. Serving that cost
no more than the whole naive service, plus that floor, is the best any workflow-per-batch design can
reach on this machine: the line before the last two gives that ceiling beside the goals.

Needs the local stack: `make up` (or `.venv/bin/sightline up`), then
    .venv/bin/python bench/ingest.py                       # about 12 minutes on 2 cores
    .venv/bin/python bench/ingest.py --sizes 64 --seconds 10
    .venv/bin/python bench/ingest.py --telemetry-cost      # tracing and metrics on vs off, 64 frames

Frames are the generated camera's (160 px a side) unless `--resolution 1280x720` asks for camera-sized
ones (the same scenes, encoded at that size), where decoding dominates.

The last lines give: the ceiling; what the stack spends beyond the naive service and one minimal workflow
(with the budget the throughput issue sets and the breakdown by process); throughput against the naive
service (and as a share of the ceiling) and against the seed-style service; the latency at 70% of the
sustained rate.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg.rows import dict_row
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import Load, OpenLoop, Send
from bench.minimal_workflow import SHAPES, MinimalBatchWorkflow, noop
from bench.process_cpu import CpuMeter
from infra.postgres_server import free_port
from infra.settings import Settings, get_settings
from infra.stack import LocalStack
from infra.stack_urls import database_url
from infra.tables.api_keys import create_key
from infra.temporal import connect
from vision.camera import NORMAL, generate_frames

__all__ = ["Load", "OpenLoop"]  # the fault suite drives load with these

PARTS = ("temporal", "worker", "api", "serving", "postgres")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Trial:
    rate: float  # offered batches/s
    accepted: int
    refused: int
    errors: int
    backlog: list[int] = field(default_factory=list)  # batches in flight, sampled every half second

    @property
    def stable(self) -> bool:
        """Nothing refused or failed, and the backlog in the last third of the run is not above the
        middle third's (with room for noise)."""
        if self.refused or self.errors or len(self.backlog) < 6:
            return False
        third = len(self.backlog) // 3
        middle = statistics.mean(self.backlog[third: 2 * third])
        last = statistics.mean(self.backlog[2 * third:])
        return last <= 1.25 * middle + 2

    def describe(self) -> str:
        third = max(1, len(self.backlog) // 3)
        middle = statistics.mean(self.backlog[third: 2 * third] or [0])
        last = statistics.mean(self.backlog[2 * third:] or [0])
        verdict = "stable" if self.stable else "NOT stable"
        return (f"offered {self.rate:.2f} batches/s: {verdict} (in flight {middle:.1f} -> {last:.1f}, "
                f"{self.accepted} accepted, {self.refused} refused, {self.errors} errors)")


@dataclass
class SizeResult:
    frames: int
    naive_fps: float
    probe_rate: float
    trials: list[Trial]
    sustained_rate: float
    measured_rate: float
    accept_s: list[float]
    frame_to_prediction_s: list[float]
    events: list[int]
    cpu_ms_per_batch: dict[str, float]
    naive_cpu_ms_per_batch: float
    seed_fps: float = 0.0  # the seed-style service's saturated frames/s (0: not measured)

    @property
    def sustained_fps(self) -> float:
        return self.sustained_rate * self.frames


class Stack:
    """The running local stack as the benchmark uses it: its API, database and Temporal."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db_url = database_url(settings)
        self.site = f"bench-{uuid.uuid4().hex[:6]}"
        self.key = ""

    async def open(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True, row_factory=dict_row) as conn:
            self.key = (await create_key(conn, f"bench ingest {self.site}", "ingest")).raw_key
        self.http = httpx.AsyncClient(base_url=self.settings.resolved_api_url, timeout=300,
                                      headers={"Authorization": f"Bearer {self.key}"},
                                      limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
        self.db = await psycopg.AsyncConnection.connect(self.db_url, autocommit=True)
        self.temporal = await connect(self.settings.temporal_address, self.settings.temporal_namespace)

    async def close(self) -> None:
        await self.http.aclose()
        await self.db.close()

    def sender(self, camera: str) -> Send:
        async def send(files: list[Any], key: str) -> httpx.Response:
            return await self.http.post("/v1/batches", files=files,
                                        data={"camera_id": camera, "site_id": self.site, "idempotency_key": key})
        return send

    async def _scalar(self, sql: str, *params: Any) -> Any:
        cur = await self.db.execute(sql, params)
        row = await cur.fetchone()
        return row[0] if row else None

    async def in_flight(self) -> int:
        return int(await self._scalar(
            "SELECT count(*) FROM batches WHERE site_id = %s AND status IN ('received', 'running')", self.site))

    async def drained(self, timeout: float = 300) -> float:
        """Seconds until no batch of this benchmark is in flight."""
        started = time.monotonic()
        while await self.in_flight():
            if time.monotonic() - started > timeout:
                raise SystemExit(f"batches still in flight after {timeout:.0f} s: the stack is not keeping up")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def completed_per_s(self, since: float, until: float) -> float:
        """Batches of this benchmark completed within a window of wall-clock time (Postgres' clock)."""
        n = await self._scalar(
            "SELECT count(*) FROM batches WHERE site_id = %s AND status = 'completed'"
            " AND completed_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)", self.site, since, until)
        return int(n) / (until - since)

    async def frame_to_prediction(self, batch_ids: list[str]) -> list[float]:
        cur = await self.db.execute(
            "SELECT extract(epoch FROM p.created_at - b.created_at) FROM predictions p"
            " JOIN frames f USING (frame_id) JOIN batches b ON b.batch_id = f.batch_id"
            " WHERE b.batch_id = ANY(%s)", (batch_ids,))
        return [float(r[0]) for r in await cur.fetchall()]

    async def events(self, batch_ids: list[str]) -> list[int]:
        return [len((await self.temporal.get_workflow_handle(b).fetch_history()).events) for b in batch_ids]

    async def process_roots(self) -> dict[str, int]:
        # status() asks Temporal with asyncio.run: from a thread, not from this event loop.
        parts = await asyncio.to_thread(LocalStack(self.settings).status)
        pids = {part.name: part.pid for part in parts if part.pid}
        return {name: pids[name] for name in PARTS if name in pids}


def naive_sender(http: httpx.AsyncClient) -> Send:
    async def send(files: list[Any], _key: str) -> httpx.Response:
        return await http.post("/classify", files=files)
    return send


async def run_open(stack: Stack, frames: list[bytes], size: int, rate: float, seconds: float, camera: str,
                   seed: int) -> tuple[OpenLoop, Trial]:
    load = OpenLoop(frames, size, rate, seconds, tag=f"{camera}-{seed}", seed=seed)
    trial = Trial(rate, 0, 0, 0)

    async def sample() -> None:
        trial.backlog.append(await stack.in_flight())

    await load.run(stack.sender(camera), on_tick=sample)
    trial.accepted, trial.refused, trial.errors = len(load.responses), load.refused, len(load.errors)
    return load, trial


@dataclass
class WorkflowFloor:
    """CPU per minimal workflow (one empty activity), in ms: the Temporal server's, and the SDK's
    (client and worker, both in this process)."""

    server_ms: float
    sdk_ms: float

    @property
    def total_ms(self) -> float:
        return self.server_ms + self.sdk_ms


# The shape a batch ships in: its classification runs on another task queue (inference).
SHIPPED_SHAPE = "remote"


async def minimal_workflow_cost(stack: Stack, shape: str = SHIPPED_SHAPE, count: int = 300,
                                concurrency: int = 16) -> WorkflowFloor:
    """Run `count` minimal workflows of a shape (bench.minimal_workflow.SHAPES) on the stack's Temporal,
    `concurrency` at a time, with workers in this process on task queues of their own, and read what
    the server and this process spent."""
    temporal_pid = (await stack.process_roots())["temporal"]
    queue = f"bench-floor-{uuid.uuid4().hex[:8]}"
    activity_queue = f"{queue}-activities" if shape in ("remote", "eager") else ""

    async def one(i: int) -> None:
        handle = await stack.temporal.start_workflow(
            MinimalBatchWorkflow.run, args=[f"{queue}-{i}", activity_queue, shape == "local"], id=f"{queue}-{i}",
            task_queue=queue, request_eager_start=shape == "eager")
        await handle.result()

    async with Worker(stack.temporal, task_queue=queue, workflows=[MinimalBatchWorkflow], activities=[noop]), \
            Worker(stack.temporal, task_queue=activity_queue or f"{queue}-unused", activities=[noop]):
        await asyncio.gather(*(one(-i) for i in range(1, concurrency + 1)))  # warm: sandbox, cache, pollers
        gate = asyncio.Semaphore(concurrency)

        async def limited(i: int) -> None:
            async with gate:
                await one(i)

        meter = CpuMeter({"temporal": temporal_pid})
        meter.start()
        sdk_cpu = time.process_time()
        await asyncio.gather(*(limited(i) for i in range(count)))
        sdk_s = time.process_time() - sdk_cpu
        server_s = meter.stop()["temporal"]
    return WorkflowFloor(server_ms=1000 * server_s / count, sdk_ms=1000 * sdk_s / count)


# CPU per second of the stack with no load from us. An idle stack spends about 100-150 ms a second
# (Ray's and Temporal's housekeeping); much more means it is busy with work of its own, which this
# benchmark's numbers would then include: review tasks of earlier runs escalating when their SLA passes,
# the hourly drift check of every site seen lately (each run of this benchmark adds sites).
BUSY_AT_REST_MS_PER_S = 300
# Bisections of the gap the steps of 15% leave around the sustained rate (measure_size).
REFINE_STEPS = 2


async def at_rest(stack: Stack, seconds: float = 3.0) -> float:
    """The stack's CPU in ms per second over a few seconds of no load from this benchmark."""
    meter = CpuMeter(await stack.process_roots())
    meter.start()
    await asyncio.sleep(seconds)  # a measuring window, not a synchronisation
    return 1000 * sum(meter.stop().values()) / seconds


async def saturated_fps(port: int, frames: list[bytes], size: int, clients: int, seconds: float,
                        seed: int) -> tuple[float, int]:
    """A baseline service's frames/s under a closed loop of clients, and the batches it answered."""
    load = Load(frames, size, clients, seconds, seed=seed)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
        elapsed = await load.run(naive_sender(http))
    return sum(len(r["results"]) for r in load.responses) / elapsed, len(load.responses)


async def measure_size(stack: Stack, frames: list[bytes], size: int, naive: subprocess.Popen[bytes],
                       naive_port: int, clients: int, seconds: float, seed_port: int | None) -> SizeResult:
    seed = size * 1000
    rest = await at_rest(stack)
    print(f"  stack at rest: {rest:.0f} ms of CPU per second"
          + (" - BUSY with work of its own (review escalations, drift checks?): this size's numbers include it"
             if rest > BUSY_AT_REST_MS_PER_S else ""), flush=True)
    # 1. The naive service, saturated by a closed loop, and the CPU it spends (its own counters).
    naive_meter = CpuMeter({"naive": naive.pid})
    naive_meter.start()
    naive_fps, naive_batches = await saturated_fps(naive_port, frames, size, clients, seconds, seed)
    naive_cpu_ms = 1000 * naive_meter.stop()["naive"] / max(1, naive_batches)
    print(f"  naive synchronous service: {naive_fps:.0f} frames/s ({clients} clients), "
          f"{naive_cpu_ms:.0f} ms of CPU per batch", flush=True)
    seed_fps = 0.0
    if seed_port is not None:
        seed_fps, _ = await saturated_fps(seed_port, frames, size, clients, seconds, seed + 5)
        print(f"  seed-style service (Pillow + eager PyTorch): {seed_fps:.0f} frames/s ({clients} clients)",
              flush=True)

    # 2. Sightline's capacity, then its sustained rate.
    camera = f"{stack.site}-{size}"  # batch ids are camera + key: unique per run, never an earlier run's batch
    probe = Load(frames, size, clients, seconds, seed=seed + 1)
    t0 = time.time()
    await probe.run(stack.sender(camera))
    t1 = time.time()
    probe_rate = await stack.completed_per_s(t0 + seconds / 3, t1)  # after the pipeline filled
    await stack.drained()
    print(f"  sightline closed-loop probe: {probe_rate:.2f} batches/s completed", flush=True)
    trials: list[Trial] = []
    rate = max(0.2, 1.1 * probe_rate)
    sustained = 0.0
    # Down from above the probe until a rate is stable; when the first one already is (a probe that
    # undershot), up in steps until one is not: the highest stable rate is the sustained rate.
    for attempt in range(8):
        _, trial = await run_open(stack, frames, size, rate, seconds, camera, seed + 10 + attempt)
        trials.append(trial)
        await stack.drained()
        print(f"    {trial.describe()}", flush=True)
        if trial.stable:
            sustained = rate
            if all(t.stable for t in trials):
                rate *= 1.15
                continue
            break
        if sustained:
            break  # stepping up found the first unstable rate
        rate *= 0.85
    if not sustained:
        sustained = rate  # the last rate tried; reported as such
    # Steps of 15% leave the sustained rate uncertain by as much: more than a comparison of two runs
    # (telemetry on vs off, 5%) can resolve. Halve the gap between the highest stable rate and the
    # lowest unstable one (geometrically) REFINE_STEPS times: about 4% of resolution.
    unstable = [t.rate for t in trials if not t.stable and t.rate > sustained]
    if sustained and unstable:
        low, high = sustained, min(unstable)
        for step in range(REFINE_STEPS):
            rate = (low * high) ** 0.5
            _, trial = await run_open(stack, frames, size, rate, seconds, camera, seed + 20 + step)
            trials.append(trial)
            await stack.drained()
            print(f"    {trial.describe()}", flush=True)
            low, high = (rate, high) if trial.stable else (low, rate)
        sustained = low

    # 3. At 70% of the sustained rate: latency, events and CPU per batch.
    meter = CpuMeter(await stack.process_roots())
    meter.start()
    bench_cpu = time.process_time()
    measured_rate = 0.7 * sustained
    load, _ = await run_open(stack, frames, size, measured_rate, seconds, camera, seed + 99)
    await stack.drained()
    spent = meter.stop()
    spent["bench client"] = time.process_time() - bench_cpu
    batch_ids = [r["batch_id"] for r in load.responses]
    per_batch = {name: 1000 * s / max(1, len(batch_ids)) for name, s in spent.items()}
    return SizeResult(
        frames=size, naive_fps=naive_fps, probe_rate=probe_rate, trials=trials, sustained_rate=sustained,
        measured_rate=measured_rate, accept_s=load.latencies,
        frame_to_prediction_s=await stack.frame_to_prediction(batch_ids),
        events=await stack.events(batch_ids[:10]), cpu_ms_per_batch=per_batch, naive_cpu_ms_per_batch=naive_cpu_ms,
        seed_fps=seed_fps,
    )


async def warm_up(stack: Stack, frames: list[bytes], size: int, naive_port: int, clients: int,
                  seconds: float = 8.0) -> None:
    """A few seconds of load on both before anything is measured: right after `make up` the replicas,
    pools and workflow cache are cold, and the first size's numbers measured start-up, not service."""
    print(f"warming up both services ({seconds:.0f} s each)", flush=True)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{naive_port}", timeout=600) as http:
        await Load(frames, size, clients, seconds, seed=1).run(naive_sender(http))
    await Load(frames, size, clients, seconds, seed=2).run(stack.sender(f"{stack.site}-warm-up"))
    await stack.drained()


def start_naive(port: int, script: str = "naive_service.py") -> subprocess.Popen[bytes]:
    log = Path(__file__).with_name(script.replace(".py", ".log"))
    with open(log, "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name(script)), str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise SystemExit(f"{script} did not start: see {log}") from None
            time.sleep(0.2)
    raise SystemExit(f"{script} did not start within 120 s")


def report(result: SizeResult) -> None:
    ms = 1000
    print(f"  sustained: {result.sustained_rate:.2f} batches/s = {result.sustained_fps:.0f} frames/s "
          f"({result.sustained_fps / result.naive_fps:.2f}x the naive service)")
    accept, f2p = result.accept_s, result.frame_to_prediction_s
    print(f"  at 70% ({result.measured_rate:.2f} batches/s): API accept p50 {pct(accept, 50) * ms:.0f} ms, "
          f"p99 {pct(accept, 99) * ms:.0f} ms; frame-to-prediction p50 {pct(f2p, 50) * ms:.0f} ms, "
          f"p99 {pct(f2p, 99) * ms:.0f} ms; history events per batch: median "
          f"{statistics.median(result.events or [0]):.0f}")
    cpu = result.cpu_ms_per_batch
    total = sum(cpu.values())
    print("  CPU per batch, ms: " + ", ".join(f"{name} {cpu[name]:.0f}" for name in cpu)
          + f"; total {total:.0f} ({total / result.frames:.2f} ms per frame)")


def camera_frames(resolution: tuple[int, int] | None, count: int = 64) -> list[bytes]:
    """The generated camera's JPEGs: 160 px squares, or (width, height) frames of the same scenes, as a
    camera of that resolution would send them (rendered at the height, stretched to the width: the
    model's square resize undoes the stretch, so it sees the scene it was trained on)."""
    if resolution is None:
        return [f.jpeg() for f in generate_frames("bench", count, seed=7, conditions=NORMAL)]
    import io

    width, height = resolution
    out = []
    for f in generate_frames("bench", count, seed=7, conditions=NORMAL, size=height):
        buf = io.BytesIO()
        f.image.resize((width, height)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def stack_and_frames(resolution: tuple[int, int] | None = None) -> tuple[Settings, list[bytes]]:
    """The running local stack's settings (or exit, saying how to start it) and the benchmark's camera frames."""
    settings = get_settings()
    try:
        httpx.get(f"{settings.resolved_api_url}/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError:
        raise SystemExit("the local stack is not up: run `make up` first") from None
    return settings, camera_frames(resolution)


async def run(sizes: list[int], clients: int, seconds: float, resolution: tuple[int, int] | None = None,
              seed_style: bool = True) -> tuple[list[SizeResult], WorkflowFloor]:
    settings, frames = stack_and_frames(resolution)
    stack = Stack(settings)
    await stack.open()
    port = free_port()
    naive_proc = start_naive(port)
    seed_port = free_port() if seed_style else None
    seed_proc = start_naive(seed_port, "seed_style_service.py") if seed_port is not None else None
    results = []
    try:
        await warm_up(stack, frames, sizes[0], port, clients)
        for shape in SHAPES:
            cost = await minimal_workflow_cost(stack, shape)
            print(f"minimal workflow, shape {shape}: server {cost.server_ms:.1f} ms, SDK {cost.sdk_ms:.1f} ms of CPU"
                  + (" (the shape a batch ships in: the floor below)" if shape == SHIPPED_SHAPE else ""), flush=True)
            if shape == SHIPPED_SHAPE:
                floor = cost
        for size in sizes:
            print(f"== {size}-frame batches ==", flush=True)
            result = await measure_size(stack, frames, size, naive_proc, port, clients, seconds, seed_port)
            report(result)
            results.append(result)
    finally:
        for proc in (naive_proc, seed_proc):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        await stack.close()
    return results, floor


async def telemetry_cost(size: int, clients: int, seconds: float, resolution: tuple[int, int] | None) -> None:
    """Tracing and metrics on vs off in one run (bench/telemetry_cost.py), with the ratio."""
    from bench import telemetry_cost as cost

    settings, frames = stack_and_frames(resolution)
    print(f"load: {size}-frame batches of generated camera JPEGs; runs of {seconds:.0f} s; {clients} closed-loop "
          "clients", flush=True)
    port = free_port()
    naive_proc = start_naive(port)
    try:
        modes = await cost.measure_modes(settings, frames, size, naive_proc, port, clients, seconds)
    finally:
        naive_proc.terminate()
        naive_proc.wait(30)
    cost.report(modes)


def ceiling(result: SizeResult, floor: WorkflowFloor) -> float:
    """The best ratio to the naive service reachable with a workflow per batch: on a saturated machine
    throughput goes as the inverse of CPU per frame, and at best serving costs what the whole naive
    service does and orchestration what a minimal workflow does (API, database, reviews: nothing)."""
    return result.naive_cpu_ms_per_batch / (result.naive_cpu_ms_per_batch + floor.total_ms)


# What the stack may spend beyond the naive service's work and one minimal workflow (the throughput
# issue's budget): this much per frame, plus this much per batch.
BUDGET_MS_PER_FRAME, BUDGET_MS_PER_BATCH = 0.4, 25.0


def beyond(result: SizeResult, floor: WorkflowFloor) -> str:
    """The stack's CPU per batch beyond the naive service and a minimal workflow, beside its budget,
    with each part's share of the stack's own CPU per batch."""
    parts = {name: ms for name, ms in result.cpu_ms_per_batch.items() if name in PARTS}
    extra = sum(parts.values()) - result.naive_cpu_ms_per_batch - floor.total_ms
    budget = BUDGET_MS_PER_FRAME * result.frames + BUDGET_MS_PER_BATCH
    detail = " / ".join(f"{name} {parts[name]:.0f}" for name in PARTS if name in parts)
    return (f"{result.frames} frames {extra:.0f} ms (budget {budget:.0f}; stack {sum(parts.values()):.0f} = "
            f"{detail}; naive {result.naive_cpu_ms_per_batch:.0f}, minimal workflow {floor.total_ms:.0f})")


def resolution_arg(value: str) -> tuple[int, int] | None:
    if not value:
        return None
    width, height = (int(v) for v in value.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,64,256", help="frames per batch, comma-separated")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (naive service, probe)")
    parser.add_argument("--seconds", type=float, default=15, help="length of each run")
    parser.add_argument("--resolution", type=resolution_arg, default=None,
                        help="frames of this WIDTHxHEIGHT (e.g. 1280x720) instead of the generated 160 px")
    parser.add_argument("--no-seed-style", action="store_true", help="skip the seed-style baseline")
    parser.add_argument("--telemetry-cost", action="store_true",
                        help="instead: tracing and metrics on vs off at the first size (default 64 frames), the "
                             "API, worker and serving restarted for each (bench/telemetry_cost.py)")
    args = parser.parse_args()
    if args.telemetry_cost:
        size = int(args.sizes.split(",")[0]) if args.sizes != parser.get_default("sizes") else 64
        asyncio.run(telemetry_cost(size, args.clients, args.seconds, args.resolution))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    shape = f"{args.resolution[0]}x{args.resolution[1]}" if args.resolution else "160x160"
    print(f"load: generated camera JPEGs ({shape}), each batch's frames unique; runs of {args.seconds:.0f} s; "
          f"{args.clients} closed-loop clients", flush=True)
    results, floor = asyncio.run(run(sizes, args.clients, args.seconds, args.resolution, not args.no_seed_style))
    bounds = ", ".join(f"{r.frames} frames {ceiling(r, floor):.2f}x" for r in results)
    print(f"ceiling (serving at the naive service's CPU + a minimal workflow's {floor.total_ms:.0f} ms): {bounds}")
    print("CPU per batch beyond the naive service and a minimal workflow: "
          + "; ".join(beyond(r, floor) for r in results))
    ratios = ", ".join(f"{r.frames} frames {r.sustained_fps / r.naive_fps:.2f}x "
                       f"({r.sustained_fps / r.naive_fps / ceiling(r, floor):.2f} of the ceiling)" for r in results)
    print(f"throughput vs naive synchronous service: {ratios}")
    if all(r.seed_fps for r in results):
        seeds = ", ".join(f"{r.frames} frames {r.sustained_fps / r.seed_fps:.2f}x" for r in results)
        print(f"throughput vs the seed-style service (Pillow + eager PyTorch): {seeds}")
    worst = max(results, key=lambda r: pct(r.frame_to_prediction_s, 99))
    each = ", ".join(f"{r.frames} frames {pct(r.frame_to_prediction_s, 99) * 1000:.0f} ms" for r in results)
    print(f"frame-to-prediction p99 at 70% of sustained rate: {pct(worst.frame_to_prediction_s, 99) * 1000:.0f} ms "
          f"({each})")


if __name__ == "__main__":
    main()
