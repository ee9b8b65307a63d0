"""Resolve benchmark: req/s, p50 and p99 of each way a code is answered, beside the hello-world ceiling.

    .venv/bin/python bench/resolve.py [--workers N] [--server granian|uvicorn] [--duration S] [--connections C]
                                      [--rounds R] [--phases ceiling,warm,...] [--shared-redis]

Starts `tracecode serve` with N workers on a database of its own (bench/dataset.py), then, each
after a short warm-up, drives with the same load generator and settings:

    ceiling    GET /livez                       no I/O: what the ASGI server and Starlette cost
    warm       GET /api/v1/codes/{code}         one code, in the worker's in-process tier: no store I/O
    page       GET /t/{code}, Accept text/html  the same code as the consumer's HTML page
    cold       GET /api/v1/codes/{code}         a new code every request: Redis miss, Postgres, Redis SET
  on a second server, in-process tier off (TRACECODE_LOCAL_CACHE=0):
    redis      GET /api/v1/codes/{hot code}     1,000 hot codes, all in Redis: one round trip per request
  on a third, tier off and REDIS_URL on a port where nothing listens (Redis down, as the service sees it):
    postgres   GET /api/v1/codes/{hot code}     the same codes: one Postgres query per request
  on a fourth, fresh (its limit on bad lookups has seen nothing):
    malformed  GET /api/v1/codes/{bad check}    nothing but a wrong check digit: refused before any I/O, 400
                                                for the first 30 per worker (in the warm-up), then 429

The phases run in rounds (all of them per round, on freshly started servers), so that a noisy
neighbour hurts every phase alike; each phase shows its median round, and its ratio to the
ceiling of the same round's first server. Store I/O is counted, not assumed: the benchmark runs
a redis-server of its own (unless --shared-redis), so that INFO commandstats counts the service's
commands only, and reads pg_stat_database of its own database; the phases that claim no store
I/O per request (warm, malformed) are preceded by an idle interval of the same length,
which shows the service's own background work. Prints the tables, the ratios and where the CPU
went; the JSON goes to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from dataset import Dataset, bench_dataset
from loadgen import LoadGenerator, pick_generator
from phases import (
    Measurement,
    Phase,
    Runner,
    ceiling_phase,
    check_answers,
    cold_phase,
    malformed_phase,
    median_measurement,
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
    table,
    write_json,
)
from serverproc import ServerProcess, get_status
from stores import PG_REPORT_LAG_S, DegradedServerProcess, PrivateRedis, StoreProbe, unreachable_redis_url

DEFAULT_CODES = 400_000
DEFAULT_CONNECTIONS = 64
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 2.0
DEFAULT_ROUNDS = 3
FIRST_COLD_WARMUP_CODES = 20_000  # before the cold rate is known: more than a 2 s warm-up gets through here
COLD_WARMUP_MARGIN = 2.0  # later warm-ups get this many times what the last cold run's rate needs
WARM_AIM = 0.8  # issue 6: a warm resolve at 0.8 of the ceiling or better
WARM_P99_AIM_MS = 5.0  # issue 6: with p99 at most this at 64 connections
REDIS_AIM_RPS = 15_000  # issue 6: the Redis-only path (in-process tier off)
POSTGRES_AIM_RPS = 7_000  # issue 6: the Postgres-only path
HOT_CODES = 1_000  # codes of the redis and postgres phases, kept apart from the cold phase's
PHASES = ("ceiling", "warm", "page", "malformed", "cold", "redis", "postgres")


@dataclass(frozen=True, slots=True)
class Options:
    server: str
    workers: int
    connections: int
    duration_s: float
    warmup_s: float
    rounds: int
    codes: int
    generator: str
    json_path: Path | None
    phases: tuple[str, ...] = PHASES
    shared_redis: bool = False


def _parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="resolve benchmark: warm, cold and malformed beside the ceiling")
    parser.add_argument("--server", choices=("granian", "uvicorn"), default="granian")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="seconds of warm-up before each phase")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds of all phases; medians shown")
    parser.add_argument("--codes", type=int, default=DEFAULT_CODES, help="package codes seeded for the cold phase")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", type=Path, default=None, help="results file (default bench/out/resolve-*.json)")
    parser.add_argument("--no-json", action="store_true", help="write no results file")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated phases to run (ceiling always runs): {PHASES}"
    )
    parser.add_argument(
        "--shared-redis", action="store_true",
        help="use REDIS_URL's server instead of a redis-server of the benchmark's own (its command counts then "
        "include every other client of that server)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    chosen = {name.strip() for name in args.phases.split(",") if name.strip()} | {"ceiling"}
    if chosen - set(PHASES):
        parser.error(f"unknown phases: {sorted(chosen - set(PHASES))}; choose from {PHASES}")
    if args.workers < 1 or args.connections < 1 or args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--workers, --connections, --rounds and --duration must be positive, --warmup not negative")
    if args.codes < 2 * FIRST_COLD_WARMUP_CODES:
        parser.error(f"--codes must be at least {2 * FIRST_COLD_WARMUP_CODES}")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = None if args.no_json else (args.json or OUT_DIR / f"resolve-{stamp}.json")
    return Options(
        args.server, args.workers, args.connections, args.duration, args.warmup, args.rounds, args.codes,
        args.generator, json_path, tuple(name for name in PHASES if name in chosen), args.shared_redis,
    )  # fmt: skip


def server_env(data: Dataset) -> dict[str, str]:
    """Our environment with the benchmark's database, Redis database and secret."""
    env = dict(os.environ)
    env.update(DATABASE_URL=data.database_url, REDIS_URL=data.redis_url, TRACECODE_SECRET=data.secret)
    return env


class ColdCodes:
    """Hands out codes never asked before: a warm-up slice, then all the rest for the measured run."""

    def __init__(self, codes: list[str]) -> None:
        self._codes = codes
        self._cursor = 0
        self._warmup_count = FIRST_COLD_WARMUP_CODES

    def __repr__(self) -> str:
        return f"ColdCodes(used={self._cursor}, left={len(self._codes) - self._cursor})"

    def next_run(self) -> tuple[list[str], list[str]]:
        """(warm-up codes, measured codes)"""
        split = self._cursor + self._warmup_count
        return self._codes[self._cursor : split], self._codes[split:]

    def used(self, measurement: Measurement, connections: int, warmup_s: float) -> None:
        """Move past the codes `measurement` asked: answered, failed, and at most one in flight per connection."""
        load = measurement.load
        self._cursor += self._warmup_count + load.requests + load.errors + connections
        self._warmup_count = max(connections * 4, int(load.rps * warmup_s * COLD_WARMUP_MARGIN))


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


class Round:
    """One round: the phases of `options`, each on the server it needs, measured by `runner`."""

    def __init__(
        self, options: Options, runner: Runner, data: Dataset, hot_codes: list[str], cold: ColdCodes, number: int
    ) -> None:
        self.options = options
        self.runner = runner
        self.data = data
        self.hot_codes = hot_codes
        self.cold = cold
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

    async def run(self, by_phase: dict[str, list[Measurement]]) -> None:
        data, options = self.data, self.options
        env = server_env(data)
        async with self._server(env, "main") as server:
            await check_answers(server.url, data)
            warmup_codes, measured_codes = self.cold.next_run()
            phases = [
                ceiling_phase(),
                warm_phase(data),
                page_phase(data),
                cold_phase(measured_codes, warmup_codes),
            ]
            for phase in phases:
                if phase.name in options.phases:
                    await self._measure(phase, server, by_phase)
            if "cold" in options.phases:
                self.cold.used(by_phase["cold"][-1], options.connections, options.warmup_s)
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


async def run(options: Options, generator: LoadGenerator) -> dict[str, list[Measurement]]:
    """Every measurement of every phase, by phase name in PHASES order (phases not run have none).

    Each round starts its servers afresh: the rounds are independent samples, and a limit on bad lookups
    that tripped is gone.
    """
    by_phase: dict[str, list[Measurement]] = {name: [] for name in options.phases}
    async with _redis_for_bench(options.shared_redis) as private, bench_dataset(options.codes) as data:
        redis = aioredis.Redis.from_url(data.redis_url)
        admin = await asyncpg.connect(_admin_url(data.database_url))
        probe = StoreProbe(redis, admin, data.database_name, is_private_redis=private is not None)
        runner = Runner(
            generator, redis, data.database_name, options.connections, options.duration_s, options.warmup_s,
            probe=probe, redis_pid=private.pid if private else None,
        )  # fmt: skip
        hot_codes = data.cold_codes[:HOT_CODES]
        cold = ColdCodes(data.cold_codes[HOT_CODES:])
        try:
            for number in range(1, options.rounds + 1):
                await Round(options, runner, data, hot_codes, cold, number).run(by_phase)
        finally:
            await admin.close()
            await redis.aclose()
    return by_phase


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


def _verdicts(by_phase: dict[str, list[Measurement]], ratios: dict[str, float]) -> list[str]:
    """One line per claim of issue 6 that this run measured."""
    lines = []
    if "warm" in ratios:
        verdict = "meets" if ratios["warm"] >= WARM_AIM else "is below"
        lines.append(f"warm / ceiling = {ratios['warm']:.2f} ({verdict} the aim of {WARM_AIM})")
        p99 = median_measurement(by_phase["warm"]).load.p99_ms
        verdict = "meets" if p99 <= WARM_P99_AIM_MS else "is above"
        lines.append(f"warm p99 = {p99:.1f} ms ({verdict} the aim of {WARM_P99_AIM_MS:.0f} ms)")
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
    others = [f"{name} / ceiling = {ratios[name]:.2f}" for name in ("page", "cold") if name in ratios]
    if others:
        lines.append("; ".join(others))
    return lines


def report(
    options: Options, generator: LoadGenerator, by_phase: dict[str, list[Measurement]], *, private_redis: bool
) -> dict[str, Any]:
    """Print the tables and return the JSON form of the results."""
    ceiling = median_measurement(by_phase["ceiling"]).load.rps
    ratios = {
        name: median_measurement(runs).load.rps / ceiling if ceiling else 0.0 for name, runs in by_phase.items() if runs
    }
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
    if any(m.is_reused for m in by_phase.get("cold", [])):
        print(
            f"\nWARNING: the cold phase ran out of fresh codes and asked some twice: raise --codes ({options.codes:,})"
        )
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
        "codes": options.codes,
        "hot_codes": HOT_CODES,
        "redis": "private" if private_redis else "shared",
        "ratios_to_ceiling": {name: round(ratio, 3) for name, ratio in ratios.items()},
        "median": {name: m.to_json() for name, m in labelled},
        "rounds_measured": {name: [m.to_json() for m in runs] for name, runs in by_phase.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = _parse(argv)
    generator = pick_generator(options.generator)
    print(describe_machine())
    print(
        f"server: {options.server}, {options.workers} worker(s) | load: {generator.name}, {options.connections} "
        f"connections, {options.duration_s:g}s per phase after {options.warmup_s:g}s warm-up, {options.rounds} round(s)"
    )
    print(f"seeding a database of its own with {options.codes:,} package codes ...", flush=True)
    try:
        by_phase = asyncio.run(run(options, generator))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    private_redis = not options.shared_redis and PrivateRedis.find() is not None
    result = report(options, generator, by_phase, private_redis=private_redis)
    if options.json_path is not None:
        write_json(options.json_path, result)
        print(f"\nresults: {options.json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
