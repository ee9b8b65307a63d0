"""Granian against uvicorn (httptools + uvloop): the ceiling and the warm resolve, side by side in one run.

    .venv/bin/python bench/servers.py [--workers 1,2] [--rounds 3] [--duration S] [--connections C]

For each worker count, each round starts each server in turn (the order alternates from round to
round, so neither always runs first on a machine that drifts), warms it up and measures GET /livez
and a warm GET /api/v1/codes/{code} with the same load generator. Prints the median round of each,
the spread over the rounds, and which server answered more warm resolves per second.
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
from dataset import bench_dataset
from loadgen import LoadGenerator, pick_generator
from phases import Measurement, Runner, ceiling_phase, check_answers, median_measurement, warm_phase
from report import OUT_DIR, accounting_table, describe_machine, median, spread, table, write_json
from resolve import server_env
from serverproc import ServerProcess

SERVERS = ("granian", "uvicorn")
MIN_CODES = 1_000  # only the warm code is asked; the dataset still makes a few


@dataclass(frozen=True, slots=True)
class Options:
    workers: list[int]
    rounds: int
    connections: int
    duration_s: float
    warmup_s: float
    generator: str
    json_path: Path | None


def _parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="granian against uvicorn: ceiling and warm resolve")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each phase")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", type=Path, default=None, help="results file (default bench/out/servers-*.json)")
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--workers is a comma-separated list of numbers")
    if not workers or min(workers) < 1 or args.rounds < 1 or args.connections < 1 or args.duration <= 0:
        parser.error("--workers, --rounds, --connections and --duration must be positive")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = None if args.no_json else (args.json or OUT_DIR / f"servers-{stamp}.json")
    return Options(workers, args.rounds, args.connections, args.duration, args.warmup, args.generator, json_path)


Key = tuple[int, str, str]  # (workers, server, phase)


async def run(options: Options, generator: LoadGenerator) -> dict[Key, list[Measurement]]:
    results: dict[Key, list[Measurement]] = {}
    async with bench_dataset(MIN_CODES) as data:
        redis = aioredis.Redis.from_url(data.redis_url)
        runner = Runner(generator, redis, data.database_name, options.connections, options.duration_s, options.warmup_s)
        try:
            for workers in options.workers:
                for number in range(1, options.rounds + 1):
                    order = SERVERS if number % 2 else tuple(reversed(SERVERS))
                    for name in order:
                        log_path = OUT_DIR / f"server-{name}-{workers}w.log"
                        async with ServerProcess(
                            server=name, workers=workers, env=server_env(data), log_path=log_path
                        ) as server:
                            await check_answers(server.url, data)
                            for phase in (ceiling_phase(), warm_phase(data)):
                                print(f"  {workers} worker(s), round {number}/{options.rounds}: {name} {phase.name}")
                                measurement = await runner.measure(phase, server.url, server.group)
                                results.setdefault((workers, name, phase.name), []).append(measurement)
        finally:
            await redis.aclose()
    return results


def _cells(runs: list[Measurement]) -> list[str]:
    m = median_measurement(runs)
    load = m.load
    return [
        f"{load.rps:,.0f}", spread(runs), f"{load.p50_ms:.2f}", f"{load.p99_ms:.2f}", f"{load.errors:,}",
        f"{_cpu_us(runs):.0f}",
    ]  # fmt: skip


def _cpu_us(runs: list[Measurement]) -> float:
    """The median over the rounds of the server's CPU per request (with its Redis share), steadier than req/s."""
    return median([m.service_us_per_request for m in runs])


def report(options: Options, generator: LoadGenerator, results: dict[Key, list[Measurement]]) -> dict[str, Any]:
    rows = []
    verdicts = []
    for workers in options.workers:
        warm_rps: dict[str, float] = {}
        cpu_us: dict[tuple[str, str], float] = {}
        for name in SERVERS:
            ceiling, warm = results[(workers, name, "ceiling")], results[(workers, name, "warm")]
            warm_rps[name] = median_measurement(warm).load.rps
            cpu_us[(name, "ceiling")], cpu_us[(name, "warm")] = _cpu_us(ceiling), _cpu_us(warm)
            ratio = warm_rps[name] / median_measurement(ceiling).load.rps
            rows.append([f"{workers} x {name}", *_cells(ceiling), *_cells(warm), f"{ratio:.2f}"])
        best, other = sorted(SERVERS, key=lambda n: warm_rps[n], reverse=True)
        first, second = SERVERS
        verdicts.append(
            f"{workers} worker(s): {best} served {warm_rps[best] / warm_rps[other]:.2f}x the warm resolves per second "
            f"of {other}; CPU per request {first} / {second}: ceiling "
            f"{cpu_us[(first, 'ceiling')]:.0f} / {cpu_us[(second, 'ceiling')]:.0f} us, "
            f"warm {cpu_us[(first, 'warm')]:.0f} / {cpu_us[(second, 'warm')]:.0f} us"
        )
    headers = ["workers x server", "ceiling req/s", "range", "p50 ms", "p99 ms", "errors", "cpu us"]
    headers += ["warm req/s", "range", "p50 ms", "p99 ms", "errors", "cpu us", "warm/ceiling"]
    print()
    print(table(headers, rows))
    print()
    print("\n".join(verdicts))
    print()
    print("CPU during each median run, in cores ('other': the rest of the machine), server CPU per request:")
    labelled = [
        (f"{workers} x {name} {phase}", median_measurement(runs)) for (workers, name, phase), runs in results.items()
    ]
    print(accounting_table(sorted(labelled, key=lambda item: item[0])))
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "cores": os.cpu_count(),
        "generator": generator.name,
        "connections": options.connections,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "rounds": options.rounds,
        "verdicts": verdicts,
        "median": {f"{w} x {s} {p}": median_measurement(runs).to_json() for (w, s, p), runs in results.items()},
        "rounds_measured": {f"{w} x {s} {p}": [m.to_json() for m in runs] for (w, s, p), runs in results.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = _parse(argv)
    generator = pick_generator(options.generator)
    print(describe_machine())
    print(
        f"load: {generator.name}, {options.connections} connections, {options.duration_s:g}s per phase after "
        f"{options.warmup_s:g}s warm-up, {options.rounds} round(s), workers {options.workers}"
    )
    try:
        results = asyncio.run(run(options, generator))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    result = report(options, generator, results)
    if options.json_path is not None:
        write_json(options.json_path, result)
        print(f"\nresults: {options.json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
