"""CPU time through psutil: the whole machine, a process group, and processes by command name.

A benchmark on a small shared machine is only as good as its account of who used the cores: the
server, the load generator, Postgres, Redis, or something else entirely. Where psutil cannot read
the machine's CPU times every reading is zero and the report says so.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

import psutil


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


def _machine() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all cores since boot: user, nice, system, irq and softirq; guest time is already
    in user, and idle, iowait and steal are not busy."""
    try:
        times = psutil.cpu_times()
    except (OSError, RuntimeError):
        return 0.0, 0.0
    busy = times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    return busy, getattr(times, "steal", 0.0)


def _is_backend_of(process: psutil.Process, database: str) -> bool:
    """Whether Postgres process `process` serves `database`: its title reads "postgres: ... user database host ..."."""
    try:
        title = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return f" {database} " in title + " "


def _children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snapshot(group: int | None, database: str, redis_pid: int | None = None) -> CpuSnapshot:
    """CPU seconds so far: the machine, process group `group`, the Postgres backends of `database`, Redis, and
    our finished children. Other Postgres backends (someone else's tests on a shared machine) are not counted;
    with `redis_pid` (a redis-server of the benchmark's own) neither are other redis-servers."""
    busy, steal = _machine()
    group_s = postgres_s = redis_s = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        name = process.info["name"] or ""
        if times is None:  # the process went away, or is not ours to read
            continue
        seconds = times.user + times.system
        try:
            is_in_group = group is not None and os.getpgid(process.pid) == group
        except OSError:
            continue
        if is_in_group:
            group_s += seconds
        elif name.startswith("postgres") and _is_backend_of(process, database):
            postgres_s += seconds
        elif name.startswith("redis-server") and redis_pid in (None, process.pid):
            redis_s += seconds
    return CpuSnapshot(busy, steal, group_s, postgres_s, redis_s, _children_s())
