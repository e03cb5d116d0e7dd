"""The edge agent's two numbers: how fast a local decision is, beside the raw model in the same process,
and how long the backlog of an outage takes to drain through the real API at the rate cap.

    .venv/bin/python bench/edge.py                          # decisions; the drain too if the local stack is up
    make up && .venv/bin/python bench/edge.py --outage-s 600 --fps 10
    .venv/bin/python bench/edge.py --model stack            # the stack's production model instead

1. Decisions. One signed version of the standard model (mobilenet_v3_small at 128 px; random weights
   and a novelty head calibrated on generated frames: latency does not depend on what it learned), or
   the stack's production version. The same generated frames go through:
   - the raw model: onnxruntime on frames already decoded and resized;
   - the raw pipeline: decode, resize, model and post-processing (LocalModel.decide);
   - the agent: POST /frames to an agent on this event loop, which writes the frame and its row
     durably (fsync), decides it, and answers (its uploads go to a closed port meanwhile).
   Printed: p50 and p99 of each and the agent's p99 against the 50 ms goal.
2. Drain. An agent's queue is filled with the frames a camera at --fps takes in --outage-s seconds
   (timestamps back-dated over the outage, as if the link had been down), then the agent starts
   against the local stack's API with the camera still running: printed are the time until the
   backlog is all accepted, the rate it drained at, the cap, and what the cap alone predicts
   (backlog / (cap - fps)). Skipped, saying so, when no API answers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.agent import EdgeAgent, running
from edge.model import LocalModel, ModelFiles
from edge.queue import FrameQueue
from edge.settings import EdgeSettings
from infra.postgres_server import free_port
from infra.settings import Settings
from infra.stack_urls import database_url
from infra.store import LocalStore, store_from_settings
from vision.artifacts import ONNX, publish, signature_key, version_prefix
from vision.camera import CLASSES, generate_frames
from vision.decode import decode_frame
from vision.processing import Processing
from vision.signatures import ModelSigner, trusted_keys_from_settings


def untrained_model(work: Path, architecture: str, input_size: int) -> tuple[LocalModel, str]:
    """A signed version of the architecture with random weights and a calibrated novelty head."""
    from vision.model import build_model, export_onnx
    from vision.training import calibrate_novelty, frames_to_arrays

    processing = Processing(CLASSES, input_size=input_size)
    model = build_model(architecture, len(CLASSES)).eval()
    x, _ = frames_to_arrays(generate_frames("bench-edge-fit", 400, seed=1), processing)
    novelty = calibrate_novelty(model, processing, x[:300], x[300:], 99.5)
    signer = ModelSigner.generate()
    store = LocalStore(work / "objects")
    _, key, _ = publish(store, "bench-1", architecture, processing, {ONNX: export_onnx(model, processing, novelty)},
                        {}, None, None, signer=signer, novelty=novelty.summary())
    files = ModelFiles(store.get(key), store.get(signature_key(key)), store.get(f"{version_prefix('bench-1')}/{ONNX}"))
    return LocalModel(files, [signer.public_text()]), signer.public_text()


def stack_model() -> tuple[LocalModel, str]:
    """The local stack's production version, checked as the agent checks it."""
    from vision.registry import ModelRegistry

    settings = Settings()
    version = ModelRegistry(database_url(settings)).resolve("production")
    store = store_from_settings(settings)
    files = ModelFiles(store.get(version.manifest_key), store.get(signature_key(version.manifest_key)),
                       store.get(f"{version_prefix(version.version)}/{ONNX}"))
    trusted = trusted_keys_from_settings(settings)
    return LocalModel(files, trusted), trusted[0]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def decisions(model: LocalModel, trusted: str, work: Path, count: int) -> None:
    frames = [f.jpeg() for f in generate_frames("bench-edge", count, seed=2)]
    pixels = [model.processing.resize(decode_frame(f).pixels) for f in frames]
    for data in frames[:10]:  # warm the session and the caches
        model.decide(data)
    raw, pipeline = [], []
    for p in pixels:
        started = time.perf_counter()
        model.scores(p[None])
        raw.append(time.perf_counter() - started)
    for data in frames:
        started = time.perf_counter()
        model.decide(data)
        pipeline.append(time.perf_counter() - started)

    settings = EdgeSettings(_env_file=None, data_dir=work / "agent", listen_port=0, model_ref="",
                            api_url=f"http://127.0.0.1:{free_port()}", trusted_keys=[trusted], backoff_max_s=5)
    agent = EdgeAgent(settings)
    agent.models.install(model)
    served = []
    async with running(agent), httpx.AsyncClient(base_url=agent.local_url, timeout=30) as local:
        for data in frames[:10]:
            await local.post("/frames", content=data, headers={"content-type": "image/jpeg"})
        for data in frames:
            started = time.perf_counter()
            answer = await local.post("/frames", content=data, headers={"content-type": "image/jpeg"})
            served.append(time.perf_counter() - started)
            assert answer.status_code == 200 and answer.json()["prediction"], answer.text
    print(f"\nlocal decisions, {count} frames one at a time, model {model.version} "
          f"({model.manifest.architecture}, {model.processing.input_size} px), one process:")
    print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8}")
    for name, samples in (("raw model (decoded, resized)", raw), ("raw pipeline (decode+model)", pipeline),
                          ("agent POST /frames (durable)", served)):
        p50, p99 = percentiles(samples)
        print(f"{name:34} {p50:8.2f} {p99:8.2f}")
    p50, p99 = percentiles(served)
    print(f"agent/raw-pipeline p50 ratio: {p50 / percentiles(pipeline)[0]:.2f}; agent p99 {p99:.1f} ms "
          f"{'within' if p99 < 50 else 'OVER'} the 50 ms goal")


async def ingest_key(settings: Settings) -> str:
    """An ingest key for the benchmark's site, made in the local stack's database."""
    import psycopg
    from psycopg.rows import dict_row

    from infra.tables.api_keys import create_key

    async with await psycopg.AsyncConnection.connect(database_url(settings), autocommit=True,
                                                     row_factory=dict_row) as conn:
        return (await create_key(conn, "bench edge", "ingest")).raw_key


def prefill(queue: FrameQueue, camera: str, count: int, span_s: float) -> None:
    """The frames a camera took while the link was down, captured_at spread over the outage."""
    distinct = [f.jpeg() for f in generate_frames(camera, 200, seed=3)]
    now = time.time()
    for i in range(count):
        staged = queue.stage(distinct[i % len(distinct)], "image/jpeg")
        queue.commit(staged, camera, f"{camera}-backlog-{i:06d}.jpg", "camera", now - span_s + i * span_s / count)


async def drain(work: Path, model: LocalModel, trusted: str, outage_s: float, fps: float, cap: float,
                batch: int) -> None:
    settings = Settings()
    api = settings.resolved_api_url
    try:
        healthy = httpx.get(f"{api}/healthz", timeout=3).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if not healthy:
        print(f"\nbacklog drain: skipped, no API answers at {api} (`make up` first)")
        return
    site = f"bench-edge-{int(time.time())}"
    edge = EdgeSettings(_env_file=None, data_dir=work / "drain", listen_port=0, model_ref="", api_url=api,
                        api_key=await ingest_key(settings), site_id=site, camera_id="bench-cam", camera_fps=fps,
                        rate_frames_per_s=cap, batch_max_frames=batch, trusted_keys=[trusted])
    backlog = int(outage_s * fps)
    queue = FrameQueue(edge.resolved_data_dir / "queue", edge.max_queue_bytes)
    started = time.perf_counter()
    prefill(queue, "bench-cam", backlog, outage_s)
    print(f"\nbacklog drain: {backlog} frames ({outage_s:.0f} s at {fps:g} fps) queued in "
          f"{time.perf_counter() - started:.0f} s; draining to {api} at a cap of {cap:g} frames/s, "
          f"the camera still at {fps:g} fps")
    queue.close()
    agent = EdgeAgent(edge)
    agent.models.install(model)
    async with running(agent):
        started, since = time.perf_counter(), time.time()
        # Drained when no frame captured before the agent started waits any longer.
        while (oldest := agent.queue.depth().oldest_captured_at) is not None and oldest < since:
            await asyncio.sleep(0.5)
        took = time.perf_counter() - started
    print(f"backlog accepted in {took:.1f} s: {backlog / took:.1f} backlog frames/s, "
          f"{(backlog + fps * took) / took:.1f} frames/s with the live ones, against a cap of {cap:g}; the cap alone "
          f"predicts {backlog / (cap - fps):.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("untrained", "stack"), default="untrained")
    ap.add_argument("--architecture", default="mobilenet_v3_small")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=300, help="frames timed for the decisions")
    ap.add_argument("--outage-s", type=float, default=600.0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--cap", type=float, default=EdgeSettings.model_fields["rate_frames_per_s"].default)
    ap.add_argument("--batch", type=int, default=EdgeSettings.model_fields["batch_max_frames"].default)
    ap.add_argument("--no-drain", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        work = Path(tmp)
        model, trusted = stack_model() if args.model == "stack" else untrained_model(work, args.architecture,
                                                                                      args.input_size)
        asyncio.run(decisions(model, trusted, work, args.frames))
        if not args.no_drain:
            asyncio.run(drain(work, model, trusted, args.outage_s, args.fps, args.cap, args.batch))


if __name__ == "__main__":
    main()
