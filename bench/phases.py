"""A phase is one kind of request under load: warmed up, then measured with CPU and store accounting.

`measure()` runs the warm-up paths for a short while (connections opened, pools filled, code
paths hot), then the measured paths, and reads around the measured run where the CPU went (the
server's process group, the load generator, Postgres, Redis, anything else) and what the
service asked Redis (hits, misses, keys added), so that a cold phase can show that it was cold.

With a store probe (bench/stores.py) it also counts the service's Redis commands by name and its
Postgres transactions during the run; a phase that claims no store I/O per request (`idle_first`)
is preceded by an idle interval of the same length, read the same way, which shows what the
service does on its own (scan counters synced 4 times a second, flushed every 2 s) so that the
rest can be put on the requests. A phase that `reads_memory` also
reads what Redis holds (bench/stores.py RedisMemory) after its warm-up and after its run, each time
once the service's scan sync has had MEMORY_SETTLE_S to add what came before.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from cputime import CpuSnapshot, snapshot
from dataset import PRODUCT_NAME, Dataset
from loadgen import LoadGenerator, LoadResult
from serverproc import get_answer, get_status
from stores import MEMORY_SETTLE_S, PG_REPORT_LAG_S, SETTLE_S, RedisGrowth, RedisMemory, StoreIO, StoreProbe

PRIME_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Phase:
    """`paths` are asked in order in the measured run, `warmup_paths` before it; answers should be in `expect`."""

    name: str
    paths: Sequence[str]
    expect: tuple[int, ...] = (200,)
    accept: str = ""
    warmup_paths: Sequence[str] | None = None  # None: the same as `paths`
    is_unique: bool = False  # the paths are meant to be walked once (fresh codes): say so when one is asked again
    idle_first: bool = False  # claims no store I/O per request: measure an idle interval of the same length first
    reads_memory: bool = False  # read Redis's memory and keys after the warm-up and after the run


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
    store: StoreIO | None = None  # the service's store I/O during the measured run (with a store probe)
    idle: StoreIO | None = None  # ... during an idle interval of the same length right before (idle_first phases)
    memory: RedisGrowth | None = None  # Redis after the warm-up and after the run (reads_memory phases)

    @property
    def net_store(self) -> StoreIO | None:
        """Store I/O of the run less that of the idle interval: what the requests themselves caused."""
        if self.store is None:
            return None
        return self.store - self.idle if self.idle is not None else self.store

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
            "statuses": {str(status): n for status, n in sorted(load.statuses.items())},
            "store_io": self.store.to_json() if self.store is not None else None,
            "store_io_idle": self.idle.to_json() if self.idle is not None else None,
            "redis_memory": self.memory.to_json() if self.memory is not None else None,
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
    probe: StoreProbe | None = None  # counts the service's store I/O when given
    redis_pid: int | None = None  # the benchmark's own redis-server, whose CPU alone counts as Redis's

    async def measure(self, phase: Phase, url: str, group: int | None) -> Measurement:
        """Warm up, then measure `phase` against the server on `url` whose process group is `group`."""
        probe = self.probe
        idle = None
        if probe is not None and phase.idle_first:
            idle = await probe.idle(self.duration_s)
        with tempfile.TemporaryDirectory(prefix="tracecode-bench-") as tmp:
            directory = Path(tmp)
            measured = write_paths(directory, "measured", phase.paths)
            warmup = write_paths(directory, "warmup", phase.warmup_paths) if phase.warmup_paths else measured
            if self.warmup_s > 0:
                await self.generator.run(
                    url, warmup, connections=self.connections, duration_s=self.warmup_s,
                    expect=phase.expect, accept=phase.accept,
                )  # fmt: skip
            memory_before = await self._settled_memory() if phase.reads_memory else None
            store_before = await probe.read() if probe is not None else None
            redis_before = await redis_counters(self.redis)
            cpu_before = snapshot(group, self.database, self.redis_pid)
            load = await self.generator.run(
                url, measured, connections=self.connections, duration_s=self.duration_s,
                expect=phase.expect, accept=phase.accept,
            )  # fmt: skip
            cpu = snapshot(group, self.database, self.redis_pid) - cpu_before
            redis = await redis_counters(self.redis) - redis_before
            store = None
            if probe is not None and store_before is not None:
                # All of the run's Postgres work: idle_first phases claim none per request, so wait for every report.
                store = await probe.read(settle_s=PG_REPORT_LAG_S if phase.idle_first else SETTLE_S) - store_before
            memory = RedisGrowth(memory_before, await self._settled_memory()) if memory_before is not None else None
        return Measurement(phase.name, phase.is_unique, load, cpu, redis, store, idle, memory)

    async def _settled_memory(self) -> RedisMemory:
        """Redis's memory and keys once the scans of the load that just stopped are in it."""
        await asyncio.sleep(MEMORY_SETTLE_S)
        return await RedisMemory.read(self.redis)


def median_measurement(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median requests per second (an actual run, so its numbers belong together)."""
    ordered = sorted(runs, key=lambda m: m.load.rps)
    return ordered[(len(ordered) - 1) // 2]


def ceiling_phase() -> Phase:
    return Phase("ceiling", ["/livez"])


def warm_phase(data: Dataset) -> Phase:
    """One package code over and over (a shopper scanning the same label again): this worker's in-process tier
    answers, no store I/O per request."""
    return Phase("warm", [f"/api/v1/codes/{data.warm_code}"], idle_first=True)


def redis_phase(hot_codes: Sequence[str]) -> Phase:
    """Hot codes, all in Redis, on a server whose in-process tier is off: one Redis round trip per request.

    Prime the codes into Redis first (`prime`): the warm-up is too short to load many codes from Postgres.
    """
    return Phase("redis", [f"/api/v1/codes/{code}" for code in hot_codes])


def postgres_phase(hot_codes: Sequence[str]) -> Phase:
    """The same hot codes on a server that cannot reach Redis and has no in-process tier: every request one
    Postgres query. Consecutive requests ask different codes, so a worker's single-flight seldom merges them."""
    return Phase("postgres", [f"/api/v1/codes/{code}" for code in hot_codes])


def page_phase(data: Dataset) -> Phase:
    return Phase("page", [f"/t/{data.warm_code}"], accept="text/html")


def gs1_phase(data: Dataset) -> Phase:
    """The main batch's GS1 Digital Link URI /01/{gtin}/10/{lot} over and over (a retail scanner reading the same
    lot's QR code): a 307 to the batch's page, not followed. Issue 13 asks for 0.8 of the warm resolve's rate;
    the idle interval first shows whether it costs store I/O per request."""
    return Phase("gs1", [data.digital_link], expect=(307,), idle_first=True)


def malformed_phase(data: Dataset) -> Phase:
    """Nothing but a wrong check digit, from one client network: refused before any I/O, with 400 (the parse)
    until the rate limit on bad lookups trips, then 429 (the limit) until its cooldown ends.

    The limit (resolver/scan/ratelimit.py) trips per worker once a network's bad lookups in its 60 s window are 30
    or more and at least half of its lookups: on a fresh server that is the 30th bad code; after other phases
    it is whenever the window's good lookups are outnumbered or the window rolls over, so the mix of 400 and
    429 depended on phase timing. Run this phase alone on a fresh server (the 429 lasts 60 s and covers the
    whole network, 127.0.0.0/24 here): the first 30 per worker (400) fall in the warm-up, the run is 429s.
    """
    return Phase("malformed", [f"/api/v1/codes/{data.malformed_code}"], expect=(400, 429), idle_first=True)


def _code_paths(codes: Sequence[str]) -> list[str]:
    return [f"/api/v1/codes/{code}" for code in codes]


def first_scan_phase(measured: Sequence[str], warmup: Sequence[str]) -> Phase:
    """The market-day consumer: package codes each scanned once, in the order given (bench/consumers.py), after
    a warm-up on other package codes of the same batches; reads what Redis keeps per scanned code."""
    return Phase(
        "first-scan", _code_paths(measured), warmup_paths=_code_paths(warmup), is_unique=True, reads_memory=True
    )


def mixed_phase(measured: Sequence[str], warmup: Sequence[str]) -> Phase:
    """Market-day consumers of many batches: batch codes drawn by popularity and package codes each scanned
    once, in the order given (bench/consumers.py), after a warm-up on the draws that come before."""
    return Phase("mixed", _code_paths(measured), warmup_paths=_code_paths(warmup), is_unique=True)


def cold_phase(measured: Sequence[str], warmup: Sequence[str]) -> Phase:
    """Batch codes of batches nobody scanned before, each asked once: every answer is a batch document built
    from Postgres (and stored there and in Redis); the warm-up asks other such batches."""
    return Phase("cold", _code_paths(measured), warmup_paths=_code_paths(warmup), is_unique=True)


async def prime(url: str, paths: Sequence[str]) -> None:
    """Ask each path once, a few at a time, so that its document is cached in Redis; RuntimeError unless 200."""
    gate = asyncio.Semaphore(PRIME_CONCURRENCY)

    async def ask(path: str) -> None:
        async with gate:
            status, body = await get_status(url, path, timeout_s=30.0)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status} {body[:300]!r} while priming")

    await asyncio.gather(*(ask(path) for path in paths))


async def check_answers(url: str, data: Dataset, codes: Sequence[str] = ()) -> None:
    """Before any load: each phase's request answers what the phase expects (a needle in its head or body), and a
    Postgres resolve works; each of `codes` (say, one that a phase's paths end with, which it never reaches)
    answers its document."""
    expectations = [
        ("/livez", 200, b"ok"),
        (f"/api/v1/codes/{data.batch_code}", 200, data.batch_code.encode()),
        (f"/api/v1/codes/{data.warm_code}", 200, data.warm_code.encode()),
        (f"/t/{data.warm_code}", 200, PRODUCT_NAME.encode()),
        (f"/api/v1/codes/{data.malformed_code}", 400, b"bad_check_digits"),
        (data.digital_link, 307, f"/t/{data.batch_code}".encode()),  # in its Location
        *((f"/api/v1/codes/{code}", 200, code.encode()) for code in codes),
    ]
    for path, status, needle in expectations:
        got, head, body = await get_answer(url, path)
        if got != status or (needle not in body and needle not in head):
            raise RuntimeError(f"GET {path} answered {got} {(head + body)[:600]!r}; expected {status} with {needle!r}")
