"""What tracing and metrics cost the durable path (issue 23: at most 5% of its throughput), measured by
`bench/ingest.py --telemetry-cost` in one run: the local stack's API, worker and serving restarted with
them off, then on, and at each the sustained rate of 64-frame batches as bench/ingest.py measures it
(beside the naive service's saturated rate in the same minute, which shows how busy the machine was).

"off": no spans (SIGHTLINE_TRACE_EXPORTER=none) and no worker or Temporal SDK metrics endpoints (ports 0);
what stays is what cannot be turned off without a code change: the per-chunk prometheus_client counters
in the worker (a few microseconds a chunk) and Ray Serve's own metrics. "on": the settings' exporter (the
local stack's span files unless the environment says otherwise) and every metrics endpoint.

The stack is left running with telemetry on (its default) afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass

from bench.ingest import SizeResult, Stack, measure_size, warm_up
from infra.settings import Settings, get_settings
from infra.stack import LocalStack

OFF = {"SIGHTLINE_TRACE_EXPORTER": "none", "SIGHTLINE_WORKER_METRICS_PORT": "0",
       "SIGHTLINE_WORKER_SDK_METRICS_PORT": "0"}
RESTARTED = ("api", "worker", "serving")


def on_env(settings: Settings) -> dict[str, str]:
    exporter = settings.trace_exporter if settings.trace_exporter != "none" else "file"
    return {"SIGHTLINE_TRACE_EXPORTER": exporter,
            "SIGHTLINE_WORKER_METRICS_PORT": str(settings.worker_metrics_port or 9464),
            "SIGHTLINE_WORKER_SDK_METRICS_PORT": str(settings.worker_sdk_metrics_port or 9465)}


def restart_with(settings: Settings, env: dict[str, str]) -> None:
    """Restart the API, the worker and serving with `env` over this process's environment (the stack
    spawns its parts with it); Postgres and Temporal keep running."""
    os.environ.update(env)
    get_settings.cache_clear()
    stack = LocalStack(settings)
    with stack._locked():
        for name in RESTARTED:
            stack._stop(name)
    stack.up()


@dataclass
class ModeResult:
    mode: str
    result: SizeResult

    @property
    def cpu_ms_per_batch(self) -> float:
        return sum(ms for name, ms in self.result.cpu_ms_per_batch.items() if name != "bench client")


async def measure_modes(settings: Settings, frames: list[bytes], size: int, naive: subprocess.Popen[bytes],
                        naive_port: int, clients: int, seconds: float) -> list[ModeResult]:
    out = []
    for mode, env in (("off", OFF), ("on", on_env(settings))):
        print(f"== telemetry {mode}: restarting the API, the worker and serving ==", flush=True)
        await asyncio.to_thread(restart_with, settings, env)
        stack = Stack(settings)
        await stack.open()
        try:
            await warm_up(stack, frames, size, naive_port, clients, seconds=min(8.0, seconds))
            result = await measure_size(stack, frames, size, naive, naive_port, clients, seconds, None)
        finally:
            await stack.close()
        print(f"  telemetry {mode}: sustained {result.sustained_fps:.0f} frames/s "
              f"({result.sustained_fps / result.naive_fps:.2f}x the naive service's {result.naive_fps:.0f}), "
              f"stack CPU {sum(result.cpu_ms_per_batch.values()):.0f} ms per batch", flush=True)
        out.append(ModeResult(mode, result))
    return out


def report(modes: list[ModeResult]) -> None:
    off, on = (m.result for m in modes)
    ratio = on.sustained_fps / off.sustained_fps if off.sustained_fps else float("nan")
    # Against the naive service measured beside each: the same ratio with the machine's load drift taken out.
    normalised = (on.sustained_fps / on.naive_fps) / (off.sustained_fps / off.naive_fps) if off.naive_fps else ratio
    cpu_off, cpu_on = modes[0].cpu_ms_per_batch, modes[1].cpu_ms_per_batch
    print(f"tracing and metrics, on vs off at {on.frames} frames: throughput {ratio:.3f}x "
          f"({on.sustained_fps:.0f} vs {off.sustained_fps:.0f} frames/s; {normalised:.3f}x against the naive "
          f"service of each run); stack CPU per batch {cpu_on:.0f} vs {cpu_off:.0f} ms "
          f"({(cpu_on - cpu_off) / cpu_off * 100 if cpu_off else float('nan'):+.1f}%); budget: at least 0.95x")
