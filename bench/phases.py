"""A phase is one kind of request under load: warmed up, then measured with CPU and store accounting.

`measure()` runs the warm-up paths for a short while (connections opened, pools filled, code
paths hot), then the measured paths, and reads around the measured run where the CPU went (the
server's process group, the load generator, Postgres, Redis, anything else) and what the
service asked Redis (hits, misses, keys added), so that a cold phase can show that it was cold
and a malformed phase that it touched nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from cputime import CpuSnapshot, snapshot
from dataset import PRODUCT_NAME, Dataset
from loadgen import LoadGenerator, LoadResult
from serverproc import get_status


@dataclass(frozen=True, slots=True)
class Phase:
    """`paths` are asked in order in the measured run, `warmup_paths` before it; answers should be in `expect`."""

    name: str
    paths: Sequence[str]
    expect: tuple[int, ...] = (200,)
    accept: str = ""
    warmup_paths: Sequence[str] | None = None  # None: the same as `paths`
    is_unique: bool = False  # each path is meant to be asked once (a cold phase): say so when one is asked again


@dataclass(frozen=True, slots=True)
class RedisCounters:
    hits: int
    misses: int
    commands: int
    keys: int

    def __sub__(self, other: RedisCounters) -> RedisCounters:
        return RedisCounters(
            self.hits - other.hits, self.misses - other.misses, self.commands - other.commands, self.keys - other.keys
        )


async def redis_counters(client: aioredis.Redis) -> RedisCounters:
    """Server-wide hit, miss and command counters, and the key count of the client's database."""
    stats: dict[str, Any] = await client.info("stats")
    keys: int = await client.dbsize()
    return RedisCounters(
        int(stats["keyspace_hits"]), int(stats["keyspace_misses"]), int(stats["total_commands_processed"]), keys
    )


@dataclass(frozen=True, slots=True)
class Measurement:
    phase: str
    is_unique: bool
    load: LoadResult
    cpu: CpuSnapshot  # CPU seconds used during the measured run
    redis: RedisCounters  # changes during the measured run (commands include the 2 of the probe)

    def cores(self, seconds: float) -> float:
        """CPU seconds over the run as cores kept busy."""
        return seconds / self.load.duration_s if self.load.duration_s > 0 else 0.0

    @property
    def service_us_per_request(self) -> float:
        """CPU of the server, its Postgres backends and Redis per answer: what a request costs whatever the noise."""
        cpu = self.cpu
        return (cpu.group_s + cpu.postgres_s + cpu.redis_s) / self.load.requests * 1e6 if self.load.requests else 0.0

    @property
    def is_reused(self) -> bool:
        """Whether a path that was meant to be asked once was asked again."""
        return self.is_unique and self.load.wrapped > 0

    @property
    def other_cpu_s(self) -> float:
        cpu = self.cpu
        return max(0.0, cpu.machine_busy_s - cpu.group_s - cpu.children_s - cpu.postgres_s - cpu.redis_s)

    def to_json(self) -> dict[str, Any]:
        load = self.load
        return {
            "phase": self.phase,
            "rps": round(load.rps, 1),
            "requests": load.requests,
            "duration_s": round(load.duration_s, 3),
            "p50_ms": round(load.p50_ms, 3),
            "p99_ms": round(load.p99_ms, 3),
            "max_ms": round(load.max_ms, 3),
            "errors": load.errors,
            "unexpected_status": load.unexpected,
            "limited_429": load.limited,
            "socket_errors": load.socket_errors,
            "timeouts": load.timeouts,
            "paths_wrapped": load.wrapped,
            "service_cpu_us_per_request": round(self.service_us_per_request, 1),
            "cores": {
                "server": round(self.cores(self.cpu.group_s), 3),
                "generator": round(self.cores(self.cpu.children_s), 3),
                "postgres": round(self.cores(self.cpu.postgres_s), 3),
                "redis": round(self.cores(self.cpu.redis_s), 3),
                "other": round(self.cores(self.other_cpu_s), 3),
                "steal": round(self.cores(self.cpu.machine_steal_s), 3),
            },
            "redis": {
                "hits": self.redis.hits,
                "misses": self.redis.misses,
                "commands": self.redis.commands,
                "keys_added": self.redis.keys,
            },
        }


def write_paths(directory: Path, name: str, paths: Sequence[str]) -> Path:
    path = directory / f"{name}.paths"
    path.write_text("".join(p + "\n" for p in paths))
    return path


@dataclass(slots=True)
class Runner:
    """Runs phases against one server with one generator, the same settings for every phase."""

    generator: LoadGenerator
    redis: aioredis.Redis
    database: str  # whose Postgres backends count as the service's
    connections: int
    duration_s: float
    warmup_s: float

    async def measure(self, phase: Phase, url: str, group: int | None) -> Measurement:
        """Warm up, then measure `phase` against the server on `url` whose process group is `group`."""
        with tempfile.TemporaryDirectory(prefix="tracecode-bench-") as tmp:
            directory = Path(tmp)
            measured = write_paths(directory, "measured", phase.paths)
            warmup = write_paths(directory, "warmup", phase.warmup_paths) if phase.warmup_paths else measured
            if self.warmup_s > 0:
                await self.generator.run(
                    url, warmup, connections=self.connections, duration_s=self.warmup_s,
                    expect=phase.expect, accept=phase.accept,
                )  # fmt: skip
            redis_before = await redis_counters(self.redis)
            cpu_before = snapshot(group, self.database)
            load = await self.generator.run(
                url, measured, connections=self.connections, duration_s=self.duration_s,
                expect=phase.expect, accept=phase.accept,
            )  # fmt: skip
            cpu = snapshot(group, self.database) - cpu_before
            redis = await redis_counters(self.redis) - redis_before
        return Measurement(phase.name, phase.is_unique, load, cpu, redis)


def median_measurement(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median requests per second (an actual run, so its numbers belong together)."""
    ordered = sorted(runs, key=lambda m: m.load.rps)
    return ordered[(len(ordered) - 1) // 2]


def ceiling_phase() -> Phase:
    return Phase("ceiling", ["/livez"])


def warm_phase(data: Dataset) -> Phase:
    return Phase("warm", [f"/api/v1/codes/{data.warm_code}"])


def page_phase(data: Dataset) -> Phase:
    return Phase("page", [f"/t/{data.warm_code}"], accept="text/html")


def malformed_phase(data: Dataset) -> Phase:
    """A wrong check digit: 400 before any I/O, or 429 once the client's rate limit on bad lookups trips.

    Both are refusals without I/O. A limit that trips lasts its cooldown for the whole client network
    (all of 127.0.0.0/24 here), so run this phase last on a server (a restart clears the workers' limits).
    """
    return Phase("malformed", [f"/api/v1/codes/{data.malformed_code}"], expect=(400, 429))


def cold_phase(measured: Sequence[str], warmup: Sequence[str]) -> Phase:
    """Each of `measured` asked once (none of them resolved before), after a warm-up on other codes."""
    return Phase(
        "cold",
        [f"/api/v1/codes/{code}" for code in measured],
        warmup_paths=[f"/api/v1/codes/{code}" for code in warmup],
        is_unique=True,
    )


async def check_answers(url: str, data: Dataset) -> None:
    """Before any load: each phase's request answers what the phase expects, and a Postgres resolve works."""
    expectations = [
        ("/livez", 200, b"ok"),
        (f"/api/v1/codes/{data.batch_code}", 200, data.batch_code.encode()),
        (f"/api/v1/codes/{data.warm_code}", 200, data.warm_code.encode()),
        (f"/t/{data.warm_code}", 200, PRODUCT_NAME.encode()),
        (f"/api/v1/codes/{data.malformed_code}", 400, b"bad_check_digits"),
    ]
    for path, status, needle in expectations:
        got, body = await get_status(url, path)
        if got != status or needle not in body:
            raise RuntimeError(f"GET {path} answered {got} {body[:300]!r}; expected {status} with {needle!r}")
