"""Every part of the local stack killed with SIGKILL under load, and brought back with `sightline up`:
nothing accepted is lost, nothing is done twice, nothing is left stuck.

Load comes from the ingest benchmark's client (bench.ingest.Load) with frames from the generated
camera, dim and blurred ones among them so that some go to human review. For each kill: load starts,
the part is killed once batches are being accepted, the API is asked while Postgres or Temporal is
away (it must answer 503 with Retry-After, never 500), `sightline up` brings the part back, and a
batch submitted after it must complete (the recovery time runs from the kill to that). Batches turned
away are resubmitted under the same idempotency key, as a client would. Then the checks of
tests/faults/checks.py, and the table.

    SIGHTLINE_FAULT_ROUNDS    kills per part (default 1: the short run in `make test`; `make test-faults`: 4)
    SIGHTLINE_FAULT_DB_OUTAGE_S  how long the first Postgres kill stays down, under load (default 0)
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest
from temporalio.client import Client

from bench.ingest import Load
from infra.db import DbPool, open_pool
from infra.stack_urls import database_url
from infra.temporal import connect
from tests.faults.checks import (
    check_batches,
    check_predictions,
    check_workflows,
    explain_reviews,
    reviews_consistent,
    settled,
)
from tests.faults.harness import PARTS, REPORT, FaultStack, Files, Ingest, Kill, ingesting
from tests.polling import eventually
from vision.camera import NORMAL, Conditions, generate_frames

pytest_plugins = ["tests.serving_fixtures"]

ROUNDS = int(os.environ.get("SIGHTLINE_FAULT_ROUNDS", "1"))
DB_OUTAGE_S = float(os.environ.get("SIGHTLINE_FAULT_DB_OUTAGE_S", "0"))
CLIENTS = 2
FRAMES_PER_BATCH = 8
LOAD_S = 4.0
# Parts whose absence the API must answer with 503 and Retry-After (the API's own absence is no answer).
ANSWERED_WHILE_AWAY = {"postgres", "temporal"}


def camera_frames() -> list[bytes]:
    """The generated camera's frames: half in normal light, half dim, blurred and noisy, which the
    model is less sure of, so that some frames go to human review."""
    poor = Conditions(brightness=0.55, blur=2.0, noise=18.0, viewpoint_shift=0.5)
    return ([f.jpeg() for f in generate_frames("faults", 16, seed=3, conditions=NORMAL)]
            + [f.jpeg() for f in generate_frames("faults", 16, seed=4, conditions=poor)])


def some_frames(frames: list[bytes], count: int, seed: int) -> Files:
    rng = random.Random(seed)
    return [("frames", (f"p{i}.jpg", rng.choice(frames), "image/jpeg")) for i in range(count)]


async def kill_under_load(stack: FaultStack, ingest: Ingest, pool: DbPool, temporal: Client, frames: list[bytes],
                          n: int, part: str, outage_s: float) -> Kill:
    camera = f"{ingest.site_id}-k{n:02d}-{part}"
    load = Load(frames, FRAMES_PER_BATCH, CLIENTS, LOAD_S)
    running = asyncio.create_task(load.run(ingest.sender(camera)))

    async def accepting() -> bool:
        assert not running.done(), f"no batch accepted before the kill: {load.errors[-3:]}"
        return ingest.by_camera[camera] > 0

    await eventually(accepting, timeout=120, message=f"a batch accepted before killing {part}")
    kill = Kill(part, stack.kill(part))
    killed = time.monotonic()
    if part in ANSWERED_WHILE_AWAY:
        # Stored frames of this batch must not be lost when its start fails: it is resubmitted below.
        answer = await ingest.submit(camera, "while-away", some_frames(frames, 4, n), backoff=False)
        assert answer is not None, f"the API did not answer while {part} was away"
        assert answer.status_code == 503 and answer.headers.get("retry-after"), (
            f"while {part} was away the API answered {answer.status_code} {answer.headers} {answer.text[:300]}")
    if outage_s:
        # The outage lasts this long, and the clients keep submitting all along.
        await Load(frames, FRAMES_PER_BATCH, CLIENTS, outage_s).run(ingest.sender(camera))
    kill.held_s = time.monotonic() - killed
    kill.up_s = await asyncio.to_thread(stack.up)
    probe = await ingest.submit_until_accepted(camera, "after-up", some_frames(frames, 2, n + 1000))
    await eventually(lambda: settled(pool, temporal, [probe], ingest.site_id), timeout=300,
                     message=f"a batch to complete after {part} came back")
    kill.recovered_s = time.monotonic() - killed
    await running
    kill.resubmitted = await ingest.resubmit_pending(camera)
    kill.accepted, kill.turned_away = ingest.by_camera[camera], ingest.turned_away[camera]
    return kill


def table(kills: list[Kill], lines: list[str]) -> list[str]:
    rows = [f"{'#':>3} {'part':<9} {'pid':>7} {'down_s':>7} {'up_s':>6} {'recovered_s':>11} "
            f"{'accepted':>8} {'turned_away':>11} {'resubmitted':>11}"]
    rows += [f"{i:>3} {k.part:<9} {k.pid:>7} {k.held_s:>7.1f} {k.up_s:>6.1f} {k.recovered_s:>11.1f} "
             f"{k.accepted:>8} {k.turned_away:>11} {k.resubmitted:>11}" for i, k in enumerate(kills, 1)]
    for part in PARTS:
        times = [k.recovered_s for k in kills if k.part == part]
        if times:
            rows.append(f"    {part:<9} killed {len(times)}x, recovered in {min(times):.1f}-{max(times):.1f} s")
    return [*rows, *lines]


# Past the suite's 10 minutes a test: the stack's start, then up to two minutes per kill on a busy machine.
@pytest.mark.timeout(900 + 120 * len(PARTS) * ROUNDS + DB_OUTAGE_S)
async def test_every_part_killed_under_load_comes_back_with_nothing_lost(fault_stack: FaultStack) -> None:
    stack = fault_stack
    frames = camera_frames()
    url = database_url(stack.settings)
    schedule = [part for _ in range(ROUNDS) for part in PARTS]
    kills: list[Kill] = []
    # The suite's own clients live through every kill too: this pool reconnects, the Temporal client too.
    temporal = await connect(stack.settings.temporal_address, stack.settings.temporal_namespace)
    async with open_pool(url) as pool:
        async with ingesting(stack, pool, "faults") as ingest:
            for n, part in enumerate(schedule):
                first_postgres = part == "postgres" and "postgres" not in {k.part for k in kills}
                kills.append(await kill_under_load(stack, ingest, pool, temporal, frames, n, part,
                                                   DB_OUTAGE_S if first_postgres else 0.0))
            assert not ingest.pending, f"batches never accepted: {sorted(ingest.pending)[:10]}"

        batch_ids = sorted(ingest.accepted)
        await eventually(lambda: settled(pool, temporal, batch_ids, ingest.site_id), timeout=600, interval=0.5,
                         message=f"all {len(batch_ids)} accepted batches to finish")
        await check_batches(pool, ingest.accepted, ingest.site_id)
        frame_count, accepted_frames, predictions, versions = await check_predictions(pool, batch_ids)
        try:
            reviews = await eventually(lambda: reviews_consistent(pool, temporal, batch_ids), timeout=60,
                                       interval=0.5, message="review tasks: batches, projection and Temporal agree")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {await explain_reviews(pool, temporal, batch_ids)}") from None
        await check_workflows(temporal, batch_ids, ingest.site_id)

    answers = ", ".join(f"{k} {v}" for k, v in sorted(ingest.outcomes.items()))
    REPORT[:] = table(kills, [
        f"kills: {len(kills)}; batches accepted: {len(batch_ids)}, all completed "
        f"({sum(k.resubmitted for k in kills)} of them after being turned away, under the same key)",
        f"frames: {frame_count} recorded, {accepted_frames} accepted; predictions: {predictions} "
        f"(model versions {', '.join(versions)}), exactly one per accepted frame and version",
        f"review tasks: {max(reviews, 0)}, the same in batches, projection and Temporal; stuck workflows: 0",
        f"API answers during the run: {answers}",
    ])
    print("\n".join(REPORT))
    unexpected = {k: v for k, v in ingest.outcomes.items() if k.isdigit() and k[0] == "5" and k != "503"}
    assert not unexpected, f"the API answered errors other than 503: {unexpected}"
    assert ingest.unavailable_without_retry_after == 0, "a 503 or 429 came without Retry-After"
