"""A worker killed (SIGKILL) while a batch runs: a new worker finishes it, with no duplicate rows."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from tests.frames import multipart, noise_png

FRAMES = 24


def start_worker(settings, log_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SIGHTLINE_DATABASE_URL": settings.database_url,
        "SIGHTLINE_OBJECT_STORE_URL": settings.resolved_object_store_url,
        "SIGHTLINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "SIGHTLINE_ORCHESTRATION_TASK_QUEUE": settings.orchestration_task_queue,
        # One activity at a time, so the kill lands between chunks rather than after all of them.
        "SIGHTLINE_WORKER_MAX_CONCURRENT_ACTIVITIES": "1",
        "SIGHTLINE_LOG_JSON": "true",
    }
    return subprocess.Popen([sys.executable, "-m", "workers.main"], env=env, stdout=open(log_path, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


async def count_validated(pool, batch_id) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM frames WHERE batch_id = %s AND status <> 'pending'",
                                 (batch_id,))
        return (await cur.fetchone())["n"]


async def test_killed_worker_batch_is_finished_by_a_new_worker(test_settings, temporal_client, db_pool, tmp_path,
                                                               api_keys):
    import httpx
    from temporalio.worker import Worker

    from api.main import create_app
    from tests.conftest import ScriptedClassifier

    settings = test_settings.model_copy(update={"classify_chunk_size": 2})
    app = create_app(settings, temporal_client=temporal_client)
    first = start_worker(settings, tmp_path / "worker-1.log")
    second = None
    try:
        inference = Worker(temporal_client, task_queue=settings.inference_task_queue,
                           activities=[ScriptedClassifier().activity()])
        async with app.router.lifespan_context(app), inference, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60,
            headers={"Authorization": f"Bearer {api_keys['ingest']}"},
        ) as http:
            files = [(f"n{i}.png", noise_png(i, size=768), "image/png") for i in range(FRAMES)]
            response = await http.post("/v1/batches", data={"camera_id": "crash", "idempotency_key": "k"},
                                       files=multipart(files))
            batch_id = response.json()["batch_id"]

            deadline = time.monotonic() + 120
            while (done := await count_validated(db_pool, batch_id)) == 0:
                assert first.poll() is None, (tmp_path / "worker-1.log").read_text()
                assert time.monotonic() < deadline, "the first worker never validated a frame"
                await asyncio.sleep(0.02)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            assert done < FRAMES, "the batch finished before the worker could be killed"

            second = start_worker(settings, tmp_path / "worker-2.log")
            result = await asyncio.wait_for(temporal_client.get_workflow_handle(batch_id).result(), 120)
            assert result["accepted"] == FRAMES  # started by name, so the result comes back untyped

            async with db_pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) AS n, count(DISTINCT position) AS positions, "
                    "count(*) FILTER (WHERE status = 'accepted') AS accepted FROM frames WHERE batch_id = %s",
                    (batch_id,),
                )
                assert await cur.fetchone() == {"n": FRAMES, "positions": FRAMES, "accepted": FRAMES}
                cur = await conn.execute("SELECT count(*) AS n, max(status) AS status, max(accepted_count) AS a "
                                         "FROM batches WHERE batch_id = %s", (batch_id,))
                assert await cur.fetchone() == {"n": 1, "status": "completed", "a": FRAMES}
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
