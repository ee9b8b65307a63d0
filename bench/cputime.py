"""CPU time read from /proc: the whole machine, a process group, and processes by command name.

A benchmark on a small shared machine is only as good as its account of who used the cores: the
server, the load generator, Postgres, Redis, or something else entirely. On a system without
/proc every reading is zero and the report says so.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Fields of /proc/<pid>/stat after the ")" that closes the command name, counted from 0.
_PGRP_FIELD = 2
_UTIME_FIELD = 11
_STIME_FIELD = 12


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Cumulative CPU seconds at one moment; subtract two of them to get the use in between."""

    machine_busy_s: float
    machine_steal_s: float
    group_s: float  # the server's process group
    postgres_s: float  # the Postgres backends serving the benchmark's database
    redis_s: float  # the benchmark's own redis-server when it has one, else every redis-server on the machine
    children_s: float  # terminated, waited-for children of this process: the load generator runs

    def __sub__(self, other: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            self.machine_busy_s - other.machine_busy_s,
            self.machine_steal_s - other.machine_steal_s,
            self.group_s - other.group_s,
            self.postgres_s - other.postgres_s,
            self.redis_s - other.redis_s,
            self.children_s - other.children_s,
        )


def is_available() -> bool:
    return (_PROC / "stat").is_file()


def _machine() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all cores since boot."""
    try:
        first = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0, 0.0
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    idle = values[3] + values[4]
    steal = values[7] if len(values) > 7 else 0
    busy = sum(values[:8]) - idle - steal
    return busy / _TICKS_PER_S, steal / _TICKS_PER_S


def _processes() -> list[tuple[int, str, int, float]]:
    """(pid, command name, process group, CPU seconds) of every process we can read."""
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # the process went away, or is not ours to read
            continue
        open_, close = text.find("("), text.rfind(")")
        fields = text[close + 2 :].split()
        ticks = int(fields[_UTIME_FIELD]) + int(fields[_STIME_FIELD])
        out.append((int(entry.name), text[open_ + 1 : close], int(fields[_PGRP_FIELD]), ticks / _TICKS_PER_S))
    return out


def _is_backend_of(pid: int, database: str) -> bool:
    """Whether Postgres process `pid` serves `database`: its title reads "postgres: ... user database host ..."."""
    try:
        title = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return f" {database} ".encode() in title.replace(b"\0", b" ")


def _children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snapshot(group: int | None, database: str, redis_pid: int | None = None) -> CpuSnapshot:
    """CPU seconds so far: the machine, process group `group`, the Postgres backends of `database`, Redis, and
    our finished children. Other Postgres backends (someone else's tests on a shared machine) are not counted;
    with `redis_pid` (a redis-server of the benchmark's own) neither are other redis-servers."""
    busy, steal = _machine()
    group_s = postgres_s = redis_s = 0.0
    if is_available():
        for pid, name, pgrp, seconds in _processes():
            if group is not None and pgrp == group:
                group_s += seconds
            elif name.startswith("postgres") and _is_backend_of(pid, database):
                postgres_s += seconds
            elif name.startswith("redis-server") and redis_pid in (None, pid):
                redis_s += seconds
    return CpuSnapshot(busy, steal, group_s, postgres_s, redis_s, _children_s())
