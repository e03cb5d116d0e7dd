"""The local stack: every real component as a process of ours, with its state, logs and pid under the
data dir. `up` starts what is not running and returns when each part answers its health check;
`down` stops them in reverse order. A file lock keeps two `up`s from starting anything twice.

`up` is also the way back after a crash: it starts whichever parts died (a pid file naming a process
that is gone, a zombie or a stranger is stale; what a killed part left behind in its process group is
cleared first) and leaves the living ones alone. Postgres comes back on the port it always had, and
the living parts' connection pools find it again by themselves (infra.db.open_pool). `status` says
which part is down or unhealthy, and why: the end of its log."""

from __future__ import annotations

import asyncio
import fcntl
import json
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
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg

from infra.postgres_server import LocalPostgres, PortTaken
from infra.processes import alive, command_line, environment_has, kill_and_wait, kill_leftovers, listening_on
from infra.schema_migrations import apply_migrations
from infra.settings import Settings
from infra.stack_urls import LOCAL_DATABASE, postgres_dir
from infra.temporal import connect, has_pollers, temporal_cli_path

# The Temporal dev server's SQLite (see start_temporal for why these).
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")
DYNAMIC_CONFIG = ("--dynamic-config-value", "system.enableEagerWorkflowStart=true",
                  "--dynamic-config-value", "system.enableActivityEagerExecution=true")


class StackError(RuntimeError):
    pass


@dataclass
class PartStatus:
    name: str
    running: bool  # its process runs
    pid: int | None
    url: str
    log: Path | None
    healthy: bool = False  # running, and it answers its health check
    problem: str = ""  # when down or unhealthy: why, as far as we can tell, then the end of its log

    @property
    def state(self) -> str:
        return "running" if self.healthy else "unhealthy" if self.running else "down"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _wait(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = "".join(f"\n{line}" for line in log_tail(log, 20))
            raise StackError(f"{what} did not become healthy within {timeout:.0f}s{tail}")
        time.sleep(0.2)


class LogFollower:
    """The JSON records a service appends to its log from now on (our services log JSON lines): how
    `up` shows what a starting part is doing, such as model v1's training epochs."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = log.stat().st_size if log.exists() else 0

    def new_records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        with open(self.log, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.offset += len(complete)
        records = []
        for line in complete.splitlines():
            with suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


def log_tail(log: Path | None, lines: int = 6) -> list[str]:
    """The last lines of a part's log, readable: a JSON line (our services log JSON) as its time,
    level, event and fields, with an exception cut to its last line."""
    if log is None or not log.exists():
        return []
    with open(log, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
        raw = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()][-lines:]
    shown = []
    for line in raw:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict) and "event" in entry:
            exception = str(entry.pop("exception", "")).strip().splitlines()
            head = " ".join(str(entry.pop(k, "")) for k in ("timestamp", "level", "event"))
            fields = " ".join(f"{k}={v}" for k, v in entry.items() if k != "service")
            line = " ".join(filter(None, [head, fields, exception[-1] if exception else ""]))
        shown.append(line if len(line) <= 400 else line[:400] + " …")
    return shown


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

    def _recorded_pid(self, name: str) -> int | None:
        try:
            return int(self._pidfile(name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _pid(self, name: str) -> int | None:
        """The part's pid while the process we started runs; its pid file was written just after the
        start, so a process that started later merely reuses the number."""
        pid = self._recorded_pid(name)
        try:
            written = self._pidfile(name).stat().st_mtime
        except FileNotFoundError:
            return None
        return pid if alive(pid, started_by=written) else None

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
        self._clear_leftovers(name)
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

    def _clear_leftovers(self, name: str) -> None:
        """Killed with SIGKILL, a part cannot take its children along (the serving process's Ray head,
        raylet and replicas), and they would hold its ports and memory: clear them."""
        stale = self._recorded_pid(name)
        if stale and not self._pid(name):
            kill_leftovers(stale)

    def _claim_port(self, port: int, what: str) -> None:
        """Before a part starts: nothing may listen on its port. What is left of an earlier run of ours
        (a process whose environment names this data dir, such as the Serve proxy of a killed serving
        process, still winding down and still answering) is stopped; another program is an error that
        says who it is."""
        holders = listening_on(port)
        ours = [pid for pid in holders if environment_has(pid, "SIGHTLINE_DATA_DIR", str(self.root))]
        kill_and_wait(ours)
        others = [f"pid {pid}: {command_line(pid)[:120]}" for pid in holders if pid not in ours]
        if others:
            raise StackError(f"port {port}, where {what} listens, is taken by another program ({'; '.join(others)}): "
                             "stop it, or give this stack other ports (SIGHTLINE_* settings)")

    def _stop(self, name: str, timeout: float = 20) -> bool:
        pid = self._pid(name)
        if pid is None:
            self._clear_leftovers(name)
            self._pidfile(name).unlink(missing_ok=True)
            return False
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
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
        try:
            self.postgres.start()
        except PortTaken as exc:
            raise StackError(str(exc)) from None
        except subprocess.CalledProcessError as exc:
            tail = "\n".join(log_tail(self.postgres.log, 20))
            raise StackError(f"Postgres did not start: {(exc.stderr or '').strip()}\n{tail}") from None
        self.postgres.create_database(LOCAL_DATABASE)
        apply_migrations(self.database_url())

    def start_temporal(self) -> None:
        if self._pid("temporal"):
            return
        self._claim_port(self.temporal_port, "Temporal")
        self._claim_port(self.ui_port, "the Temporal UI")
        # Search attributes are registered by the worker and the API at their start-up, from what
        # workflows/search_attributes.py declares (infra.temporal.ensure_search_attributes).
        db_file = self.root / "temporal.db"
        args = [
            temporal_cli_path(), "server", "start-dev",
            "--db-filename", str(db_file),
            "--ip", self.temporal_host, "--port", str(self.temporal_port), "--ui-port", str(self.ui_port),
            "--namespace", self.settings.temporal_namespace,
            "--log-level", "warn",
            # Write-ahead log, synced at checkpoints rather than at every commit: a killed server
            # (what the fault suite does) loses nothing, since its writes are in the OS already; only
            # a crash of the machine itself could lose the last moments. With the default rollback
            # journal Temporal spent 142 ms of CPU per 64-frame batch, with these 113 (back-to-back
            # bench/ingest.py runs; runs on these machines vary by 10-15%).
            *SQLITE_PRAGMAS,
            # Eager starts (the first workflow task handed back in the start's own answer, to a worker
            # in the starting process) and eager activities (an activity on the workflow's own queue
            # handed back with the task that scheduled it): each saves a trip through matching. Off
            # in the dev server by default; bench/minimal_workflow.py measures both shapes.
            *DYNAMIC_CONFIG,
        ]
        self._spawn("temporal", args, {"SIGHTLINE_DATA_DIR": str(self.root)})  # marks it as ours
        _wait(lambda: _port_open(self.temporal_host, self.temporal_port), 60, "Temporal", self._log("temporal"))
        _wait(lambda: _port_open(self.temporal_host, self.ui_port), 30, "Temporal UI", self._log("temporal"))

    def _service_env(self) -> dict[str, str]:
        return {
            "SIGHTLINE_DATA_DIR": str(self.root),
            "SIGHTLINE_DATABASE_URL": self.database_url(),
            "SIGHTLINE_LOG_JSON": "true",
            # One worker process runs every queue, under Worker Versioning as production does; its build
            # keeps one id across restarts, so a run begun before a restart carries on after it.
            "SIGHTLINE_WORKER_BUILD_ID": self.settings.worker_build_id or "local",
        }

    def _start_service(self, name: str, module: str, what: str, timeout: float, healthy: Callable[[], bool],
                       port: int | None = None, on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Spawn `python -m module` unless it runs, and wait until `healthy()`, handing each JSON record
        it logs meanwhile to `on_record`; if the process exits meanwhile, fail at once with the end of
        its log rather than at the deadline."""
        if self._pid(name):
            return
        if port:
            self._claim_port(port, what)
        follower = LogFollower(self._log(name))
        self._spawn(name, [sys.executable, "-m", module], self._service_env())

        def check() -> bool:
            if on_record is not None:
                for record in follower.new_records():
                    on_record(record)
            if not self._pid(name):
                raise StackError("\n".join([f"{what} exited:", *log_tail(self._log(name), 30)]))
            return healthy()

        _wait(check, timeout, what, self._log(name))

    def start_serving(self, training: Callable[[dict[str, Any]], None] | None = None) -> None:
        """The Ray Serve application (python -m serving.deploy). With no SIGHTLINE_RAY_ADDRESS it starts
        the local Ray head itself, temp dir under the data dir; a separate `ray start --head` would
        advertise the host's network address, which clients here cannot always reach. On a fresh data
        dir it first trains and registers model v1, which takes a few minutes on the CPU."""
        restarting = self._recorded_pid("serving") is not None and not self._pid("serving")
        def on_record(record: dict[str, Any]) -> None:
            # serving.deploy logs an event per epoch while it trains model v1 on a fresh data dir.
            if training is not None and record.get("event") == "training":
                training(record)

        self._start_service("serving", "serving.deploy", "the inference service", 900,
                            lambda: not self._serving_health(), urlparse(self.settings.serving_url).port, on_record)
        if restarting and not self.settings.ray_address and self.settings.serving_transport == "handle":
            # A worker that reaches Serve through its handle joined the Ray head that died with the
            # serving process, and a Ray driver cannot move to the new one: it starts again with it.
            self._stop("worker")

    def start_worker(self) -> None:
        self._start_service("worker", "workers.main", "the worker", 90, lambda: not self._worker_health())

    def start_api(self) -> None:
        self._start_service("api", "api.main", "the API", 90, lambda: not self._api_health(), self.settings.api_port)

    # -- the whole -----------------------------------------------------------------------------
    @property
    def first_start(self) -> bool:
        """No database yet: this start creates it and serving trains model v1 (minutes, not seconds)."""
        return not self.settings.database_url and not self.postgres.pgdata.exists()

    def up(self, progress: Callable[[str], None] = lambda _: None,
           training: Callable[[dict[str, Any]], None] | None = None) -> list[PartStatus]:
        """Start whatever is not running, in order; `progress(part)` before each part, `training(record)`
        for each epoch while serving trains model v1 (epoch, epochs, loss, accuracy, elapsed_s)."""
        with self._locked():
            for name, start in (
                ("postgres", self.start_postgres),
                ("temporal", self.start_temporal),
                ("serving", lambda: self.start_serving(training)),
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

    # -- what runs, and what does not --------------------------------------------------------
    def _problem(self, name: str, what: str, log: Path | None) -> str:
        recorded = self._recorded_pid(name) if name != "postgres" else None
        if recorded:
            why = f"{what} is not running: pid {recorded} in {self._pidfile(name)} is gone (it exited or was killed)"
        elif name == "postgres" and (self.postgres.pgdata / "postmaster.pid").exists():
            why = f"{what} is not running: {self.postgres.pgdata / 'postmaster.pid'} names a process that is gone"
        elif log is not None and log.exists():
            why = f"{what} is not running (stopped)"
        else:
            why = f"{what} was never started here"
        tail = log_tail(log)
        return "\n".join([why + ("; the end of its log:" if tail else ""), *tail])

    def _postgres_health(self) -> str:
        try:
            with psycopg.connect(self.database_url(), connect_timeout=2):
                return ""
        except psycopg.Error as exc:
            return f"does not accept connections: {str(exc).strip()}"

    def _temporal_health(self) -> str:
        if _port_open(self.temporal_host, self.temporal_port):
            return ""
        return f"does not accept connections on {self.settings.temporal_address}"

    @staticmethod
    def _http_health(url: str) -> str:
        try:
            response = httpx.get(url, timeout=3)
        except httpx.HTTPError as exc:
            return f"{url} does not answer: {exc!r}"
        return "" if response.status_code == 200 else f"{url} answers {response.status_code}: {response.text[:200]}"

    def _serving_health(self) -> str:
        return self._http_health(f"{self.settings.serving_url}/healthz")

    def _api_health(self) -> str:
        return self._http_health(f"{self.settings.resolved_api_url}/healthz")

    def _worker_health(self) -> str:
        s = self.settings

        async def polling() -> bool:
            client = await connect(s.temporal_address, s.temporal_namespace)
            return await has_pollers(client, s.temporal_namespace, s.orchestration_task_queue)

        try:
            if asyncio.run(asyncio.wait_for(polling(), 5)):
                return ""
        except Exception as exc:  # whatever keeps us from asking Temporal is the answer
            return f"cannot ask Temporal whether it polls: {exc!r}"
        return f"no worker polls the task queue {s.orchestration_task_queue!r}"

    def _part(self, name: str, what: str, pid: int | None, url: str, log: Path | None,
              health: Callable[[], str]) -> PartStatus:
        if pid is None:
            return PartStatus(name, False, None, url, log, problem=self._problem(name, what, log))
        trouble = health()
        return PartStatus(name, True, pid, url, log, healthy=not trouble,
                          problem=f"{what} runs but is unhealthy: {trouble}" if trouble else "")

    def status(self) -> list[PartStatus]:
        ui = f"http://{self.temporal_host}:{self.ui_port}"
        s = self.settings
        parts = []
        if s.database_url:
            trouble = self._postgres_health()
            parts.append(PartStatus("postgres", True, None, s.database_url, None, healthy=not trouble,
                                    problem=trouble))
        else:
            pg_pid = self.postgres.pid()
            if pg_pid:
                self.postgres.port = self.postgres.running_port() or self.postgres.port
            parts.append(self._part("postgres", "Postgres", pg_pid, self.database_url() if pg_pid else "-",
                                    self.postgres.log, self._postgres_health))
        parts.append(self._part("temporal", "the Temporal server", self._pid("temporal"),
                                f"{s.temporal_address} (UI {ui})", self._log("temporal"), self._temporal_health))
        serving = self._part("serving", "the inference service", self._pid("serving"),
                             f"{s.serving_url} (Ray Serve)", self._log("serving"), self._serving_health)
        if s.ray_address:
            parts.append(PartStatus("ray", True, None, s.ray_address, None, healthy=True))
        else:
            parts.append(PartStatus("ray", serving.running, serving.pid, f"local head in the serving process, "
                                    f"{self.root / 'ray'}", serving.log, healthy=serving.running,
                                    problem="" if serving.running else "runs inside the serving process: see serving"))
        parts.append(serving)
        parts.append(self._part("worker", "the worker", self._pid("worker"),
                                f"task queues: {s.orchestration_task_queue} (and its webhooks), "
                                f"{s.inference_task_queue}, {s.training_task_queue}",
                                self._log("worker"), self._worker_health))
        parts.append(self._part("api", "the API", self._pid("api"), f"{s.resolved_api_url} (docs /docs)",
                                self._log("api"), self._api_health))
        return parts
