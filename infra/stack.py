"""The local stack: every real component as a process of ours, with its state, logs and pid under the
data dir. `up` starts what is not running and returns when each part answers its health check;
`down` stops them in reverse order. A file lock keeps two `up`s from starting anything twice."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from infra.db import apply_migrations
from infra.postgres_server import LocalPostgres
from infra.settings import Settings
from infra.stack_urls import LOCAL_DATABASE, postgres_dir
from infra.temporal import connect, has_pollers, temporal_cli_path


class StackError(RuntimeError):
    pass


@dataclass
class PartStatus:
    name: str
    running: bool
    pid: int | None
    url: str
    log: Path | None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _wait(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = ""
            if log and log.exists():
                tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise StackError(f"{what} did not become healthy within {timeout:.0f}s{tail}")
        time.sleep(0.2)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except (FileNotFoundError, IndexError):
        return True


class LocalStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.resolved_data_dir
        self.run_dir = self.root / "run"
        self.log_dir = self.root / "logs"
        host, _, port = settings.temporal_address.partition(":")
        self.temporal_host, self.temporal_port = host, int(port or 7233)
        self.ui_port = urlparse(settings.temporal_ui_url).port or 8233
        self.postgres = LocalPostgres(postgres_dir(settings) / "pgdata")

    # -- bookkeeping ---------------------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self._pidfile(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self._log(name), "ab") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group: `down` stops it with its children
                cwd=os.getcwd(),
            )
        self._pidfile(name).write_text(str(proc.pid))
        return proc.pid

    def _stop(self, name: str, timeout: float = 20) -> bool:
        pid = self._pid(name)
        if pid is None:
            self._pidfile(name).unlink(missing_ok=True)
            return False
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._pidfile(name).unlink(missing_ok=True)
        return True

    # -- the parts -----------------------------------------------------------------------------
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        return self.postgres.url_for(LOCAL_DATABASE)

    def start_postgres(self) -> None:
        if self.settings.database_url:
            apply_migrations(self.settings.database_url)
            return
        self.postgres.start()
        self.postgres.create_database(LOCAL_DATABASE)
        apply_migrations(self.database_url())

    def start_temporal(self) -> None:
        if self._pid("temporal"):
            return
        if _port_open(self.temporal_host, self.temporal_port):
            raise StackError(
                f"port {self.temporal_port} is taken by another program: stop it or set SIGHTLINE_TEMPORAL_ADDRESS"
            )
        # Search attributes are registered by the worker and the API at their start-up, from what
        # workflows/search_attributes.py declares (infra.temporal.ensure_search_attributes).
        db_file = self.root / "temporal.db"
        args = [
            temporal_cli_path(), "server", "start-dev",
            "--db-filename", str(db_file),
            "--ip", self.temporal_host, "--port", str(self.temporal_port), "--ui-port", str(self.ui_port),
            "--namespace", self.settings.temporal_namespace,
            "--log-level", "warn",
        ]
        self._spawn("temporal", args)
        _wait(lambda: _port_open(self.temporal_host, self.temporal_port), 60, "Temporal", self._log("temporal"))
        _wait(lambda: _port_open(self.temporal_host, self.ui_port), 30, "Temporal UI", self._log("temporal"))

    def _service_env(self) -> dict[str, str]:
        return {
            "SIGHTLINE_DATA_DIR": str(self.root),
            "SIGHTLINE_DATABASE_URL": self.database_url(),
            "SIGHTLINE_LOG_JSON": "true",
        }

    def _start_service(self, name: str, module: str, what: str, timeout: float, healthy: Callable[[], bool]) -> None:
        """Spawn `python -m module` unless it runs, and wait until `healthy()`; if the process exits
        meanwhile, fail at once with the end of its log rather than at the deadline."""
        if self._pid(name):
            return
        self._spawn(name, [sys.executable, "-m", module], self._service_env())

        def check() -> bool:
            if not self._pid(name):
                raise StackError(f"{what} exited:\n" + self._log(name).read_text(errors="replace")[-3000:])
            return healthy()

        _wait(check, timeout, what, self._log(name))

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start_serving(self) -> None:
        """The Ray Serve application (python -m serving.deploy). With no SIGHTLINE_RAY_ADDRESS it starts
        the local Ray head itself, temp dir under the data dir; a separate `ray start --head` would
        advertise the host's network address, which clients here cannot always reach. On a fresh data
        dir it first trains and registers model v1, which takes a few minutes on the CPU."""
        self._start_service("serving", "serving.deploy", "the inference service", 900,
                            lambda: self._http_ok(f"{self.settings.serving_url}/healthz"))

    def start_worker(self) -> None:
        async def polling() -> bool:
            client = await connect(self.settings.temporal_address, self.settings.temporal_namespace)
            return await has_pollers(client, self.settings.temporal_namespace, self.settings.orchestration_task_queue)

        self._start_service("worker", "workers.main", "the worker", 90, lambda: asyncio.run(polling()))

    def start_api(self) -> None:
        self._start_service("api", "api.main", "the API", 90,
                            lambda: self._http_ok(f"{self.settings.resolved_api_url}/healthz"))

    # -- the whole -----------------------------------------------------------------------------
    def up(self, progress: Callable[[str], None] = lambda _: None) -> list[PartStatus]:
        with self._locked():
            for name, start in (
                ("postgres", self.start_postgres),
                ("temporal", self.start_temporal),
                ("serving", self.start_serving),
                ("worker", self.start_worker),
                ("api", self.start_api),
            ):
                progress(name)
                start()
        return self.status()

    def down(self) -> list[str]:
        stopped = []
        with self._locked():
            for name in ("api", "worker", "serving", "temporal"):
                if self._stop(name):
                    stopped.append(name)
            if not self.settings.database_url and self.postgres.pid():
                self.postgres.stop()
                stopped.append("postgres")
        return stopped

    def status(self) -> list[PartStatus]:
        ui = f"http://{self.temporal_host}:{self.ui_port}"
        pg_pid = None if self.settings.database_url else self.postgres.pid()
        pg_running = bool(pg_pid) or bool(self.settings.database_url)
        if pg_pid:
            self.postgres.port = self.postgres._running_port()
        return [
            PartStatus("postgres", pg_running, pg_pid, self.database_url() if pg_running else "-",
                       self.postgres.log if pg_pid else None),
            PartStatus("temporal", bool(self._pid("temporal")), self._pid("temporal"),
                       f"{self.settings.temporal_address} (UI {ui})", self._log("temporal")),
            PartStatus("ray", bool(self._pid("serving")) or bool(self.settings.ray_address), self._pid("serving"),
                       self.settings.ray_address or f"local head in the serving process, {self.root / 'ray'}",
                       self._log("serving")),
            PartStatus("serving", bool(self._pid("serving")), self._pid("serving"),
                       f"{self.settings.serving_url} (Ray Serve)", self._log("serving")),
            PartStatus("worker", bool(self._pid("worker")), self._pid("worker"),
                       f"task queues: {self.settings.orchestration_task_queue}, {self.settings.inference_task_queue}",
                       self._log("worker")),
            PartStatus("api", bool(self._pid("api")), self._pid("api"),
                       f"{self.settings.resolved_api_url} (docs /docs)", self._log("api")),
        ]
