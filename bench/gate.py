"""Gate benchmark: durable accepted gate scans per second, p50 and p99 at 32 concurrent gates, beside the
warm resolve and the ceiling of the same run.

    .venv/bin/python bench/gate.py [--workers N] [--duration S] [--gates 32] [--batches B] [--rounds R]
                                   [--server-env NAME=VALUE ...]

Seeds a database of its own (bench/dataset.py), starts `tracecode serve` on it (bench/serverproc.py)
with an admin token, and through the API registers a producer, B batches of 10**9 kg each with a
passing inspection and a certificate (so that every scan is accepted and none runs out), a market
and one gate token per gate (scope "{market}/gate-NN"). Then, in rounds, each round on a freshly
started server and each phase after a warm-up, the same load generator at the same concurrency:

    ceiling  GET /livez                   no I/O: what the ASGI server and Starlette cost
    warm     GET /api/v1/codes/{code}     one code, always cached
    gate     POST /api/v1/gate/scans      one keep-alive connection per gate with its own token; every
                                          scan 1 kg of the gate's batch under a new idempotency key

A scan's answer is sent after the statement of its group committed (synchronous_commit, fsync; a
worker sends the scans that gather while its last statement runs as one statement, resolver.api.gate), so
an accepted answer is a durable entry. The generator counts accepted answers, other answers and
errors, and at the end of a run waits for the answers still in flight, so that after the last
round the gate_entries rows of the database can be compared with the accepted answers the gates
counted (warm-ups and set-up checks included): they must be equal.

The generator is this file run with --generate: one process for the whole benchmark (its imports
and connection set-up stay out of every measured run) that drives the load client of bench/loadgen.py
(asyncio with uvloop on raw keep-alive sockets, whether wrk is installed or not); it reports its own
CPU time, shown as the generator's share (about 15 us a GET, 40 us a scan here).
Prints the table (each phase's median round), the ratio of accepted scans to warm resolves, where
the CPU went (server, Postgres backends of the bench database, Redis, generator, the rest of the
machine), the CPU and WAL of one scan, what the Postgres backends were doing during the gate run
(sampled from pg_stat_activity), a one-line reading of what limits it, the durability check and the
server's logged warnings; the JSON goes to bench/out/. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import os
import resource
import secrets
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import redis.asyncio as aioredis
from cputime import snapshot
from dataset import REGION, Dataset, _batch_body, _random_credit_code, _with_database, bench_dataset
from loadgen import GENERATOR_GRACE_S, LoadResult, Tally, load_result, open_connections, run_closed_loop, run_fast
from phases import Measurement, check_answers, redis_counters
from report import OUT_DIR, accounting_table, describe_machine, table, write_json
from resolve import server_env
from serverproc import ServerProcess

from resolver.db import POOL_MAX_SIZE
from resolver.scan.documents import CHINA_TZ

DEFAULT_GATES = 32
DEFAULT_BATCHES = 8  # gate i scans batch i % B: a few lots, each at several gates at once
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 2.0
DEFAULT_ROUNDS = 2
WARM_CODES = 1_000  # package codes seeded; the warm phase asks for the first one only
BATCH_QUANTITY = 10**9  # kg: never runs out at 1 kg a scan
UNIT = "kg"
TARGET_ACCEPTED_PER_S = 2_000.0
TARGET_P99_MS = 25.0
PHASES = ("ceiling", "warm", "gate")
SCAN_PATH = "/api/v1/gate/scans"
SAMPLE_INTERVAL_S = 0.1  # pg_stat_activity, during the measured gate runs
STATS_FLUSH_S = 1.1  # backends publish their transaction counts at most once a second: wait that long
READY_TIMEOUT_S = 30.0
GENERATOR_MARK = "GATE_GENERATOR "
GENERATOR_SCRIPT = Path(__file__).resolve()
KEPT_SAMPLES = 5  # bodies of unexpected answers kept for the report
CPU_BOUND_SHARE = 0.9  # of the machine's cores busy (or of the pool's connections active): saturated
HTTP_OK = 200
HTTP_CREATED = 201
ACCEPTED = b'"decision":"accept"'
REPLAYED = b'"replay":true'


# The load generator (the process run with --generate).


def _get_request(host: str, path: str) -> Callable[[], bytes]:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return lambda: request


def _scan_request(host: str, token: str, gate: str, code: str, key_prefix: str) -> Callable[[], bytes]:
    """Scans of 1 kg of `code` by `gate`, each under a new idempotency key: {key_prefix}-{gate}-{n}."""
    head = (
        f"POST {SCAN_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    start = f'{{"code":"{code}","quantity":1,"unit":"{UNIT}","idempotency_key":"{key_prefix}-{gate}-'.encode()
    sent = 0

    def request() -> bytes:
        nonlocal sent
        sent += 1
        body = start + str(sent).encode() + b'"}'
        return head + str(len(body)).encode() + b"\r\n\r\n" + body

    return request


class _GateTally(Tally):
    """Reads the answers' bodies: accepted scans, other decisions and replays, within the run and after its deadline
    (in flight when it passed), and keeps a few answers that were not accepted scans."""

    reads_bodies = True

    def __init__(self, is_gate: bool) -> None:
        super().__init__((HTTP_OK,))
        self.is_gate = is_gate
        self.accepted = 0
        self.rejected = 0  # answered 200 with another decision
        self.replays = 0
        self.late_accepted = 0
        self.late_other = 0
        self.ok_answers = 0  # every answer 200, in the run or after its deadline
        self.samples: list[str] = []

    def answered(self, status: int, body: bytes, latency_ns: int) -> None:
        super().answered(status, body, latency_ns)
        if self._read(status, body):
            self.accepted += 1
        elif status == HTTP_OK and self.is_gate:
            self.rejected += 1

    def answered_late(self, status: int, body: bytes) -> None:
        if self._read(status, body):
            self.late_accepted += 1
        else:
            self.late_other += 1

    def _read(self, status: int, body: bytes) -> bool:
        """Whether the answer is an accepted scan; counts answers 200 and replays, keeps samples."""
        accepted = False
        if status == HTTP_OK:
            self.ok_answers += 1
            if self.is_gate:
                accepted = ACCEPTED in body
                self.replays += REPLAYED in body
        if (status != HTTP_OK or (self.is_gate and not accepted)) and len(self.samples) < KEPT_SAMPLES:
            self.samples.append(f"{status} {body[:300].decode(errors='replace')}")
        return accepted

    def summary(self, elapsed_ns: int) -> dict[str, Any]:
        return super().summary(elapsed_ns) | {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "replays": self.replays,
            "late_accepted": self.late_accepted,
            "late_other": self.late_other,
            "ok_answers": self.ok_answers,
            "samples": self.samples,
        }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Open the job's connections, say READY, wait for GO on stdin, run closed-loop for the duration."""
    url = job["url"]
    host = urlsplit(url).netloc
    scans: list[dict[str, str]] = job["scans"]
    tally = _GateTally(is_gate=bool(scans))
    if scans:
        requests = [_scan_request(host, s["token"], s["gate"], s["code"], job["key_prefix"]) for s in scans]
    else:
        requests = [_get_request(host, job["path"])] * int(job["connections"])
    connections = await open_connections(url, tally, requests, timeout_s=READY_TIMEOUT_S)
    print("READY", flush=True)
    if (await asyncio.to_thread(sys.stdin.readline)).strip() != "GO":
        raise SystemExit("the benchmark went away")
    gc.collect()
    gc.disable()  # no collector pauses in the latencies; nothing here makes cycles
    try:
        cpu_before = _cpu_s()
        elapsed_ns = await run_closed_loop(connections, tally, float(job["duration_s"]))
        cpu_s = _cpu_s() - cpu_before
    finally:
        gc.enable()
    return tally.summary(elapsed_ns) | {"timeouts": 0, "wrapped": 0, "paths": len(requests), "cpu_s": cpu_s}


def generator_main() -> int:
    """Jobs (JSON lines) from stdin, one at a time; each answers READY, then its summary after GO."""
    while line := sys.stdin.readline():
        summary = run_fast(_run_job(json.loads(line)))
        print(GENERATOR_MARK + json.dumps(summary), flush=True)
    return 0


class Generator:
    """The benchmark's end of the generator process: `await generator.prepare(job)`, then `await generator.go()`."""

    def __init__(self) -> None:
        self.name = "python (asyncio + uvloop, raw keep-alive sockets, 1 process)"
        self._process: asyncio.subprocess.Process | None = None
        self._duration_s = 0.0

    def __repr__(self) -> str:
        return f"Generator(pid={self._process.pid if self._process else None})"

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, str(GENERATOR_SCRIPT), "--generate",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 5.0)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _line(self, timeout_s: float) -> str:
        assert self._process is not None and self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"the load generator exited with {await self._process.wait()}")
        return line.decode()

    async def _send(self, text: str) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(text.encode() + b"\n")
        await self._process.stdin.drain()

    async def prepare(self, job: dict[str, Any]) -> None:
        """Connections open and idle: nothing of the run has started."""
        self._duration_s = float(job["duration_s"])
        await self._send(json.dumps(job))
        line = await self._line(READY_TIMEOUT_S)
        if line.strip() != "READY":
            raise RuntimeError(f"the load generator said {line!r}")

    async def go(self) -> dict[str, Any]:
        await self._send("GO")
        line = await self._line(self._duration_s + 2 * GENERATOR_GRACE_S)
        if not line.startswith(GENERATOR_MARK):
            raise RuntimeError(f"the load generator said {line!r}")
        summary: dict[str, Any] = json.loads(line[len(GENERATOR_MARK) :])
        return summary

    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        await self.prepare(job)
        return await self.go()


# The benchmark.


@dataclass(frozen=True, slots=True)
class Options:
    server: str
    workers: int
    gates: int
    batches: int
    duration_s: float
    warmup_s: float
    rounds: int
    json_path: Path | None
    server_env: dict[str, str]  # on top of the benchmark's own, for experiments (--server-env)


@dataclass(frozen=True, slots=True)
class Gates:
    """What the set-up registered: one token per gate and the batch code each gate scans."""

    market_id: int
    names: list[str]
    tokens: list[str]
    codes: list[str]  # of gate i
    batch_codes: list[str]

    def scans(self) -> list[dict[str, str]]:
        return [
            {"gate": name, "token": token, "code": code}
            for name, token, code in zip(self.names, self.tokens, self.codes, strict=True)
        ]


@dataclass(slots=True)
class Ledger:
    """Every accepted answer the gates were given, wherever it came from: the durability check's sum."""

    setup: int = 0  # the check scans after the set-up
    warmups: int = 0
    measured: int = 0
    in_flight: int = 0  # answers that came after a run's deadline, accepted
    answers: int = 0  # every gate answer 200 (accepted or not): each is a gate_scans row
    lost: int = 0  # scans sent whose answer never came: they may or may not have been recorded

    @property
    def accepted(self) -> int:
        return self.setup + self.warmups + self.measured + self.in_flight

    def add(self, summary: dict[str, Any], *, is_warmup: bool) -> None:
        accepted = int(summary["accepted"])
        if is_warmup:
            self.warmups += accepted
        else:
            self.measured += accepted
        self.in_flight += int(summary["late_accepted"])
        self.answers += int(summary["ok_answers"])
        self.lost += int(summary["lost"])


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run of a phase."""

    measurement: Measurement
    accepted: int  # answers "accept" within the run (gate)
    rejected: int  # answers 200 with another decision (gate)
    replays: int
    lost: int
    samples: list[str]
    backends: dict[str, float]  # mean backends of the bench database by state and wait (gate)
    wal_bytes: int  # WAL written during the run (gate)
    commits: int  # transactions committed in the bench database during the run (gate): one per scan group

    @property
    def load(self) -> LoadResult:
        return self.measurement.load

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.load.duration_s if self.load.duration_s > 0 else 0.0

    @property
    def generator_us_per_request(self) -> float:
        return self.measurement.cpu.children_s / self.load.requests * 1e6 if self.load.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.measurement.to_json(),
            "accepted": self.accepted,
            "accepted_per_s": round(self.accepted_per_s, 1),
            "rejected": self.rejected,
            "replays": self.replays,
            "lost": self.lost,
            "generator_cpu_us_per_request": round(self.generator_us_per_request, 1),
            "postgres_backends": {k: round(v, 2) for k, v in self.backends.items()},
            "wal_bytes": self.wal_bytes,
            "commits": self.commits,
            "samples": self.samples,
        }


def _parse(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description="gate benchmark: accepted scans per second beside the warm resolve")
    parser.add_argument("--server", choices=("granian", "uvicorn"), default="granian")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gates", type=int, default=DEFAULT_GATES, help="concurrent gates (= connections)")
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES, help="batches scanned; gate i scans i %% B")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds measured per phase")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="seconds of warm-up before each phase")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds of all phases; medians shown")
    parser.add_argument("--json", type=Path, default=None, help="results file (default bench/out/gate-*.json)")
    parser.add_argument("--no-json", action="store_true", help="write no results file")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="extra environment of the server, for experiments (e.g. TRACECODE_LOCAL_CACHE=0); repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.workers, args.gates, args.batches, args.rounds) < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--workers, --gates, --batches, --rounds and --duration must be positive, --warmup not negative")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes NAME=VALUE")
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = None if args.no_json else (args.json or OUT_DIR / f"gate-{stamp}.json")
    return Options(
        args.server, args.workers, args.gates, args.batches, args.duration, args.warmup, args.rounds, json_path,
        extra_env,
    )  # fmt: skip


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = await client.post(path, json=body)
    if response.status_code != status:
        raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    return answer


async def register_gates(url: str, admin_token: str, options: Options) -> Gates:
    """Through the API as the admin: a producer, its batches, a market and a token for each of its gates."""
    today = dt.datetime.now(CHINA_TZ).date()
    credit_code = _random_credit_code()
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        producer = {
            "credit_code": credit_code, "name": "大通县牦牛产销专业合作社（入场压测）", "kind": "cooperative",
            "region_code": REGION, "contact": "0971-2721002",
        }  # fmt: skip
        await _post(client, "/api/v1/producers", producer, HTTP_CREATED)
        batch_codes = []
        for _ in range(options.batches):
            batch = _batch_body(credit_code, today).model_dump(mode="json") | {"quantity": BATCH_QUANTITY}
            batch_codes.append((await _post(client, "/api/v1/batches", batch, HTTP_CREATED))["trace_code"])
        market = {"name": "西宁市海湖农产品批发市场（压测）", "region_code": REGION}
        market_id = int((await _post(client, "/api/v1/markets", market, HTTP_CREATED))["id"])
        names = [f"gate-{i:02d}" for i in range(options.gates)]
        tokens = []
        for name in names:
            token = {"role": "gate", "scope": f"{market_id}/{name}"}
            tokens.append((await _post(client, "/api/v1/tokens", token, HTTP_CREATED))["token"])
    codes = [batch_codes[i % len(batch_codes)] for i in range(options.gates)]
    return Gates(market_id, names, tokens, codes, batch_codes)


async def check_gates(url: str, gates: Gates, ledger: Ledger) -> None:
    """Each gate's first scan is accepted; the same key again is a replay of the same answer."""
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        first: dict[str, Any] = {}
        for name, token, code in zip(gates.names, gates.tokens, gates.codes, strict=True):
            scan = {"code": code, "quantity": 1, "unit": UNIT, "idempotency_key": f"check-{name}"}
            response = await client.post(SCAN_PATH, json=scan, headers={"Authorization": f"Bearer {token}"})
            answer = response.json()
            if response.status_code != HTTP_OK or answer.get("decision") != "accept" or answer.get("replay"):
                raise RuntimeError(f"gate {name}: scan answered {response.status_code} {response.text[:500]}")
            ledger.setup += 1
            ledger.answers += 1
            first = first or {"scan": scan, "token": token, "answer": answer}
        again = await client.post(SCAN_PATH, json=first["scan"], headers={"Authorization": f"Bearer {first['token']}"})
        answer = again.json()
        if not answer.get("replay") or answer.get("voucher_code") != first["answer"]["voucher_code"]:
            raise RuntimeError(f"a repeated key answered {again.status_code} {again.text[:500]}")


class BackendSampler:
    """Samples what the Postgres backends of the bench database are doing (state, wait event) during a run,
    from a connection to the maintenance database (so that its own backend is not counted as the service's)."""

    def __init__(self, maintenance_url: str, database: str) -> None:
        self._url = maintenance_url
        self._database = database
        self._counts: Counter[str] = Counter()
        self._samples = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._wal_start = 0
        self._wal_end = 0
        self._commits_start = 0

    def __repr__(self) -> str:
        return f"BackendSampler({self._database!r}, samples={self._samples})"

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._url)
        await asyncio.sleep(STATS_FLUSH_S)  # the warm-up's transactions counted before, not during the run
        self._commits_start = await self._commits()
        self._wal_start = await self._wal()
        self._task = asyncio.create_task(self._sample())

    async def _commits(self) -> int:
        assert self._conn is not None
        query = "SELECT xact_commit FROM pg_stat_database WHERE datname = $1"
        commits: int = await self._conn.fetchval(query, self._database)
        return commits

    async def _wal(self) -> int:
        assert self._conn is not None
        lsn: int = await self._conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        return lsn

    async def _sample(self) -> None:
        assert self._conn is not None
        query = """
            SELECT state || ' ' || coalesce(wait_event_type || '/' || wait_event, 'on cpu') AS what, count(*) AS n
              FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' GROUP BY 1
        """
        while True:
            for row in await self._conn.fetch(query, self._database):
                self._counts[row["what"]] += row["n"]
            self._samples += 1
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def stop(self) -> tuple[dict[str, float], int, int]:
        """(mean backends by state and wait, WAL bytes written, transactions committed in the bench database)"""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        commits = 0
        if self._conn is not None:
            self._wal_end = await self._wal()
            await asyncio.sleep(STATS_FLUSH_S)
            commits = await self._commits() - self._commits_start
            await self._conn.close()
        means = {what: n / self._samples for what, n in self._counts.most_common()} if self._samples else {}
        return means, self._wal_end - self._wal_start, commits


@dataclass(slots=True)
class Bench:
    options: Options
    generator: Generator
    redis: aioredis.Redis
    data: Dataset
    ledger: Ledger

    def _job(self, url: str, phase: str, duration_s: float, gates: Gates | None) -> dict[str, Any]:
        job: dict[str, Any] = {"url": url, "duration_s": duration_s, "connections": self.options.gates, "scans": []}
        if phase == "ceiling":
            job["path"] = "/livez"
        elif phase == "warm":
            job["path"] = f"/api/v1/codes/{self.data.warm_code}"
        else:
            assert gates is not None
            job["scans"] = gates.scans()
            job["key_prefix"] = secrets.token_hex(6)  # a new prefix each run: every key is new
        return job

    async def measure(self, phase: str, server: ServerProcess, gates: Gates | None) -> Run:
        """Warm up, then measure `phase` with CPU, Redis and (gate) Postgres accounting."""
        options = self.options
        if options.warmup_s > 0:
            summary = await self.generator.run(self._job(server.url, phase, options.warmup_s, gates))
            _check(phase, summary, is_warmup=True)
            if phase == "gate":
                self.ledger.add(summary, is_warmup=True)
        await self.generator.prepare(self._job(server.url, phase, options.duration_s, gates))
        sampler = None
        if phase == "gate":
            sampler = BackendSampler(_with_database(self.data.database_url, "postgres"), self.data.database_name)
            await sampler.start()
        redis_before = await redis_counters(self.redis)
        cpu_before = snapshot(server.group, self.data.database_name)
        summary = await self.generator.go()
        cpu = snapshot(server.group, self.data.database_name) - cpu_before
        redis = await redis_counters(self.redis) - redis_before
        backends, wal_bytes, commits = await sampler.stop() if sampler is not None else ({}, 0, 0)
        _check(phase, summary, is_warmup=False)
        if phase == "gate":
            self.ledger.add(summary, is_warmup=False)
        # The generator lives on between runs, so it reports its own CPU time over the run.
        cpu = dataclasses.replace(cpu, children_s=float(summary["cpu_s"]))
        return Run(
            Measurement(phase, False, load_result(summary), cpu, redis), int(summary["accepted"]),
            int(summary["rejected"]), int(summary["replays"]), int(summary["lost"]), list(summary["samples"]), backends,
            wal_bytes, commits,
        )  # fmt: skip


def _check(phase: str, summary: dict[str, Any], *, is_warmup: bool) -> None:
    """Say at once when a run saw errors or non-accepted scans, with a few of the answers."""
    trouble = int(summary["unexpected"]) + int(summary["socket_errors"]) + int(summary["lost"])
    trouble += int(summary["rejected"]) + int(summary["replays"])
    if trouble:
        what = "warm-up" if is_warmup else "run"
        print(
            f"    {phase} {what}: {summary['unexpected']} unexpected statuses {summary['statuses']}, "
            f"{summary['rejected']} not accepted, {summary['replays']} replays, {summary['socket_errors']} socket "
            f"errors, {summary['lost']} lost; e.g. {summary['samples'][:2]}",
            flush=True,
        )


async def durability(data: Dataset, gates: Gates) -> dict[str, Any]:
    """What the database holds after the runs, to set beside what the gates were told."""
    conn = await asyncpg.connect(data.database_url)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM gate_entries) AS entries,
                   (SELECT count(*) FROM gate_scans) AS scans,
                   (SELECT count(*) FROM gate_scans WHERE decision = 'accept') AS accepted_scans,
                   (SELECT coalesce(sum(admitted), 0)::bigint FROM batches WHERE trace_code = ANY ($1::text[]))
                       AS admitted,
                   current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS synchronous_commit
            """,
            gates.batch_codes,
        )
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


def log_warnings(log_path: Path) -> Counter[str]:
    """The server's warnings and errors in its log, by message with the numbers taken out."""
    found: Counter[str] = Counter()
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        for level in (" WARNING ", " ERROR ", " CRITICAL "):
            if level in line:
                message = level.strip() + " " + line.split(level, 1)[1]
                found["".join("N" if c.isdigit() else c for c in message)[:160]] += 1
    return found


@dataclass(frozen=True, slots=True)
class Results:
    by_phase: dict[str, list[Run]]
    ledger: Ledger
    stored: dict[str, Any]  # what the database holds after the runs
    warnings: Counter[str]  # of the server logs, all rounds


async def run(options: Options, generator: Generator) -> Results:
    by_phase: dict[str, list[Run]] = {name: [] for name in PHASES}
    ledger = Ledger()
    warnings: Counter[str] = Counter()
    admin_token = secrets.token_urlsafe(32)
    async with bench_dataset(WARM_CODES) as data:
        redis = aioredis.Redis.from_url(data.redis_url)
        bench = Bench(options, generator, redis, data, ledger)
        env = server_env(data) | {"TRACECODE_ADMIN_TOKEN": admin_token} | options.server_env
        log_path = OUT_DIR / f"gate-server-{options.server}-{options.workers}w.log"
        gates: Gates | None = None
        try:
            for number in range(1, options.rounds + 1):
                async with ServerProcess(
                    server=options.server, workers=options.workers, env=env, log_path=log_path
                ) as server:
                    await check_answers(server.url, data)
                    if gates is None:
                        print("  registering a producer, batches, a market and the gate tokens ...", flush=True)
                        gates = await register_gates(server.url, admin_token, options)
                        await check_gates(server.url, gates, ledger)
                    for phase in PHASES:
                        print(f"  round {number}/{options.rounds}: {phase}", flush=True)
                        by_phase[phase].append(await bench.measure(phase, server, gates))
                warnings += log_warnings(log_path)  # each round's server writes the log afresh
            assert gates is not None
            stored = await durability(data, gates)
        finally:
            await redis.aclose()
    return Results(by_phase, ledger, stored, warnings)


def _rate(run: Run) -> float:
    """What a phase is ranked by: accepted scans per second for the gate, answers per second otherwise."""
    return run.accepted_per_s if run.measurement.phase == "gate" else run.load.rps


def median_run(runs: Sequence[Run]) -> Run:
    ordered = sorted(runs, key=_rate)
    return ordered[(len(ordered) - 1) // 2]


def _spread(runs: Sequence[Run]) -> str:
    if len(runs) < 2:
        return ""
    values = [_rate(r) for r in runs]
    return f"{min(values):,.0f}-{max(values):,.0f}"


def results_table(by_phase: dict[str, list[Run]]) -> str:
    rows = []
    for name, runs in by_phase.items():
        r = median_run(runs)
        load = r.load
        is_gate = name == "gate"
        rows.append(
            [
                name, f"{load.rps:,.0f}", f"{r.accepted_per_s:,.0f}" if is_gate else "-", _spread(runs),
                f"{load.p50_ms:.2f}", f"{load.p99_ms:.2f}", f"{load.errors:,}",
                f"{r.rejected + r.replays:,}" if is_gate else "-",
                f"{r.measurement.service_us_per_request:.0f}", f"{r.generator_us_per_request:.0f}",
            ]
        )  # fmt: skip
    headers = ["phase", "req/s", "accepted/s", "range of rounds", "p50 ms", "p99 ms", "errors", "not accepted"]
    return table([*headers, "service cpu us/req", "generator cpu us/req"], rows)


def _per_scan(seconds: float, run: Run) -> float:
    return seconds / run.accepted * 1e6 if run.accepted else 0.0


def limit_summary(gate: Run, cores: int, workers: int) -> str:
    """A one-line reading of the median gate run: CPU, row locks, WAL or the connection pool."""
    m = gate.measurement
    cpu = m.cpu
    parts = []
    busy = m.cores(cpu.machine_busy_s)
    shares = {
        "server": cpu.group_s, "postgres": cpu.postgres_s, "redis": cpu.redis_s, "generator": cpu.children_s,
        "other tenants": m.other_cpu_s,
    }  # fmt: skip
    ranked = ", ".join(
        f"{name} {m.cores(seconds):.2f}" for name, seconds in sorted(shares.items(), key=lambda x: -x[1])
    )
    verdict = "CPU-bound" if busy >= CPU_BOUND_SHARE * cores else "not CPU-bound"
    parts.append(f"{verdict}: {busy:.2f} of {cores} cores busy ({ranked})")
    locks = sum(n for what, n in gate.backends.items() if " Lock/" in what)
    wal = sum(n for what, n in gate.backends.items() if "WAL" in what)
    active = sum(n for what, n in gate.backends.items() if what.startswith("active"))
    pool = workers * POOL_MAX_SIZE
    parts.append(
        f"Postgres backends busy {active:.1f} of {pool} pooled, waiting on row locks {locks:.1f}, on WAL {wal:.1f}"
    )
    if active >= CPU_BOUND_SHARE * pool:
        parts.append("the connection pool is full")
    return "; ".join(parts)


def report(options: Options, generator: Generator, results: Results) -> dict[str, Any]:
    """Print the tables and the analysis; return the JSON form of the results."""
    by_phase, ledger, stored = results.by_phase, results.ledger, results.stored
    gate, warm, ceiling = (median_run(by_phase[name]) for name in ("gate", "warm", "ceiling"))
    ratio = gate.accepted_per_s / warm.load.rps if warm.load.rps else 0.0
    print()
    print(results_table(by_phase))
    print()
    print(
        f"accepted scans / warm resolves = {ratio:.2f}; warm / ceiling = "
        f"{warm.load.rps / ceiling.load.rps if ceiling.load.rps else 0.0:.2f}"
    )
    meets_rate = gate.accepted_per_s >= TARGET_ACCEPTED_PER_S
    meets_p99 = gate.load.p99_ms <= TARGET_P99_MS
    print(
        f"target >= {TARGET_ACCEPTED_PER_S:,.0f} accepted scans/s with p99 <= {TARGET_P99_MS:g} ms: "
        f"{gate.accepted_per_s:,.0f}/s ({'met' if meets_rate else 'MISSED'}), p99 {gate.load.p99_ms:.1f} ms "
        f"({'met' if meets_p99 else 'MISSED'})"
    )
    print("(service cpu: the server, its Postgres backends and Redis, per answer; generator cpu: its own, per answer)")
    print()
    print("CPU during each median run, in cores kept busy ('other': the rest of the machine), server CPU per")
    print("request, and Redis hits, misses and keys added:")
    print(accounting_table([(name, median_run(runs).measurement) for name, runs in by_phase.items()]))
    cpu = gate.measurement.cpu
    service_us = gate.measurement.service_us_per_request * gate.load.requests / gate.accepted if gate.accepted else 0
    total_us = service_us + _per_scan(cpu.children_s, gate)
    cores = os.cpu_count() or 1
    wal_per_scan = gate.wal_bytes / gate.accepted if gate.accepted else 0.0
    other_cores = gate.measurement.cores(gate.measurement.other_cpu_s)
    print()
    print(
        f"one accepted scan (median gate run): server {_per_scan(cpu.group_s, gate):.0f} us, Postgres "
        f"{_per_scan(cpu.postgres_s, gate):.0f} us, Redis {_per_scan(cpu.redis_s, gate):.0f} us, generator "
        f"{_per_scan(cpu.children_s, gate):.0f} us of CPU; {wal_per_scan:,.0f} bytes of WAL (written by the whole "
        f"cluster during the run, other databases included)"
    )
    if total_us:
        print(
            f"  -> {cores} cores at {total_us:.0f} us a scan would carry at most ~{cores / total_us * 1e6:,.0f} "
            f"scans/s with nothing else on the machine ('other' used {other_cores:.2f}"
            f" cores during the run, steal {gate.measurement.cores(cpu.machine_steal_s):.2f})"
        )
    if gate.commits:
        print(
            f"  transactions committed in the bench database: {gate.commits:,}, one per group of scans (and a few for "
            f"tokens and voucher blocks): ~{gate.accepted / gate.commits:.1f} accepted scans a transaction"
        )
    backends = ", ".join(f"{what} {n:.1f}" for what, n in gate.backends.items())
    print(f"Postgres backends of the bench database during the gate run, mean by state and wait: {backends}")
    print(f"what limits it: {limit_summary(gate, cores, options.workers)}")
    print()
    equal = stored["entries"] == ledger.accepted
    print(
        f"durability (fsync={stored['fsync']}, synchronous_commit={stored['synchronous_commit']}): gate_entries "
        f"rows {stored['entries']:,} {'=' if equal else '!='} accepted answers counted by the gates "
        f"{ledger.accepted:,} (set-up checks {ledger.setup:,}, warm-ups {ledger.warmups:,}, measured "
        f"{ledger.measured:,}, in flight at a deadline {ledger.in_flight:,})"
    )
    print(
        f"  gate_scans rows {stored['scans']:,} (answers 200: {ledger.answers:,}), accepted "
        f"{stored['accepted_scans']:,}; kg admitted to the batches {stored['admitted']:,}; "
        f"scans whose answer never came: {ledger.lost}"
    )
    if not equal:
        print("  WARNING: the database and the gates disagree" + (" (some answers were lost)" if ledger.lost else ""))
    if results.warnings:
        print(f"server log: {results.warnings.total():,} warnings or errors, most often:")
        for message, count in results.warnings.most_common(3):
            print(f"  {count:6,} x {message}")
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "cores": cores,
        "server": options.server,
        "workers": options.workers,
        "generator": generator.name,
        "gates": options.gates,
        "batches": options.batches,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "rounds": options.rounds,
        "server_env": options.server_env,
        "server_warnings": dict(results.warnings.most_common(20)),
        "accepted_per_s": round(gate.accepted_per_s, 1),
        "accepted_over_warm": round(ratio, 3),
        "target_met": meets_rate and meets_p99,
        "durability": {**stored, "accepted_answers": dataclasses.asdict(ledger) | {"total": ledger.accepted}},
        "median": {name: median_run(runs).to_json() for name, runs in by_phase.items()},
        "rounds_measured": {name: [r.to_json() for r in runs] for name, runs in by_phase.items()},
        "round_rates": {name: [round(_rate(r), 1) for r in runs] for name, runs in by_phase.items()},
    }


async def _main(options: Options, generator: Generator) -> Results:
    await generator.start()
    try:
        return await run(options, generator)
    finally:
        await generator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["--generate"]:
        return generator_main()
    options = _parse(args)
    generator = Generator()
    print(describe_machine())
    print(
        f"server: {options.server}, {options.workers} worker(s) | load: {generator.name}, {options.gates} gates "
        f"(connections) on {options.batches} batch(es), {options.duration_s:g}s per phase after "
        f"{options.warmup_s:g}s warm-up, {options.rounds} round(s)"
        + (f" | server environment {options.server_env}" if options.server_env else "")
    )
    print("seeding a database of its own ...", flush=True)
    try:
        results = asyncio.run(_main(options, generator))
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
