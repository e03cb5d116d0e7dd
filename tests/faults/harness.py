"""The fault suite's stack and its client: a local stack of its own (data dir, free ports) run with the
project's own commands, parts killed with SIGKILL, and the ingest client that loads it.

The stack runs as a user runs it: `sightline up` starts it and brings back whatever died, `sightline
down` stops it. `Ingest` is the `send` that bench/ingest.py's `Load` drives: one attempt per batch,
which remembers what was accepted and what was turned away (503 or 429 with Retry-After while a part
is down, or no answer while the API is), so it can be resubmitted with the same idempotency key, as a
client of the API would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.db import DbPool
from infra.postgres_server import LocalPostgres, free_port
from infra.processes import alive
from infra.settings import Settings
from infra.stack_urls import postgres_dir
from infra.tables.api_keys import create_key
from tests.polling import wait_until
from workflows.batch_types import batch_workflow_id

# The parts a user can lose, in the order the suite kills them.
PARTS = ("worker", "serving", "temporal", "postgres", "api")

Files = list[tuple[str, tuple[str, bytes, str]]]

# The kill table of the last run, printed at the end of the session (tests/faults/conftest.py).
REPORT: list[str] = []


def stack_env(data_dir: Path) -> dict[str, str]:
    """The environment of a stack on `data_dir` with free ports of its own: never the default data dir
    or ports, which another stack on this machine may be using."""
    temporal, ui, api, serving = free_port(), free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SIGHTLINE_DATA_DIR": str(data_dir),
        "SIGHTLINE_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal}",
        "SIGHTLINE_TEMPORAL_UI_URL": f"http://127.0.0.1:{ui}",
        "SIGHTLINE_API_PORT": str(api),
        "SIGHTLINE_SERVING_URL": f"http://127.0.0.1:{serving}",
        # A fresh data dir has no model: serving bootstraps one; the small profile keeps that short.
        "SIGHTLINE_BOOTSTRAP_PROFILE": "tiny",
    }
    env.pop("SIGHTLINE_DATABASE_URL", None)
    return env


def new_data_dir(prefix: str) -> Path:
    # Not pytest's tmp_path: its 0700 parents would keep the Postgres system user out; short, under
    # /tmp, because Ray's socket paths in the data dir have a length limit.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def sightline(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The `sightline` command, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


class FaultStack:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = stack_env(data_dir)
        self.settings = Settings(
            data_dir=data_dir, database_url="", temporal_address=self.env["SIGHTLINE_TEMPORAL_ADDRESS"],
            temporal_ui_url=self.env["SIGHTLINE_TEMPORAL_UI_URL"], api_port=int(self.env["SIGHTLINE_API_PORT"]),
            serving_url=self.env["SIGHTLINE_SERVING_URL"], bootstrap_profile="tiny",
        )
        self.postgres = LocalPostgres(postgres_dir(self.settings) / "pgdata")

    def up(self) -> float:
        """`sightline up`; its duration in seconds."""
        started = time.monotonic()
        result = sightline(self.env, "up")
        assert result.returncode == 0, f"`sightline up` failed:\n{result.stdout}\n{result.stderr}"
        return time.monotonic() - started

    def down(self) -> None:
        sightline(self.env, "down", timeout=180)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def pid(self, part: str) -> int:
        if part == "postgres":
            pid = self.postgres.pid()
            assert pid, "Postgres is not running"
            return pid
        return int((self.data_dir / "run" / f"{part}.pid").read_text())

    def kill(self, part: str) -> int:
        """SIGKILL the part's main process (as the OOM killer would), and wait until it is dead."""
        pid = self.pid(part)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), timeout=30, message=f"{part} (pid {pid}) to die")
        return pid


@dataclass
class Kill:
    """One kill and what followed: how long the part stayed down before `sightline up` (held), how long
    `up` took, and when a batch submitted after it had completed (recovered; both from the kill)."""

    part: str
    pid: int
    held_s: float = 0.0
    up_s: float = 0.0
    recovered_s: float = 0.0
    accepted: int = 0  # batches accepted while this kill's load ran
    turned_away: int = 0  # attempts answered 503/429 or not at all
    resubmitted: int = 0  # of those, batches accepted later under the same key


class Ingest:
    """Submits batches (one attempt each) and keeps the score: accepted batches with their frame count,
    attempts turned away (by outcome), and the batches to resubmit under the same key."""

    def __init__(self, http: httpx.AsyncClient, site_id: str) -> None:
        self.http = http
        self.site_id = site_id
        self.accepted: dict[str, int] = {}  # batch id -> frames
        self.by_camera: Counter[str] = Counter()
        self.pending: dict[tuple[str, str], Files] = {}  # (camera, idempotency key) -> frames
        self.outcomes: Counter[str] = Counter()  # "202", "503", "ConnectError", ...
        self.turned_away: Counter[str] = Counter()  # per camera
        self.unavailable_without_retry_after = 0

    async def submit(self, camera: str, key: str, files: Files, backoff: bool = True) -> httpx.Response | None:
        """One attempt; None when the API did not answer. A client told to come back waits as told (or
        a second when nobody answered) before its next batch, so an outage is not a busy loop."""
        self.pending[(camera, key)] = files
        try:
            response = await self.http.post("/v1/batches", files=files,
                                            data={"camera_id": camera, "site_id": self.site_id, "idempotency_key": key})
        except httpx.TransportError as exc:
            self.outcomes[type(exc).__name__] += 1
            self.turned_away[camera] += 1
            if backoff:
                await asyncio.sleep(1)
            return None
        self.outcomes[str(response.status_code)] += 1
        if response.is_success:
            batch_id = response.json()["batch_id"]
            if batch_id not in self.accepted:
                self.by_camera[camera] += 1
            self.accepted[batch_id] = len(files)
            del self.pending[(camera, key)]
        elif response.status_code in (429, 503):
            self.turned_away[camera] += 1
            retry_after = response.headers.get("retry-after")
            if retry_after is None:
                self.unavailable_without_retry_after += 1
            if backoff:
                await asyncio.sleep(float(retry_after or 1))
        return response

    def sender(self, camera: str) -> Callable[[Files, str], Awaitable[httpx.Response]]:
        """`send(files, idempotency_key)` for bench.ingest.Load: no answer is an httpx error, as Load
        expects, and it counts it as an error."""

        async def send(files: Files, key: str) -> httpx.Response:
            response = await self.submit(camera, key, files)
            if response is None:
                raise httpx.ConnectError(f"no answer for {camera}/{key}")
            return response

        return send

    async def resubmit(self, batches: list[tuple[str, str]], timeout: float = 300) -> int:
        """Resubmit these turned-away batches (camera, key) under their keys until each is accepted;
        returns how many there were."""
        deadline = time.monotonic() + timeout
        for camera, key in batches:
            while (camera, key) in self.pending:
                response = await self.submit(camera, key, self.pending[(camera, key)])
                if response is not None and response.status_code not in (429, 503) and not response.is_success:
                    raise AssertionError(f"resubmitting {camera}/{key}: {response.status_code} {response.text}")
                assert time.monotonic() < deadline, f"{camera}/{key} was not accepted within {timeout}s"
        return len(batches)

    async def resubmit_pending(self, camera: str | None = None, timeout: float = 300) -> int:
        return await self.resubmit([b for b in self.pending if camera is None or b[0] == camera], timeout)

    async def submit_until_accepted(self, camera: str, key: str, files: Files, timeout: float = 300) -> str:
        """A batch submitted and resubmitted until accepted; its batch id."""
        await self.submit(camera, key, files)
        await self.resubmit([(camera, key)] if (camera, key) in self.pending else [], timeout)
        return batch_workflow_id(self.site_id, camera, key)


@asynccontextmanager
async def ingesting(stack: FaultStack, pool: DbPool, site_prefix: str) -> AsyncIterator[Ingest]:
    """An `Ingest` of the stack's API under an ingest key of its own, on a new site."""
    async with pool.connection() as conn:
        key = (await create_key(conn, f"fault suite {site_prefix}", "ingest")).raw_key
    async with httpx.AsyncClient(base_url=stack.settings.resolved_api_url, timeout=120,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        yield Ingest(http, site_id=f"{site_prefix}-{uuid.uuid4().hex[:6]}")
