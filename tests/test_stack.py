"""`sightline up / status / down` on a data dir of its own, with ports of its own; the local Postgres
keeping its port across a SIGKILL and restart, with a pool that finds it again by itself; `status`
saying which part is down and why. Killing every part under load: tests/faults/."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from infra.db import open_pool
from infra.postgres_server import LocalPostgres
from infra.processes import alive
from tests.faults.harness import new_data_dir, sightline, stack_env
from tests.polling import eventually, wait_until


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = new_data_dir("sl-stack-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(data_dir: Path) -> Iterator[dict[str, str]]:
    env = stack_env(data_dir)
    yield env
    sightline(env, "down", timeout=120)


def pids(env) -> dict[str, int]:
    run = Path(env["SIGHTLINE_DATA_DIR"]) / "run"
    return {p.stem: int(p.read_text()) for p in run.glob("*.pid")}


def test_up_twice_status_and_down(env):
    first = sightline(env, "up", timeout=540)
    assert first.returncode == 0, first.stdout + first.stderr
    # A fresh data dir: `up` says what the first start costs, then shows model v1's epochs as it trains.
    assert "First start" in first.stdout and "trains model v1" in first.stdout, first.stdout
    assert "training model v1: epoch" in first.stdout and "training accuracy" in first.stdout, first.stdout
    started = pids(env)
    assert set(started) >= {"temporal", "serving", "worker", "api"}
    assert all(alive(pid) for pid in started.values())
    assert httpx.get(f"http://127.0.0.1:{env['SIGHTLINE_API_PORT']}/healthz").json() == {"status": "ok"}
    assert httpx.get(env["SIGHTLINE_TEMPORAL_UI_URL"]).status_code == 200
    assert httpx.get(f"{env['SIGHTLINE_SERVING_URL']}/healthz").status_code == 200
    # Temporal's SQLite runs with a write-ahead log (infra.stack.SQLITE_PRAGMAS): the mode is kept in the file.
    temporal_db = sqlite3.connect(Path(env["SIGHTLINE_DATA_DIR"]) / "temporal.db")
    try:
        assert temporal_db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        temporal_db.close()

    again = sightline(env, "up")
    assert again.returncode == 0
    assert "First start" not in again.stdout and "training model v1" not in again.stdout
    assert pids(env) == started, "a second `up` started something again"

    status = sightline(env, "status")
    assert status.returncode == 0, status.stdout
    for part in ("postgres", "temporal", "ray", "serving", "worker", "api"):
        assert part in status.stdout
    assert str(started["api"]) in status.stdout and env["SIGHTLINE_TEMPORAL_ADDRESS"] in status.stdout

    listed = subprocess.run(
        [str(Path(sys.executable).parent / "temporal"), "operator", "search-attribute", "list",
         "--address", env["SIGHTLINE_TEMPORAL_ADDRESS"]], capture_output=True, text=True, timeout=30)
    assert "SightlineCamera" in listed.stdout and "SightlineDefectCount" in listed.stdout

    down = sightline(env, "down")
    assert down.returncode == 0
    assert not any(alive(pid) for pid in started.values())
    assert sightline(env, "status").returncode == 3
    assert (Path(env["SIGHTLINE_DATA_DIR"]) / "logs" / "api.log").exists()


async def test_postgres_comes_back_on_its_port_and_the_pool_reconnects(data_dir: Path):
    server = LocalPostgres(data_dir / "postgres" / "pgdata")
    url = server.start()
    port = server.port
    assert server.stored_port() == port
    async with open_pool(url, timeout=2) as pool:
        async with pool.connection() as conn:
            await conn.execute("CREATE TABLE kept (n int)")
            await conn.execute("INSERT INTO kept VALUES (1)")
        pid = server.pid()
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), timeout=30, message="the postmaster to die")
        # Killed, it is a zombie no one reaps here, and its lock file stays: neither means "running".
        again = LocalPostgres(data_dir / "postgres" / "pgdata")
        assert again.pid() is None
        with pytest.raises(psycopg.OperationalError):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")

        assert again.start() == url, "a restarted Postgres must keep its port: clients hold the URL"
        assert again.pid() not in (None, pid)

        async def answers() -> int | None:
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT count(*) AS n FROM kept")
                    return (await cur.fetchone() or {}).get("n")
            except psycopg.OperationalError:
                return None

        # The pool was opened before the crash; nobody reopens it.
        assert await eventually(answers, timeout=30, message="the pool to reach the restarted server") == 1
    again.stop()


def test_status_says_which_part_is_down_and_why(data_dir: Path):
    env = stack_env(data_dir)
    (data_dir / "run").mkdir()
    (data_dir / "logs").mkdir()
    # A worker that died: its pid file names a process that is gone; its log says what happened last.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (data_dir / "run" / "worker.pid").write_text(str(gone.pid))
    (data_dir / "logs" / "worker.log").write_text(
        '{"service": "worker", "event": "worker started", "level": "info", "timestamp": "2026-01-01T00:00:00Z"}\n'
        '{"service": "worker", "event": "activity failed", "level": "error", "timestamp": "2026-01-01T00:00:01Z", '
        '"exception": "Traceback (most recent call last):\\n  ...\\nMemoryError: out of memory"}\n')

    status = sightline(env, "status")
    assert status.returncode == 3
    out = status.stdout
    worker = out[out.index("worker: "):]
    assert f"pid {gone.pid}" in worker and "is gone" in worker
    assert "error activity failed" in worker and "MemoryError: out of memory" in worker
    assert "postgres: Postgres was never started here" in out
    assert "api: the API was never started here" in out


def test_the_log_follower_hands_over_whole_json_records_once(tmp_path: Path):
    from infra.stack import LogFollower

    log = tmp_path / "serving.log"
    log.write_text('{"event": "before"}\n')
    follower = LogFollower(log)  # what was there before the part started is not news
    with open(log, "a") as f:
        f.write('{"event": "training", "epoch": 1}\nnot json: a Ray banner\n{"event": "training", "ep')
    assert follower.new_records() == [{"event": "training", "epoch": 1}]
    with open(log, "a") as f:
        f.write('och": 2}\n')
    assert follower.new_records() == [{"event": "training", "epoch": 2}]
    assert follower.new_records() == []


def test_ports_for_our_servers_come_from_below_the_ephemeral_range():
    """A stack's ports are chosen before its servers start and kept across restarts; from the ephemeral
    range, an outgoing connection or another server's bind(0) could take one meanwhile (the Temporal dev
    server panics when its UI port is taken)."""
    from infra.postgres_server import ephemeral_range, free_port, port_free

    low, _ = ephemeral_range()
    if low <= 12_000:
        pytest.skip(f"this kernel's ephemeral range starts at {low}: no room below it")
    ports = [free_port() for _ in range(50)]
    assert all(10_000 <= port < low for port in ports), ports
    assert all(port_free(port) for port in ports)
    assert len(set(ports)) > 40, "drawn at random, not the same few"
