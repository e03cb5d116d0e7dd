"""Worker tuning, measured: the ingest benchmark (bench/ingest.py) at one batch size under several worker
settings (concurrent activities and workflow tasks, the workflow cache), the worker restarted with each,
against the naive synchronous service measured in the same run. The last line compares the best setting
with the default one.

Needs the local stack (`make up`); the worker is restarted for each setting by `sightline up` and left on
the stack's own settings at the end.
    .venv/bin/python bench/worker_sweep.py                      # about 12 minutes on 2 cores
    .venv/bin/python bench/worker_sweep.py --size 16 --seconds 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import SizeResult, Stack, measure_size, pct, stack_and_frames, start_naive
from infra.postgres_server import free_port
from infra.processes import alive
from infra.settings import get_settings

PREFIX = "SIGHTLINE_WORKER_"
# (name, worker settings); the first is the default the others are compared with.
SETTINGS: list[tuple[str, dict[str, str]]] = [
    ("default: 16 activities, 16 workflow tasks, cache 1000", {}),
    ("4 activities, 4 workflow tasks", {"MAX_CONCURRENT_ACTIVITIES": "4", "MAX_CONCURRENT_WORKFLOW_TASKS": "4"}),
    ("64 activities, 64 workflow tasks", {"MAX_CONCURRENT_ACTIVITIES": "64", "MAX_CONCURRENT_WORKFLOW_TASKS": "64"}),
    ("no workflow cache (every task replays)", {"MAX_CACHED_WORKFLOWS": "0"}),
]


def restart_worker(overrides: dict[str, str]) -> None:
    """Stop the stack's worker and let `sightline up` start it again with these settings (the other
    parts are up and stay as they are)."""
    pid_file = get_settings().resolved_data_dir / "run" / "worker.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)  # a graceful stop: the batches it holds finish first
    deadline = time.monotonic() + 120
    while alive(pid):
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker (pid {pid}) did not stop within 120 s")
        time.sleep(0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update({PREFIX + k: v for k, v in overrides.items()})
    subprocess.run([sys.executable, "-m", "cli.main", "up"], env=env, check=True, stdout=subprocess.DEVNULL)


async def sweep(size: int, clients: int, seconds: float) -> list[tuple[str, SizeResult]]:
    settings, frames = stack_and_frames()
    port = free_port()
    naive_proc = start_naive(port)
    results = []
    try:
        for name, overrides in [*SETTINGS, SETTINGS[0]]:  # the default again last: how much runs differ
            print(f"== worker: {name} ==", flush=True)
            restart_worker(overrides)
            stack = Stack(settings)  # a site of its own: batch ids never meet an earlier setting's
            await stack.open()
            try:
                results.append((name, await measure_size(stack, frames, size, naive_proc, port, clients, seconds,
                                                                       None)))
            finally:
                await stack.close()
    finally:
        naive_proc.terminate()
        naive_proc.wait(30)
        restart_worker({})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="frames per batch")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (naive service, probe)")
    parser.add_argument("--seconds", type=float, default=10, help="length of each run")
    args = parser.parse_args()
    results = asyncio.run(sweep(args.size, args.clients, args.seconds))
    print(f"\n{'worker settings':<56} {'sustained':>10} {'vs naive':>9} {'f2p p99':>8}")
    for name, r in results:
        print(f"{name:<56} {r.sustained_fps:>7.0f} f/s {r.sustained_fps / r.naive_fps:>8.2f}x "
              f"{pct(r.frame_to_prediction_s, 99) * 1000:>5.0f} ms")
    default = (results[0][1].sustained_fps + results[-1][1].sustained_fps) / 2
    best_name, best = max(results[1:-1], key=lambda item: item[1].sustained_fps)
    print(f"best worker setting vs default at {args.size} frames: {best.sustained_fps / default:.2f}x ({best_name}; "
          f"the default measured {results[0][1].sustained_fps:.0f} and {results[-1][1].sustained_fps:.0f} frames/s)")


if __name__ == "__main__":
    main()
