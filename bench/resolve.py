"""Resolve benchmark: req/s, p50 and p99 of each way a code is answered, beside the hello-world ceiling.

    .venv/bin/python bench/resolve.py [--workers N] [--server granian|uvicorn] [--duration S] [--connections C]
                                      [--rounds R] [--phases ceiling,warm,...] [--budget-rps R] [--shared-redis]

Starts `tracecode serve` with N workers on a database of its own (bench/dataset.py: batches and package
codes seeded through the product's own add_batch and issue_labels), then, each after a short warm-up,
drives with the same load generator and settings:

    ceiling     GET /livez                      no I/O: what the ASGI server and Starlette cost
    warm        GET /api/v1/codes/{code}        one package code, in the worker's in-process tier: no store I/O
    gs1         GET /01/{gtin}/10/{lot}         the main batch's GS1 Digital Link URI: a 307 to its page (not
                                                followed); its rate is also shown against warm's of the same round
    page        GET /t/{code}, Accept text/html the same package code as the consumer's HTML page
    first-scan  GET /api/v1/codes/{code}        the market-day consumer: package codes of 100 batches, each asked
                                                once, after a warm-up on other package codes of the same batches;
                                                reads Redis's memory and keys before and after (bench/consumers.py)
    mixed       GET /api/v1/codes/{code}        half batch codes drawn by Zipf (s 1.1) over 1,000 batches, half the
                                                next never-scanned package code of a batch drawn the same way
    cold        GET /api/v1/codes/{batch code}  (only when asked: seeding takes ~5 ms a batch) batches nobody
                                                asked before, each once: a batch document built from Postgres
  on a second server, in-process tier off (TRACECODE_LOCAL_CACHE=0):
    redis       GET /api/v1/codes/{hot code}    1,000 hot package codes, all in Redis: one round trip per request
  on a third, tier off and REDIS_URL on a port where nothing listens (Redis down, as the service sees it):
    postgres    GET /api/v1/codes/{hot code}    the same codes: one Postgres query per request
  on a fourth, fresh (its limit on bad lookups has seen nothing):
    malformed   GET /api/v1/codes/{bad check}   nothing but a wrong check digit: refused before any I/O, 400
                                                for the first 30 per worker (in the warm-up), then 429
  and, only when asked, with no server, on a database of its own (bench/sizes.py):
    sizes       Postgres bytes per issued package code (1,000 labels requests of 1,000 codes, the database's
                size around them after a CHECKPOINT), and one labels request of 10,000,000 codes timed

The phases that ask fresh codes (first-scan, mixed, cold) walk a list made before the run, warm-up
first. First-scan and mixed are seeded for --budget-rps requests a second over every round and its
warm-up (a 10 s run at the 30,000 req/s ceiling needs 300,000 codes), cold for --cold-batches; no code
is asked twice unless a phase outran its seed (then the table says "codes reused!").

The phases run in rounds (all of them per round, on freshly started servers), so that a noisy
neighbour hurts every phase alike; each phase shows its median round, and its ratio to the
ceiling of the same round's first server. Store I/O is counted, not assumed: the benchmark runs
a redis-server of its own (unless --shared-redis), so that INFO commandstats counts the service's
commands only, and reads pg_stat_database of its own database; the phases that claim no store
I/O per request (warm, malformed) are preceded by an idle interval of the same length,
which shows the service's own background work. Prints the tables, the ratios, the store sizes and
where the CPU went; the JSON goes to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from consumers import FIRST_SCAN_BATCHES, MixedDraws, first_scan_codes, first_scan_label_runs
from dataset import Dataset, bench_dataset
from loadgen import LoadGenerator, pick_generator
from phases import (
    Measurement,
    Phase,
    Runner,
    ceiling_phase,
    check_answers,
    cold_phase,
    first_scan_phase,
    gs1_phase,
    malformed_phase,
    median_measurement,
    mixed_phase,
    page_phase,
    postgres_phase,
    prime,
    redis_phase,
    warm_phase,
)
from report import (
    OUT_DIR,
    accounting_table,
    cpu_per_request_table,
    describe_machine,
    medians,
    per_request_text,
    spread,
    statuses_text,
    store_commands_lines,
    store_io_table,
    store_sizes_lines,
    table,
    write_json,
)
from serverproc import ServerProcess, get_status
from sizes import SizeStep, measure_postgres_sizes
from stores import PG_REPORT_LAG_S, DegradedServerProcess, PrivateRedis, StoreProbe, unreachable_redis_url

DEFAULT_CONNECTIONS = 64
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 2.0
DEFAULT_ROUNDS = 3
BUDGET_RPS = 30_000  # the ceiling on the 2-core machine: fresh codes are seeded for a phase this fast
COLD_BUDGET_RPS = 1_500  # ... and batches for the cold phase: 470 req/s measured on ranges, ~3,000 before (PROFILE.md)
WARMUP_MARGIN = 2.0  # after the first round, a warm-up gets this many times what the last run's rate needs
FRESH_SLACK_PER_CONNECTION = 5  # codes per connection a round may use beyond its rate: warm-up floor and in flight
WARM_AIM = 0.9  # a warm resolve at about 0.9 of the ceiling or better (issue 6 asked 0.8)
WARM_P99_AIM_MS = 5.0  # issue 6: with p99 at most this at 64 connections
FIRST_SCAN_AIM = 0.6  # the market-day consumer: a package code's first scan at 0.6 of the ceiling or better
FIRST_SCAN_P99_AIM_MS = 10.0  # ... with p99 at most this
MIXED_AIM = 0.8  # batch codes and first scans of package codes, half and half
GS1_AIM = 0.8  # issue 13: a warm Digital Link 307 at 0.8 of the warm resolve's rate in the same round, or better
REDIS_AIM_RPS = 15_000  # issue 6: the Redis-only path (in-process tier off)
POSTGRES_AIM_RPS = 7_000  # issue 6: the Postgres-only path
HOT_CODES = 1_000  # package codes of the redis and postgres phases, of the main batch beside the warm code
PHASES = (
    "ceiling", "warm", "gs1", "page", "malformed", "first-scan", "mixed", "cold", "redis", "postgres", "sizes",
)  # fmt: skip
DEFAULT_PHASES = tuple(name for name in PHASES if name not in ("cold", "sizes"))  # those two take a while
LOAD_PHASES = tuple(name for name in PHASES if name != "sizes")  # the ones run against a server
FRESH_PHASES = ("first-scan", "mixed", "cold")  # those that ask each of their codes once
_SEED_FLAGS = {"first-scan": "--budget-rps or --codes", "mixed": "--budget-rps", "cold": "--cold-batches"}


@dataclass(frozen=True, slots=True)
class Options:
    server: str
    workers: int
    connections: int
    duration_s: float
    warmup_s: float
    rounds: int
    generator: str
    json_path: Path | None
    phases: tuple[str, ...] = DEFAULT_PHASES
    shared_redis: bool = False
    budget_rps: float = BUDGET_RPS
    codes: int | None = None  # package codes of the first-scan phase; None: fresh_budget(budget_rps)
    cold_batches: int | None = None  # batches of the cold phase; None: fresh_budget(COLD_BUDGET_RPS)

    @property
    def load_phases(self) -> tuple[str, ...]:
        return tuple(name for name in self.phases if name in LOAD_PHASES)

    def fresh_budget(self, rps: float) -> int:
        """Fresh codes a phase may use over every round when it answers `rps` requests a second: each round's
        warm-up (the first at `rps`, later ones WARMUP_MARGIN times the rate measured), its measured run, and
        FRESH_SLACK_PER_CONNECTION per connection."""
        per_round = rps * (self.duration_s + WARMUP_MARGIN * self.warmup_s)
        return self.rounds * (math.ceil(per_round) + FRESH_SLACK_PER_CONNECTION * self.connections)

    @property
    def first_scan_codes(self) -> int:
        return self.codes if self.codes is not None else self.fresh_budget(self.budget_rps)

    @property
    def mixed_requests(self) -> int:
        return self.fresh_budget(self.budget_rps)

    @property
    def cold_batch_count(self) -> int:
        return self.cold_batches if self.cold_batches is not None else self.fresh_budget(COLD_BUDGET_RPS)


def _parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="resolve benchmark: each way a code is answered beside the ceiling")
    parser.add_argument("--server", choices=("granian", "uvicorn"), default="granian")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="seconds of warm-up before each phase")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds of all phases; medians shown")
    parser.add_argument(
        "--budget-rps", type=float, default=BUDGET_RPS,
        help="the fastest a phase of fresh codes may go: first-scan and mixed get codes for this many requests a "
        "second over every round and warm-up",
    )  # fmt: skip
    parser.add_argument(
        "--codes", type=int, default=None, help="package codes seeded for the first-scan phase (default: its budget)"
    )
    parser.add_argument(
        "--cold-batches", type=int, default=None,
        help=f"batches seeded for the cold phase (default: its budget at {COLD_BUDGET_RPS:,} req/s)",
    )  # fmt: skip
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", type=Path, default=None, help="results file (default bench/out/resolve-*.json)")
    parser.add_argument("--no-json", action="store_true", help="write no results file")
    parser.add_argument(
        "--phases", default=",".join(DEFAULT_PHASES),
        help=f"comma-separated phases to run (ceiling runs whenever another load phase does): {PHASES}",
    )  # fmt: skip
    parser.add_argument(
        "--shared-redis", action="store_true",
        help="use REDIS_URL's server instead of a redis-server of the benchmark's own (its command counts then "
        "include every other client of that server)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.phases.split(",") if name.strip()}
    if chosen - set(PHASES):
        parser.error(f"unknown phases: {sorted(chosen - set(PHASES))}; choose from {PHASES}")
    if chosen & set(LOAD_PHASES):
        chosen.add("ceiling")
    if args.workers < 1 or args.connections < 1 or args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--workers, --connections, --rounds and --duration must be positive, --warmup not negative")
    if args.budget_rps <= 0:
        parser.error("--budget-rps must be positive")
    if args.codes is not None and args.codes < FIRST_SCAN_BATCHES:
        parser.error(f"--codes must be at least {FIRST_SCAN_BATCHES} (one for each first-scan batch)")
    if args.cold_batches is not None and args.cold_batches < 1:
        parser.error("--cold-batches must be positive")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = None if args.no_json else (args.json or OUT_DIR / f"resolve-{stamp}.json")
    return Options(
        args.server, args.workers, args.connections, args.duration, args.warmup, args.rounds, args.generator,
        json_path, tuple(name for name in PHASES if name in chosen), args.shared_redis, args.budget_rps, args.codes,
        args.cold_batches,
    )  # fmt: skip


def server_env(data: Dataset) -> dict[str, str]:
    """Our environment with the benchmark's database, Redis database and secret."""
    env = dict(os.environ)
    env.update(DATABASE_URL=data.database_url, REDIS_URL=data.redis_url, TRACECODE_SECRET=data.secret)
    return env


class FreshCodes:
    """Hands out codes never asked before, in order: a warm-up slice, then all the rest for the measured run."""

    def __init__(self, codes: list[str], first_warmup: int) -> None:
        self._codes = codes
        self._cursor = 0
        self._warmup_count = first_warmup
        self._warmup_taken = 0  # by the last next_run()

    def __repr__(self) -> str:
        return f"FreshCodes(used={self._cursor}, left={len(self._codes) - self._cursor})"

    @property
    def last(self) -> str:
        """The code the list ends with: a phase reaches it only when it ran out."""
        return self._codes[-1]

    def next_run(self) -> tuple[list[str], list[str]]:
        """(warm-up codes, measured codes); the warm-up takes at most half of what is left, so that a run that
        outgrew the seed still measures (and says that it asked codes again) rather than asking nothing."""
        left = len(self._codes) - self._cursor
        if left < 2:
            raise RuntimeError(f"{self!r}: no fresh codes left; seed more (--budget-rps, --codes, --cold-batches)")
        self._warmup_taken = min(self._warmup_count, left // 2)
        split = self._cursor + self._warmup_taken
        return self._codes[self._cursor : split], self._codes[split:]

    def used(self, measurement: Measurement, connections: int, warmup_s: float) -> None:
        """Move past the codes `measurement` asked: answered, failed, and at most one in flight per connection."""
        load = measurement.load
        asked = self._warmup_taken + load.requests + load.errors + connections
        self._cursor = min(len(self._codes), self._cursor + asked)
        self._warmup_count = max(connections * 4, int(load.rps * warmup_s * WARMUP_MARGIN))


def _first_warmup(options: Options, rps: float) -> int:
    """Warm-up codes of a fresh phase's first round, before its rate is known: enough for `rps`."""
    return max(options.connections * 4, math.ceil(rps * options.warmup_s))


def _admin_url(database_url: str) -> str:
    """The same server's `postgres` database: the probe reads the benchmark database's counters from there."""
    return urlunsplit(urlsplit(database_url)._replace(path="/postgres"))


@contextlib.asynccontextmanager
async def _redis_for_bench(shared: bool) -> AsyncIterator[PrivateRedis | None]:
    """A redis-server of our own, made the one bench_dataset finds (through REDIS_URL), unless `shared`."""
    private = None if shared else PrivateRedis.find()
    if private is None:
        if not shared:
            print("redis-server is not on PATH: using REDIS_URL's server, whose command counts include other clients")
        yield None
        return
    saved = os.environ.get("REDIS_URL")
    async with private:
        os.environ["REDIS_URL"] = private.url
        try:
            yield private
        finally:
            if saved is None:
                os.environ.pop("REDIS_URL", None)
            else:
                os.environ["REDIS_URL"] = saved


@dataclass(frozen=True, slots=True)
class Seeding:
    """What the chosen phases need seeded: package codes of each group's batches (bench_dataset's `groups`), and
    the mixed phase's draws, made before the seed so that each batch gets the package codes its draws ask."""

    groups: Mapping[str, list[int]]
    mixed: MixedDraws | None

    @classmethod
    def plan(cls, options: Options) -> Seeding:
        groups: dict[str, list[int]] = {}
        mixed = None
        if "first-scan" in options.phases:
            groups["first-scan"] = first_scan_label_runs(options.first_scan_codes)
        if "mixed" in options.phases:
            mixed = MixedDraws.make(options.mixed_requests)
            groups["mixed"] = mixed.label_runs()
        if "cold" in options.phases:
            groups["cold"] = [0] * options.cold_batch_count
        return cls(groups, mixed)

    def describe(self) -> str:
        parts = [f"main batch: {1 + HOT_CODES:,} package codes"]
        for name, runs in self.groups.items():
            part = f"{name}: {len(runs):,} batches, {sum(runs):,} package codes"
            if name == "mixed" and self.mixed is not None:
                part += f" for {len(self.mixed):,} requests"
            parts.append(part)
        return "; ".join(parts)

    def fresh_codes(self, data: Dataset, options: Options) -> dict[str, FreshCodes]:
        """The codes each fresh phase walks, in the order it asks them."""
        fresh = {}
        if "first-scan" in data.groups:
            codes = first_scan_codes(data.groups["first-scan"])
            fresh["first-scan"] = FreshCodes(codes, _first_warmup(options, options.budget_rps))
        if "mixed" in data.groups and self.mixed is not None:
            codes = self.mixed.codes(data.groups["mixed"])
            fresh["mixed"] = FreshCodes(codes, _first_warmup(options, options.budget_rps))
        if "cold" in data.groups:
            codes = [batch.trace_code for batch in data.groups["cold"]]
            fresh["cold"] = FreshCodes(codes, _first_warmup(options, COLD_BUDGET_RPS))
        return fresh


FreshPhase = Callable[[Sequence[str], Sequence[str]], Phase]  # (measured codes, warm-up codes) -> the phase
_FRESH_PHASE_OF: dict[str, FreshPhase] = {"first-scan": first_scan_phase, "mixed": mixed_phase, "cold": cold_phase}


class Round:
    """One round: the phases of `options`, each on the server it needs, measured by `runner`."""

    def __init__(
        self,
        options: Options,
        runner: Runner,
        data: Dataset,
        hot_codes: list[str],
        fresh: Mapping[str, FreshCodes],
        number: int,
    ) -> None:
        self.options = options
        self.runner = runner
        self.data = data
        self.hot_codes = hot_codes
        self.fresh = fresh
        self.number = number
        self.log_dir = OUT_DIR

    def __repr__(self) -> str:
        return f"Round({self.number}, phases={self.options.phases})"

    def _wanted(self, *names: str) -> bool:
        return any(name in self.options.phases for name in names)

    def _server(self, env: dict[str, str], name: str, *, is_degraded: bool = False) -> ServerProcess:
        kind = DegradedServerProcess if is_degraded else ServerProcess
        log_path = self.log_dir / f"server-{self.options.server}-{self.options.workers}w-{name}.log"
        return kind(server=self.options.server, workers=self.options.workers, env=env, log_path=log_path)

    async def _measure(self, phase: Phase, server: ServerProcess, by_phase: dict[str, list[Measurement]]) -> None:
        print(f"  round {self.number}/{self.options.rounds}: {phase.name}", flush=True)
        by_phase[phase.name].append(await self.runner.measure(phase, server.url, server.group))

    async def _measure_fresh(self, name: str, server: ServerProcess, by_phase: dict[str, list[Measurement]]) -> None:
        """A phase of fresh codes: the next of them, then move past what it asked."""
        codes = self.fresh[name]
        warmup, measured = codes.next_run()
        await self._measure(_FRESH_PHASE_OF[name](measured, warmup), server, by_phase)
        codes.used(by_phase[name][-1], self.options.connections, self.options.warmup_s)

    async def run(self, by_phase: dict[str, list[Measurement]]) -> None:
        data, options = self.data, self.options
        env = server_env(data)
        async with self._server(env, "main") as server:
            await check_answers(server.url, data, [codes.last for codes in self.fresh.values()])
            for phase in (ceiling_phase(), warm_phase(data), gs1_phase(data), page_phase(data)):
                if phase.name in options.phases:
                    await self._measure(phase, server, by_phase)
            for name in FRESH_PHASES:
                if name in options.phases:
                    await self._measure_fresh(name, server, by_phase)
        tier_off = env | {"TRACECODE_LOCAL_CACHE": "0"}
        if self._wanted("redis"):
            async with self._server(tier_off, "redis") as server:
                phase = redis_phase(self.hot_codes)
                await prime(server.url, phase.paths)  # every hot code in Redis before the warm-up
                await asyncio.sleep(PG_REPORT_LAG_S)  # the priming's Postgres loads are reported before the run
                await self._measure(phase, server, by_phase)
        if self._wanted("postgres"):
            redis_down = tier_off | {"REDIS_URL": unreachable_redis_url()}
            async with self._server(redis_down, "postgres", is_degraded=True) as server:
                phase = postgres_phase(self.hot_codes)
                status, body = await get_status(server.url, phase.paths[0], timeout_s=10.0)
                if status != 200 or b'"scans"' not in body:
                    raise RuntimeError(f"without Redis, GET {phase.paths[0]} answered {status} {body[:300]!r}")
                await self._measure(phase, server, by_phase)
        if self._wanted("malformed"):
            async with self._server(env, "malformed") as server:
                await self._measure(malformed_phase(data), server, by_phase)


@dataclass(slots=True)
class Results:
    """Every measurement of every load phase, by phase name in PHASES order (phases not run have none), and the
    store sizes when asked."""

    by_phase: dict[str, list[Measurement]]
    seeding: Seeding
    seeding_s: float = 0.0
    sizes: list[SizeStep] = field(default_factory=list)


async def _run_rounds(
    options: Options, generator: LoadGenerator, results: Results, private: PrivateRedis | None
) -> None:
    """Seed a database, then run the rounds of the load phases on it.

    Each round starts its servers afresh: the rounds are independent samples, and a limit on bad lookups
    that tripped is gone.
    """
    started = time.monotonic()
    async with bench_dataset(1 + HOT_CODES, groups=results.seeding.groups) as data:
        results.seeding_s = time.monotonic() - started
        print(f"  seeded in {results.seeding_s:.1f} s", flush=True)
        redis = aioredis.Redis.from_url(data.redis_url)
        admin = await asyncpg.connect(_admin_url(data.database_url))
        probe = StoreProbe(redis, admin, data.database_name, is_private_redis=private is not None)
        runner = Runner(
            generator, redis, data.database_name, options.connections, options.duration_s, options.warmup_s,
            probe=probe, redis_pid=private.pid if private else None,
        )  # fmt: skip
        fresh = results.seeding.fresh_codes(data, options)
        try:
            for number in range(1, options.rounds + 1):
                await Round(options, runner, data, data.hot_codes[:HOT_CODES], fresh, number).run(results.by_phase)
        finally:
            await admin.close()
            await redis.aclose()


async def run(options: Options, generator: LoadGenerator) -> Results:
    """The load phases' rounds on a seeded database, then the store sizes on a database of their own (if asked)."""
    seeding = Seeding.plan(options)
    results = Results({name: [] for name in options.load_phases}, seeding)
    async with _redis_for_bench(options.shared_redis) as private:
        if options.load_phases:
            print(f"seeding a database of its own: {seeding.describe()} ...", flush=True)
            await _run_rounds(options, generator, results, private)
        if "sizes" in options.phases:
            print("sizes: labels requests into a database of its own ...", flush=True)
            results.sizes = await measure_postgres_sizes()
    return results


def results_table(by_phase: dict[str, list[Measurement]]) -> str:
    """Median round of each phase: throughput and latency against the ceiling, the store I/O a request costs,
    the answers that were not 2xx, and the CPU a request costs (server, Postgres, Redis)."""
    ceiling = median_measurement(by_phase["ceiling"])
    rows = []
    for name, runs in by_phase.items():
        if not runs:
            continue
        m = median_measurement(runs)
        load = m.load
        errors = f"{load.errors:,}" + (" (codes reused!)" if any(x.is_reused for x in runs) else "")
        ratio = load.rps / ceiling.load.rps if ceiling.load.rps else 0.0
        cpu_ratio = ceiling.service_us_per_request / m.service_us_per_request if m.service_us_per_request else 0.0
        net = m.net_store
        redis_per = per_request_text(net.redis_total, load.requests) if net is not None else "-"
        postgres_per = per_request_text(net.postgres_xacts, load.requests) if net is not None else "-"
        rows.append(
            [
                name, f"{load.rps:,.0f}", spread(runs), f"{ratio:.2f}", f"{load.p50_ms:.2f}", f"{load.p99_ms:.2f}",
                redis_per, postgres_per, statuses_text(load.non_2xx), errors,
                f"{m.service_us_per_request:.0f}", f"{cpu_ratio:.2f}",
            ]
        )  # fmt: skip
    headers = ["phase", "req/s", "range of rounds", "x ceiling", "p50 ms", "p99 ms", "redis cmds/req"]
    headers += ["pg xacts/req", "non-2xx answers", "errors", "cpu us/req", "x ceiling by cpu"]
    return table(headers, rows)


def _ratio_verdict(name: str, ratio: float, aim: float) -> str:
    verdict = "meets" if ratio >= aim else "is below"
    return f"{name} / ceiling = {ratio:.2f} ({verdict} the aim of {aim})"


def _p99_verdict(name: str, m: Measurement, aim_ms: float) -> str:
    verdict = "meets" if m.load.p99_ms <= aim_ms else "is above"
    return f"{name} p99 = {m.load.p99_ms:.1f} ms ({verdict} the aim of {aim_ms:.0f} ms)"


def gs1_to_warm(by_phase: dict[str, list[Measurement]]) -> list[float]:
    """Each round's gs1 rate over its warm rate (both run on the round's first server, one after the other)."""
    return [
        gs1.load.rps / warm.load.rps if warm.load.rps else 0.0
        for gs1, warm in zip(by_phase.get("gs1", []), by_phase.get("warm", []), strict=False)
    ]


def _gs1_verdict(by_phase: dict[str, list[Measurement]]) -> str:
    per_round = gs1_to_warm(by_phase)
    ratio = sorted(per_round)[(len(per_round) - 1) // 2]
    verdict = "meets" if ratio >= GS1_AIM else "is below"
    rounds = ", ".join(f"{r:.2f}" for r in per_round)
    return f"gs1 / warm of the same round = {ratio:.2f}, median of rounds ({rounds}) ({verdict} the aim of {GS1_AIM})"


def _verdicts(by_phase: dict[str, list[Measurement]], ratios: dict[str, float]) -> list[str]:
    """One line per aim that this run measured."""
    lines = []
    if "warm" in ratios:
        lines.append(_ratio_verdict("warm", ratios["warm"], WARM_AIM))
        lines.append(_p99_verdict("warm", median_measurement(by_phase["warm"]), WARM_P99_AIM_MS))
    if "gs1" in ratios and "warm" in ratios:
        lines.append(_gs1_verdict(by_phase))
    if "first-scan" in ratios:
        lines.append(_ratio_verdict("first-scan", ratios["first-scan"], FIRST_SCAN_AIM))
        lines.append(_p99_verdict("first-scan", median_measurement(by_phase["first-scan"]), FIRST_SCAN_P99_AIM_MS))
    if "mixed" in ratios:
        lines.append(_ratio_verdict("mixed", ratios["mixed"], MIXED_AIM))
    for name, aim in (("redis", REDIS_AIM_RPS), ("postgres", POSTGRES_AIM_RPS)):
        if name in ratios:
            rps = median_measurement(by_phase[name]).load.rps
            verdict = "meets" if rps >= aim else "is below"
            lines.append(f"{name}-only: {rps:,.0f} req/s = {ratios[name]:.2f} x ceiling ({verdict} the {aim:,} aim)")
    for name in ("malformed",):
        if name not in ratios:
            continue
        m = median_measurement(by_phase[name])
        net = m.net_store
        io = (
            f"{net.redis_total:,} Redis commands and {net.postgres_xacts:,} Postgres transactions beyond the idle "
            f"interval over {m.load.requests:,} requests"
            if net is not None
            else "store I/O not counted"
        )
        lines.append(f"{name} / ceiling = {ratios[name]:.2f}; {io}; answers {statuses_text(m.load.statuses)}")
    others = [f"{name} / ceiling = {ratios[name]:.2f}" for name in ("gs1", "page", "cold") if name in ratios]
    if others:
        lines.append("; ".join(others))
    return lines


def _print_load_report(
    by_phase: dict[str, list[Measurement]], ratios: dict[str, float], *, private_redis: bool
) -> None:
    labelled = medians(by_phase)
    print()
    print(results_table(by_phase))
    print()
    for line in _verdicts(by_phase, ratios):
        print(line)
    print("(redis cmds/req and pg xacts/req: the service's store I/O per answer, less that of an idle interval of")
    print(" the same length where one was measured (warm, malformed); cpu us/req: CPU of the server, its")
    print(" Postgres backends and Redis per answer; 'x ceiling by cpu' compares those, and is steadier than req/s")
    print(" while other work shares the machine)")
    print()
    where = "the benchmark's own redis-server" if private_redis else "a SHARED Redis: counts include other clients"
    print(f"Store I/O of the service in each median run ({where}; Postgres: pg_stat_database of its database):")
    print(store_io_table(labelled))
    print("Redis commands by name (commands run inside scripts are counted too):")
    for line in store_commands_lines(labelled):
        print(line)
    print()
    print("CPU per answer in microseconds, by process (what limits each run), and the cores kept busy:")
    print(cpu_per_request_table(labelled))
    print()
    print("CPU during each median run, in cores kept busy ('other': the rest of the machine), server CPU per")
    print("request, and Redis hits, misses and keys added:")
    print(accounting_table(labelled))
    for name in FRESH_PHASES:
        if any(m.is_reused for m in by_phase.get(name, [])):
            print(f"\nWARNING: the {name} phase ran out of fresh codes and asked some twice: raise {_SEED_FLAGS[name]}")


def report(options: Options, generator: LoadGenerator, results: Results, *, private_redis: bool) -> dict[str, Any]:
    """Print the tables and return the JSON form of the results."""
    by_phase = results.by_phase
    ratios: dict[str, float] = {}
    if by_phase.get("ceiling"):
        ceiling = median_measurement(by_phase["ceiling"]).load.rps
        ratios = {
            name: median_measurement(runs).load.rps / ceiling if ceiling else 0.0
            for name, runs in by_phase.items()
            if runs
        }
        _print_load_report(by_phase, ratios, private_redis=private_redis)
    first_scan = median_measurement(by_phase["first-scan"]) if by_phase.get("first-scan") else None
    size_lines = store_sizes_lines(results.sizes, first_scan, options.connections)
    if size_lines:
        where = "" if private_redis else " (Redis: a SHARED server, its memory includes other clients' keys)"
        print(f"\nStore sizes{where}:")
        for line in size_lines:
            print(line)
    labelled = medians(by_phase)
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "cores": os.cpu_count(),
        "server": options.server,
        "workers": options.workers,
        "generator": generator.name,
        "connections": options.connections,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "rounds": options.rounds,
        "budget_rps": options.budget_rps,
        "seeded": {
            name: {"batches": len(runs), "package_codes": sum(runs)} for name, runs in results.seeding.groups.items()
        },  # fmt: skip
        "seeding_s": round(results.seeding_s, 1),
        "hot_codes": HOT_CODES,
        "redis": "private" if private_redis else "shared",
        "ratios_to_ceiling": {name: round(ratio, 3) for name, ratio in ratios.items()},
        "gs1_to_warm_by_round": [round(ratio, 3) for ratio in gs1_to_warm(by_phase)],
        "median": {name: m.to_json() for name, m in labelled},
        "rounds_measured": {name: [m.to_json() for m in runs] for name, runs in by_phase.items()},
        "postgres_sizes": [step.to_json() for step in results.sizes],
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = _parse(argv)
    generator = pick_generator(options.generator)
    print(describe_machine())
    print(
        f"server: {options.server}, {options.workers} worker(s) | load: {generator.name}, {options.connections} "
        f"connections, {options.duration_s:g}s per phase after {options.warmup_s:g}s warm-up, {options.rounds} round(s)"
        f" | phases: {','.join(options.phases)}"
    )
    try:
        results = asyncio.run(run(options, generator))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    private_redis = not options.shared_redis and PrivateRedis.find() is not None
    result = report(options, generator, results, private_redis=private_redis)
    if options.json_path is not None:
        write_json(options.json_path, result)
        print(f"\nresults: {options.json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
