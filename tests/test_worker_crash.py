"""A worker killed (SIGKILL) while a batch runs: a new worker finishes it, with no duplicate rows. The
worker runs both task queues against the real Ray Serve app, so the kill can land anywhere: in a
workflow task, a local activity, or a classification waiting on serving."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from infra.db import DbPool
from infra.settings import Settings
from tests.frames import multipart, noise_png
from tests.polling import eventually

# The session fixtures (tiny trained model, registry, Ray Serve app), registered once as a plugin.
pytest_plugins = ["tests.serving_fixtures"]

FRAMES = 24


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SIGHTLINE_DATABASE_URL": settings.database_url,
        "SIGHTLINE_OBJECT_STORE_URL": settings.resolved_object_store_url,
        "SIGHTLINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "SIGHTLINE_ORCHESTRATION_TASK_QUEUE": settings.orchestration_task_queue,
        "SIGHTLINE_INFERENCE_TASK_QUEUE": settings.inference_task_queue,
        "SIGHTLINE_SERVING_URL": settings.serving_url,
        # One activity at a time, so the kill lands between chunks rather than after all of them.
        "SIGHTLINE_WORKER_MAX_CONCURRENT_ACTIVITIES": "1",
        "SIGHTLINE_LOG_JSON": "true",
    }
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "workers.main"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


async def count_classified(pool: DbPool, batch_id: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM frames WHERE batch_id = %s AND status <> 'pending'",
                                 (batch_id,))
        row = await cur.fetchone()
        return int(row["n"]) if row else 0


async def test_killed_worker_batch_is_finished_by_a_new_worker(test_settings, temporal_client, db_pool, tmp_path,
                                                               api_keys, serving_url, model_store, production_model):
    from api.main import create_app

    settings = test_settings.model_copy(update={
        "classify_chunk_size": 2, "serving_url": serving_url, "object_store_url": f"file://{model_store.root}"})
    app = create_app(settings, temporal_client=temporal_client)
    first = start_worker(settings, tmp_path / "worker-1.log")
    second = None
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60,
            headers={"Authorization": f"Bearer {api_keys['ingest']}"},
        ) as http:
            files = [(f"n{i}.png", noise_png(i, size=768), "image/png") for i in range(FRAMES)]
            response = await http.post("/v1/batches", data={"camera_id": "crash", "idempotency_key": "k"},
                                       files=multipart(files))
            batch_id = response.json()["batch_id"]

            async def some_classified() -> int:
                assert first.poll() is None, (tmp_path / "worker-1.log").read_text()
                return await count_classified(db_pool, batch_id)

            done = await eventually(some_classified, 120, "the first worker to classify a chunk", interval=0.02)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            assert done < FRAMES, "the batch finished before the worker could be killed"

            second = start_worker(settings, tmp_path / "worker-2.log")
            result = await asyncio.wait_for(temporal_client.get_workflow_handle(batch_id).result(), 180)
            assert result["accepted"] == FRAMES  # started by name, so the result comes back untyped

            async with db_pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) AS n, count(DISTINCT position) AS positions, "
                    "count(*) FILTER (WHERE status = 'accepted') AS accepted FROM frames WHERE batch_id = %s",
                    (batch_id,),
                )
                assert await cur.fetchone() == {"n": FRAMES, "positions": FRAMES, "accepted": FRAMES}
                cur = await conn.execute(
                    "SELECT count(*) AS n, count(DISTINCT frame_id) AS frames FROM predictions"
                    " WHERE frame_id LIKE %s", (f"{batch_id}:%",))
                assert await cur.fetchone() == {"n": FRAMES, "frames": FRAMES}, "one prediction per frame"
                cur = await conn.execute("SELECT count(*) AS n, max(status) AS status, max(accepted_count) AS a "
                                         "FROM batches WHERE batch_id = %s", (batch_id,))
                assert await cur.fetchone() == {"n": 1, "status": "completed", "a": FRAMES}
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
