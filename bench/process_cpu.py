"""CPU time spent by processes and everything they started, read from /proc: what each part of the
stack cost over a measured window, as its own kernel counters say (no sampling profiler involved)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its waited-for children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), counting from state = 0.
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / _TICK


def tree_cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each named root process plus all its descendants now alive (a child that exited
    and was waited for is in its parent's counters)."""
    stats = {pid: s for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()) if (s := _stat(pid))}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    totals = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            if pid in stats:
                total += stats[pid][1]
                todo += children.get(pid, [])
        totals[name] = total
    return totals


class CpuMeter:
    """CPU seconds per named process tree between `start()` and `stop()`."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = {name: pid for name, pid in roots.items() if pid}
        self.before: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        self.before = tree_cpu_seconds(self.roots)

    def stop(self) -> dict[str, float]:
        after = tree_cpu_seconds(self.roots)
        self.spent = {name: after[name] - self.before.get(name, 0.0) for name in after}
        return self.spent
