"""Processes the local stack started, seen through /proc: whether a recorded pid is still the process
we started (not a zombie, not a later process that reused the number), the leftovers of a part killed
with SIGKILL (its children, in the process group it led) that must go before it starts again, and who
still listens on a port."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# /proc/stat's btime has a resolution of one second, and a process's start is rounded to a clock tick.
_START_TOLERANCE_S = 1.5


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


def started_at(pid: int) -> float | None:
    """When the process started, in seconds since the epoch; None when there is no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return _boot_time() + int(fields[19]) / _CLOCK_TICKS  # field 22 of stat: starttime, in clock ticks


def alive(pid: int | None, started_by: float | None = None) -> bool:
    """Whether `pid` runs: it exists, is not a zombie (a killed process its parent has not reaped yet)
    and, when `started_by` (seconds since the epoch) is given, started no later than that, so a pid
    recorded in a file is not mistaken for an unrelated process that got the same number later."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    if started_by is not None:
        start = started_at(pid)
        return start is not None and start <= started_by + _START_TOLERANCE_S
    return True


def _live_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is `pgid`."""
    members = []
    for pid in _live_pids():
        fields = _stat_fields(pid)
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(pid)
    return members


def working_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory` (a Postgres server's processes all work
    in its data dir, and each leads a process group of its own)."""
    target = str(Path(directory).resolve())
    found = []
    for pid in _live_pids():
        try:
            if os.readlink(f"/proc/{pid}/cwd") == target and alive(pid):
                found.append(pid)
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def kill_and_wait(pids: list[int], timeout: float = 30) -> list[int]:
    """SIGKILL these processes and wait until none runs; returns them."""
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {[p for p in pids if alive(p)]} did not exit after SIGKILL")
        time.sleep(0.05)
    return pids


def kill_leftovers(leader: int, timeout: float = 30) -> list[int]:
    """SIGKILL what is left of the process group a dead `leader` led (a part we started with its own
    session; its children outlive a SIGKILL of the leader), and wait until they are gone. A process
    group's number is not given to a new process while the group has members, so every process found
    here is one of the old group's; and when some process has the leader's number again, the old group
    is empty and that process none of ours. Returns the pids killed."""
    if alive(leader):
        return []
    return kill_and_wait(group_members(leader), timeout)


def listening_on(port: int) -> list[int]:
    """Live processes with a TCP socket listening on `port` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    if not inodes:
        return []
    sockets = {f"socket:[{inode}]" for inode in inodes}
    holders = []
    for pid in _live_pids():
        with suppress(FileNotFoundError, PermissionError, ProcessLookupError):
            if any(os.readlink(fd) in sockets for fd in Path(f"/proc/{pid}/fd").iterdir()):
                holders.append(pid)
    return holders


def environment_has(pid: int, name: str, value: str) -> bool:
    """Whether the process started with `name=value` in its environment (False when we may not read it)."""
    try:
        return f"{name}={value}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return "?"
