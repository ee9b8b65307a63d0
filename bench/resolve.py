"""Resolve benchmark: req/s, p50 and p99 of warm, cold and malformed resolves beside the hello-world ceiling.

    .venv/bin/python bench/resolve.py [--workers N] [--server granian|uvicorn] [--duration S] [--connections C]

Starts `tracecode serve` with N workers on a database of its own (bench/dataset.py), then, each
after a short warm-up, drives with the same load generator and settings:

    ceiling    GET /livez                       no I/O: what the ASGI server and Starlette cost
    warm       GET /api/v1/codes/{code}         one code, always in Redis
    page       GET /t/{code}, Accept text/html  the same code as the consumer's HTML page
    malformed  GET /api/v1/codes/{bad check}    400 (or 429, see below), answered before any I/O
    cold       GET /api/v1/codes/{code}         a new code every request: Redis miss, Postgres, Redis SET

The phases run in rounds (all five per round, each round on a freshly started server), so that a
noisy neighbour hurts every phase alike; each phase shows its median round. The malformed phase
runs last in a round: a client sending nothing but bad codes trips the service's rate limit on bad
lookups (429, for its whole network), which counts as a refusal without I/O like the 400 and is
shown apart. Prints a table, the ratios to the ceiling and where the CPU went; the JSON goes to
bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from dataset import Dataset, bench_dataset
from loadgen import LoadGenerator, pick_generator
from phases import (
    Measurement,
    Runner,
    ceiling_phase,
    check_answers,
    cold_phase,
    malformed_phase,
    median_measurement,
    page_phase,
    warm_phase,
)
from report import OUT_DIR, accounting_table, describe_machine, medians, spread, table, write_json
from serverproc import ServerProcess

DEFAULT_CODES = 400_000
DEFAULT_CONNECTIONS = 64
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 2.0
DEFAULT_ROUNDS = 3
FIRST_COLD_WARMUP_CODES = 20_000  # before the cold rate is known: more than a 2 s warm-up gets through here
COLD_WARMUP_MARGIN = 2.0  # later warm-ups get this many times what the last cold run's rate needs
WARM_AIM = 0.5  # the aim: a warm resolve at half the ceiling or better
PHASES = ("ceiling", "warm", "page", "malformed", "cold")


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
    args = parser.parse_args(argv)
    if args.workers < 1 or args.connections < 1 or args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--workers, --connections, --rounds and --duration must be positive, --warmup not negative")
    if args.codes < 2 * FIRST_COLD_WARMUP_CODES:
        parser.error(f"--codes must be at least {2 * FIRST_COLD_WARMUP_CODES}")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = None if args.no_json else (args.json or OUT_DIR / f"resolve-{stamp}.json")
    return Options(
        args.server, args.workers, args.connections, args.duration, args.warmup, args.rounds, args.codes,
        args.generator, json_path,
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


async def run(options: Options, generator: LoadGenerator) -> dict[str, list[Measurement]]:
    """Every measurement of every phase, by phase name in PHASES order.

    Each round starts the server afresh: the rounds are independent samples, and the malformed
    phase, which runs last, may trip the rate limit on bad lookups that a restart clears.
    """
    by_phase: dict[str, list[Measurement]] = {name: [] for name in PHASES}
    async with bench_dataset(options.codes) as data:
        redis = aioredis.Redis.from_url(data.redis_url)
        runner = Runner(generator, redis, data.database_name, options.connections, options.duration_s, options.warmup_s)
        log_path = OUT_DIR / f"server-{options.server}-{options.workers}w.log"
        cold = ColdCodes(data.cold_codes)
        try:
            for number in range(1, options.rounds + 1):
                async with ServerProcess(
                    server=options.server, workers=options.workers, env=server_env(data), log_path=log_path
                ) as server:
                    await check_answers(server.url, data)
                    warmup_codes, measured_codes = cold.next_run()
                    phases = [
                        ceiling_phase(),
                        warm_phase(data),
                        page_phase(data),
                        cold_phase(measured_codes, warmup_codes),
                        malformed_phase(data),
                    ]
                    for phase in phases:
                        print(f"  round {number}/{options.rounds}: {phase.name}", flush=True)
                        by_phase[phase.name].append(await runner.measure(phase, server.url, server.group))
                    cold.used(by_phase["cold"][-1], options.connections, options.warmup_s)
        finally:
            await redis.aclose()
    return by_phase


def results_table(by_phase: dict[str, list[Measurement]]) -> str:
    """Median round of each phase: throughput and latency, and the CPU a request costs (server, Postgres, Redis)."""
    ceiling = median_measurement(by_phase["ceiling"])
    rows = []
    for name, runs in by_phase.items():
        m = median_measurement(runs)
        load = m.load
        errors = f"{load.errors:,}" + (" (codes reused!)" if any(x.is_reused for x in runs) else "")
        limited = f"{load.limited:,}"
        ratio = load.rps / ceiling.load.rps if ceiling.load.rps else 0.0
        cpu_ratio = ceiling.service_us_per_request / m.service_us_per_request if m.service_us_per_request else 0.0
        rows.append(
            [
                name, f"{load.rps:,.0f}", spread(runs), f"{ratio:.2f}", f"{load.p50_ms:.2f}", f"{load.p99_ms:.2f}",
                errors, limited, f"{m.service_us_per_request:.0f}", f"{cpu_ratio:.2f}",
            ]
        )  # fmt: skip
    headers = ["phase", "req/s", "range of rounds", "x ceiling", "p50 ms", "p99 ms", "errors", "429s", "cpu us/req"]
    return table([*headers, "x ceiling by cpu"], rows)


def report(options: Options, generator: LoadGenerator, by_phase: dict[str, list[Measurement]]) -> dict[str, Any]:
    """Print the tables and return the JSON form of the results."""
    ceiling = median_measurement(by_phase["ceiling"]).load.rps
    ratios = {name: median_measurement(runs).load.rps / ceiling if ceiling else 0.0 for name, runs in by_phase.items()}
    print()
    print(results_table(by_phase))
    print()
    verdict = "meets" if ratios["warm"] >= WARM_AIM else "is below"
    print(
        f"warm / ceiling = {ratios['warm']:.2f} ({verdict} the aim of {WARM_AIM}); cold / ceiling = "
        f"{ratios['cold']:.2f}; malformed / ceiling = {ratios['malformed']:.2f}; page / ceiling = {ratios['page']:.2f}"
    )
    print("(cpu us/req: CPU of the server, its Postgres backends and Redis per answer; 'x ceiling by cpu' compares")
    print(" those, and is steadier than req/s while other work shares the machine)")
    print()
    print("CPU during each median run, in cores kept busy ('other': the rest of the machine), server CPU per")
    print("request, and Redis hits, misses and keys added:")
    print(accounting_table(medians(by_phase)))
    if any(m.is_reused for m in by_phase["cold"]):
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
        "ratios_to_ceiling": {name: round(ratio, 3) for name, ratio in ratios.items()},
        "median": {name: m.to_json() for name, m in medians(by_phase)},
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
    result = report(options, generator, by_phase)
    if options.json_path is not None:
        write_json(options.json_path, result)
        print(f"\nresults: {options.json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
