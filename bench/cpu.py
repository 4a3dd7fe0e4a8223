"""CPU time of a process tree from /proc, for the HTTP benchmarks.

Summing the CPU of the processes whose command line matches a pattern goes negative when one of them
ends between two readings (its time leaves the sum: bench/assign.py printed app_cpu_ms_view −5.25 ms)
and counts whatever else runs on the machine under the same name. This reads one tree instead, the
server's: every live process under the root with its own user and system time plus the time of the
children it has reaped (cutime, cstime), so a worker that exits keeps counting in its parent.
Descendants are read before their parents: a child reaped between the two reads is counted twice
(never lost), so the figure never goes down.
"""
from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _parents() -> dict[int, int]:
    out = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat(int(name))
        if fields is not None:
            out[int(name)] = int(fields[1])
    return out


def tree(root: int) -> list[int]:
    """The root and its live descendants, deepest first."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    levels, frontier = [], [root]
    while frontier:
        levels.append(frontier)
        frontier = [c for p in frontier for c in children.get(p, [])]
    return [pid for level in reversed(levels) for pid in level]


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the tree under `root`, reaped children included (module docstring)."""
    ticks = 0
    for pid in tree(root):
        fields = _stat(pid)
        if fields is not None:  # (gone meanwhile: its time is in its parent's, read after it)
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / TICK


def postmaster(pattern: str = "postgres: ") -> int | None:
    """The PostgreSQL server's main process on this machine (the parent of its backends), if any."""
    for pid, parent in _parents().items():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if command.startswith(pattern):
            return parent
    return None
