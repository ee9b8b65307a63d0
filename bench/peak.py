"""The peak-day load suite (issue 6): seed, serve, drive the mix with locust, print the table and draw the plot.

    .venv/bin/python bench/peak.py [run] [--users 64] [--duration 60] [--spawn-rate R] [--codes 300000]
                                   [--workers N] [--processes P] [--out DIR]
    .venv/bin/python bench/peak.py seed --host URL --admin-token T [--codes ...] [--out seed.json]
    .venv/bin/python bench/peak.py run --host URL --seed seed.json [--database-url DSN] [--expect-workers W]
    .venv/bin/python bench/peak.py report DIR

`run` without --host is the one command: a database of its own (bench/dataset.py), `tracecode serve`
on it with an admin token (bench/serverproc.py), then through the API, as a deployment would be fed:
producers with their tokens, batches, the package codes of each batch (the labels API), markets with
a token per gate and a regulator token; plus well-formed codes with a valid check that were never
issued. That seed goes to a JSON file that the locust users read (bench/locustfile.py). Then locust
runs headless for --duration seconds (its CSV with full history and its JSON go to the run's folder
bench/out/peak-<timestamp>/), and this prints one row per request kind (req/s, p50, p95, p99,
failures) and a total, draws throughput and latency over time into peak.png, and checks that no
accepted write was lost: the accepted gate scans the users counted equal the gate_entries rows that
the run added. The server is stopped and the database dropped at the end.

With --host the server is someone else's (a remote deployment): `seed` feeds it once through the API
with an admin token, `run --seed` drives it; the durability check needs --database-url (read only).
With --expect-workers the locust run is a master that waits for that many workers started elsewhere
(bench/PEAK.md). `report DIR` prints the table and draws the plot of a finished run again.

Latencies are measured by locust's users (geventhttpclient) and kept per second in buckets of two
significant digits, so p50 and p99 below 10 ms are exact to 0.1 ms. On a small machine the load
generator shares the cores with the server: then the numbers say what locust could drive, not what
the server could serve (bench/resolve.py measures that).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from dataset import REGION, _batch_body, _random_credit_code, bench_database
from loadgen import nearest_rank
from report import OUT_DIR, describe_machine, table
from serverproc import ServerProcess

from codegen.format import CodeType, compose
from resolver.scan.documents import CHINA_TZ

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_USERS = 64
DEFAULT_DURATION_S = 60
DEFAULT_CODES = 300_000
DEFAULT_BATCHES = 20
DEFAULT_PRODUCERS = 4
DEFAULT_MARKETS = 2
DEFAULT_GATES = 16
DEFAULT_RECALLS = 3
BATCH_QUANTITY_KG = 10**9  # the gates never run a batch out
NEVER_ISSUED_SHARE_OF_CODES = 1 / 30
NEVER_ISSUED_BOUNDS = (100, 10_000)
SAMPLE_CODES_PER_BATCH = 20  # what the regulator resolves after a recall
LABEL_REQUESTS_AT_ONCE = 2  # the server issues two at a time per worker anyway
SERIAL_LIMIT = 10**11
API_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 10  # locust lets every user finish the request it is in before it stops
LOCUST_GRACE_S = 120.0  # beyond the run and the stop before locust is killed
SEED_FILE = "seed.json"
LEDGER_FILE = "ledger.json"
STATS_PREFIX = "locust"
PLOT_FILE = "peak.png"
HTTP_CREATED = 201
KIND_ORDER = (
    "resolve", "page", "resolve_mistyped", "resolve_never_issued", "gate_scan", "trade", "labels", "recall",
    "recall_seen",
)  # fmt: skip
USER_CLASSES = ("ConsumerUser", "GateUser", "ProducerUser", "RegulatorUser")
CONSUMER_KINDS = frozenset({"resolve", "page", "resolve_mistyped", "resolve_never_issued"})
GATE_KINDS = frozenset({"gate_scan", "trade"})
PERCENTILES = (0.50, 0.95, 0.99)
METRICS_KEPT = ("tracecode_cache_total", "tracecode_rate_limited_total", "tracecode_store_errors_total")
METRICS_TIMEOUT_S = 10.0
HTTP_OK = 200
CPU_WARNING = "CPU usage"  # locust's warning, in its log, when one of its processes is above 90 %


# Seeding, through the API: the same for a server started here and a remote deployment.


@dataclass(frozen=True, slots=True)
class SeedSize:
    codes: int
    batches: int
    producers: int
    markets: int
    gates: int
    recalls: int


class Api:
    """The admin's client of one deployment: POST and check the status."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: dict[str, Any], *, token: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        response = await self.client.post(path, json=body, headers=headers)
        if response.status_code != HTTP_CREATED:
            raise RuntimeError(f"POST {path} answered {response.status_code}: {response.text[:500]}")
        answer: dict[str, Any] = response.json()
        return answer

    async def token(self, role: str, scope: str) -> str:
        return str((await self.post("/api/v1/tokens", {"role": role, "scope": scope}))["token"])


def never_issued_codes(issued: set[str], count: int, rng: random.Random) -> list[str]:
    """Package codes of the region, well-formed with a valid check, that are not among `issued`."""
    codes: set[str] = set()
    while len(codes) < count:
        code = compose(int(CodeType.PACKAGE), REGION, rng.randrange(SERIAL_LIMIT))
        if code not in issued:
            codes.add(code)
    return sorted(codes)


async def seed(url: str, admin_token: str, size: SeedSize, path: Path) -> dict[str, Any]:
    """Feed the deployment at `url` through its API and write what the locust users need to `path`."""
    today = dt.datetime.now(CHINA_TZ).date()
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=API_TIMEOUT_S) as client:
        api = Api(client)
        producers = []
        for number in range(size.producers):
            credit_code = _random_credit_code()
            body = {
                "credit_code": credit_code, "name": f"大通县高原牦牛养殖专业合作社{number + 1:02d}（压测）",
                "kind": "cooperative", "region_code": REGION, "contact": "0971-2721001",
            }  # fmt: skip
            await api.post("/api/v1/producers", body)
            producers.append((credit_code, await api.token("producer", credit_code)))
        batches: list[dict[str, Any]] = []
        for number in range(size.batches):
            credit_code, token = producers[number % len(producers)]
            body = _batch_body(credit_code, today).model_dump(mode="json") | {"quantity": BATCH_QUANTITY_KG}
            created = await api.post("/api/v1/batches", body, token=token)
            batches.append({"code": created["trace_code"], "producer_token": token})
        print(f"  {size.producers} producers, {size.batches} batches; issuing {size.codes:,} package codes ...")
        slots = asyncio.Semaphore(LABEL_REQUESTS_AT_ONCE)

        async def label(batch: dict[str, Any], count: int) -> list[str]:
            if count == 0:
                return []
            async with slots:
                answer = await api.post(
                    f"/api/v1/batches/{batch['code']}/labels", {"count": count}, token=batch["producer_token"]
                )
            return [str(code) for code in answer["codes"]]

        share, extra = divmod(size.codes, size.batches)
        counts = [share + (1 if i < extra else 0) for i in range(size.batches)]
        per_batch = await asyncio.gather(*(label(b, n) for b, n in zip(batches, counts, strict=True)))
        for batch, codes in zip(batches, per_batch, strict=True):
            batch["sample_codes"] = codes[:SAMPLE_CODES_PER_BATCH]
        for batch in batches[len(batches) - size.recalls :] if size.recalls else []:
            batch["is_recall"] = True
        markets = []
        gates = []
        for number in range(size.markets):
            market = {"name": f"西宁市农产品批发市场{number + 1:02d}（压测）", "region_code": REGION}
            market_id = int((await api.post("/api/v1/markets", market))["id"])
            markets.append(market_id)
            for gate_number in range(number, size.gates, size.markets):
                gate = f"gate-{gate_number:02d}"
                gates.append(
                    {"market_id": market_id, "gate": gate, "token": await api.token("gate", f"{market_id}/{gate}")}
                )
        regulator_token = await api.token("regulator", REGION)
    package_codes = [code for codes in per_batch for code in codes]
    rng = random.Random()
    low, high = NEVER_ISSUED_BOUNDS
    never_issued = never_issued_codes(
        set(package_codes), min(high, max(low, int(size.codes * NEVER_ISSUED_SHARE_OF_CODES))), rng
    )
    data = {
        "run": secrets.token_hex(6),
        "host": url,
        "created_at": dt.datetime.now(CHINA_TZ).isoformat(timespec="seconds"),
        "region": REGION,
        "markets": markets,
        "gates": gates,
        "regulator_token": regulator_token,
        "batches": batches,
        "never_issued": never_issued,
        "package_codes": package_codes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_text, json.dumps(data))
    print(
        f"  seeded in {time.monotonic() - started:.1f} s: {len(package_codes):,} package codes, "
        f"{len(never_issued):,} never-issued codes, {len(markets)} markets with {len(gates)} gates -> {path}"
    )
    return data


# Locust.


@dataclass(frozen=True, slots=True)
class LocustRun:
    users: int
    spawn_rate: float
    duration_s: int
    processes: int
    expect_workers: int
    recall_interval_s: float
    master_port: int | None
    user_classes: tuple[str, ...]  # all of them when empty


def locust_command(run: LocustRun, host: str, prefix: Path) -> list[str]:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--users", str(run.users), "--spawn-rate", f"{run.spawn_rate:g}", "--run-time", f"{run.duration_s}s",
        "--stop-timeout", str(STOP_TIMEOUT_S), "--csv", str(prefix), "--csv-full-history", "--json-file", str(prefix),
        "--only-summary", "--exit-code-on-error", "0", "--peak-recall-interval", f"{run.recall_interval_s:.1f}",
    ]  # fmt: skip
    if run.expect_workers:
        command += ["--master", "--expect-workers", str(run.expect_workers)]
        if run.master_port:
            command += ["--master-bind-port", str(run.master_port)]
    elif run.processes > 1:
        command += ["--processes", str(run.processes)]
    return command + list(run.user_classes)


async def run_locust(run: LocustRun, host: str, seed_path: Path, out: Path) -> dict[str, Any]:
    """Run locust headless against `host`; the ledger its users wrote."""
    ledger_path = out / LEDGER_FILE
    ledger_path.unlink(missing_ok=True)
    env = dict(os.environ) | {"TRACECODE_PEAK_SEED": str(seed_path), "TRACECODE_PEAK_LEDGER": str(ledger_path)}
    log_path = out / "locust.log"
    where = f"{run.processes} processes" if run.processes > 1 else "1 process"
    if run.expect_workers:
        where = f"a master waiting for {run.expect_workers} workers"
    print(
        f"  locust: {run.users} users (spawn rate {run.spawn_rate:g}/s) for {run.duration_s} s, {where} ...", flush=True
    )
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *locust_command(run, host, out / STATS_PREFIX), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            code = await asyncio.wait_for(process.wait(), run.duration_s + STOP_TIMEOUT_S + LOCUST_GRACE_S)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
    if code != 0 or not ledger_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust exited with {code} (log {log_path}):\n{tail}")
    ledger: dict[str, Any] = json.loads(ledger_path.read_text())
    return ledger


# The server's own counters (GET /metrics): how resolves were answered, refusals, store errors.


async def server_counters(url: str) -> Counter[str] | None:
    """The cache tier, rate-limit and store-error counters of /metrics, summed over the workers; None if unreachable."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=METRICS_TIMEOUT_S) as client:
            response = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    if response.status_code != HTTP_OK:
        return None
    counters: Counter[str] = Counter()
    for line in response.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith(METRICS_KEPT):
            counters[name] += int(float(value))
    return counters


def describe_counters(before: Counter[str] | None, after: Counter[str] | None) -> str:
    if before is None or after is None:
        return "server counters: /metrics not reachable"
    run = after - before
    tiers = {k.partition('tier="')[2].rstrip('"}'): v for k, v in run.items() if k.startswith("tracecode_cache_total")}
    raw = ", ".join(f"{tier} {n:,}" for tier, n in sorted(tiers.items())) or "none"
    looked_up = tiers.get("local_hits", 0) + tiers.get("local_misses", 0)
    shares = ""
    if looked_up:
        found = {
            "in-process": "local_hits",
            "Redis": "redis_hits",
            "Postgres stored document": "postgres_stored",
            "Postgres built": "postgres_built",
        }
        shares = " (" + ", ".join(f"{name} {tiers.get(key, 0) / looked_up:.0%}" for name, key in found.items()) + ")"
    errors = sum(v for k, v in run.items() if k.startswith("tracecode_store_errors_total"))
    limited = run["tracecode_rate_limited_total"]
    return f"server, resolves answered from{shares}: {raw}; rate limited {limited:,}; store errors {errors:,}"


# The report: one row per request kind, the plot, the durability check.


def histogram_percentile(buckets: Counter[float], share: float) -> float:
    """The smallest bucket at or below which `share` of the requests fall: loadgen.percentile over locust's buckets
    of response times (value -> requests), by the same nearest rank."""
    total = sum(buckets.values())
    if total == 0:
        return 0.0
    rank = nearest_rank(share, total)
    seen = 0
    for value in sorted(buckets):
        seen += buckets[value]
        if seen >= rank:
            return value
    return max(buckets)


@dataclass(frozen=True, slots=True)
class Series:
    """The ledger by request kind and by second."""

    by_kind: dict[str, Counter[float]]
    failures_by_kind: Counter[str]
    by_second: dict[int, dict[str, Counter[float]]]
    failures_by_second: Counter[int]
    counts: Counter[str]

    @classmethod
    def of(cls, ledger: dict[str, Any]) -> Series:
        by_kind: dict[str, Counter[float]] = defaultdict(Counter)
        by_second: dict[int, dict[str, Counter[float]]] = defaultdict(lambda: defaultdict(Counter))
        for second, name, bucket, count in ledger["latencies"]:
            by_kind[name][float(bucket)] += int(count)
            by_second[int(second)][name][float(bucket)] += int(count)
        failures_by_kind: Counter[str] = Counter()
        failures_by_second: Counter[int] = Counter()
        for second, name, count in ledger["failures"]:
            failures_by_kind[name] += int(count)
            failures_by_second[int(second)] += int(count)
        return cls(dict(by_kind), failures_by_kind, dict(by_second), failures_by_second, Counter(ledger["counts"]))

    @property
    def span_s(self) -> int:
        return max(self.by_second) - min(self.by_second) + 1 if self.by_second else 0

    def kinds(self) -> list[str]:
        known = [k for k in KIND_ORDER if k in self.by_kind]
        return known + sorted(set(self.by_kind) - set(known))


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def results_table(series: Series) -> str:
    span = series.span_s or 1
    rows = []
    total: Counter[float] = Counter()
    for kind in [*series.kinds(), "total"]:
        if kind == "total":
            buckets, failures = total, sum(series.failures_by_kind.values())
        else:
            buckets, failures = series.by_kind[kind], series.failures_by_kind[kind]
            total += buckets
        requests = sum(buckets.values())
        share = f"{failures / requests:.1%}" if requests else "-"
        rows.append(
            [
                kind,
                f"{requests:,}",
                f"{requests / span:,.1f}",
                *(_ms(histogram_percentile(buckets, p)) for p in PERCENTILES),
                f"{failures:,} ({share})",
            ]
        )
    headers = ["kind", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures"]
    return table(headers, rows)


def draw(series: Series, path: Path, title: str) -> None:
    """Two panels over the seconds of the run: requests per second, and p50/p95 latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    first = min(series.by_second)
    seconds = list(range(first, max(series.by_second) + 1))
    x = [s - first for s in seconds]

    def rate(kinds: Iterable[str] | None) -> list[int]:
        return [
            sum(sum(c.values()) for k, c in series.by_second.get(s, {}).items() if kinds is None or k in kinds)
            for s in seconds
        ]

    def latency(kinds: Iterable[str], share: float) -> list[float]:
        values = []
        for s in seconds:
            merged: Counter[float] = Counter()
            for kind, buckets in series.by_second.get(s, {}).items():
                if kind in kinds:
                    merged += buckets
            values.append(histogram_percentile(merged, share) if merged else float("nan"))
        return values

    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 7.5), constrained_layout=True)
    top.plot(x, rate(None), label="all requests", color="black", linewidth=1.6)
    top.plot(x, rate(CONSUMER_KINDS), label="consumers (resolve, page, mistyped, never issued)", linewidth=1.1)
    top.plot(x, rate(GATE_KINDS), label="gate scans and trades", linewidth=1.1)
    failures = [series.failures_by_second.get(s, 0) for s in seconds]
    if any(failures):
        top.plot(x, failures, label="failures", color="red", linewidth=1.1)
    top.set_ylabel("requests per second")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(loc="lower right", fontsize=8, ncol=2)
    top.set_title(title, fontsize=10)
    for kinds, name, color in ((CONSUMER_KINDS, "consumers", "tab:blue"), (GATE_KINDS, "gates", "tab:orange")):
        bottom.plot(x, latency(kinds, 0.50), label=f"{name} p50", color=color, linewidth=1.1)
        bottom.plot(x, latency(kinds, 0.95), label=f"{name} p95", color=color, linewidth=1.1, linestyle="--")
    recalls = sorted(s - first for s, kinds in series.by_second.items() if "recall" in kinds)
    for number, second in enumerate(recalls):
        for axis in (top, bottom):
            axis.axvline(
                second,
                color="grey",
                linewidth=0.8,
                linestyle=":",
                label="recall" if number == 0 and axis is bottom else None,
            )
    bottom.set_yscale("log")
    bottom.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_ylabel("latency, ms (log scale)")
    bottom.set_xlabel("seconds since the first request")
    bottom.grid(alpha=0.3, which="both")
    bottom.legend(loc="upper left", fontsize=8, ncol=3)
    figure.savefig(path, dpi=110)
    plt.close(figure)


@dataclass(frozen=True, slots=True)
class Durability:
    accepted: int  # answers "accept" that the users counted
    in_doubt: int  # scans sent that got no answer at all
    stored: int | None  # gate_entries rows the run added; None when the database is not at hand

    @property
    def is_ok(self) -> bool | None:
        if self.stored is None:
            return None
        return self.accepted <= self.stored <= self.accepted + self.in_doubt

    def describe(self) -> str:
        if self.stored is None:
            return (
                f"durability check skipped: the users counted {self.accepted:,} accepted gate scans; give "
                "--database-url to compare them with the gate_entries rows"
            )
        doubt = f" (+ up to {self.in_doubt:,} scans that got no answer)" if self.in_doubt else ""
        verdict = "OK, no accepted write lost or doubled" if self.is_ok else "MISMATCH"
        return (
            f"durability: accepted gate scans counted by the users {self.accepted:,}{doubt}, "
            f"gate_entries rows added by the run {self.stored:,}: {verdict}"
        )


async def count_entries(database_url: str, market_ids: Sequence[int]) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM gate_entries WHERE market_id = ANY($1::bigint[])", market_ids)
    finally:
        await conn.close()
    return int(count)


def ledger_summary(counts: Counter[str]) -> str:
    reasons = {k.removeprefix("gate_reject_"): v for k, v in counts.items() if k.startswith("gate_reject_")}
    shown = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) or "none"
    return (
        f"gate scans: {counts['gate_scans_accepted']:,} accepted, {counts['gate_scans_rejected']:,} rejected "
        f"({shown}), {counts['gate_scans_refused']:,} refused, {counts['gate_scans_in_doubt']:,} unanswered; "
        f"trades {counts['trades']:,}; package codes issued {counts['labels_issued']:,}; recalls {counts['recalls']:,}"
        + (f"; recalls NOT seen within 1 s: {counts['recall_not_seen']:,}" if counts["recall_not_seen"] else "")
    )


def report(out: Path, ledger: dict[str, Any], title: str) -> Series:
    series = Series.of(ledger)
    print()
    print(results_table(series))
    print()
    print(ledger_summary(series.counts))
    if series.by_second:
        plot = out / PLOT_FILE
        draw(series, plot, title)
        print(f"plot: {plot}")
    print(f"locust's own statistics: {out / STATS_PREFIX}_stats.csv, _stats_history.csv, _failures.csv, .json")
    return series


def print_failures(out: Path, limit: int = 5) -> None:
    path = Path(f"{out / STATS_PREFIX}_failures.csv")
    if not path.exists():
        return
    lines = path.read_text(errors="replace").splitlines()[1:]
    if lines:
        print("failures (locust's list, first kinds):")
        for line in lines[:limit]:
            print(f"  {line[:300]}")


# The command line.


def _size_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codes", type=int, default=DEFAULT_CODES, help="package codes to issue and scan")
    parser.add_argument("--batches", type=int, default=DEFAULT_BATCHES)
    parser.add_argument("--producers", type=int, default=DEFAULT_PRODUCERS)
    parser.add_argument("--markets", type=int, default=DEFAULT_MARKETS)
    parser.add_argument("--gates", type=int, default=DEFAULT_GATES, help="gate tokens, spread over the markets")
    parser.add_argument("--recalls", type=int, default=DEFAULT_RECALLS, help="batches recalled during the run")


def _size(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SeedSize:
    size = SeedSize(args.codes, args.batches, args.producers, args.markets, args.gates, args.recalls)
    if min(size.codes, size.batches, size.producers, size.markets, size.gates) < 1 or size.recalls < 0:
        parser.error("--codes, --batches, --producers, --markets and --gates must be positive, --recalls not negative")
    if size.recalls >= size.batches or size.gates < size.markets:
        parser.error("--recalls must be fewer than --batches, and every market needs a gate (--gates >= --markets)")
    return size


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/peak.py", description="the peak-day load suite (locust)")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="seed, serve (unless --host), drive with locust, report (the default)",
        description="The peak-day suite: seed, serve (unless --host), drive with locust, print the table, draw "
        "the plot, check that no accepted gate scan was lost. `run` is the default command. Other commands: "
        "`seed --host URL --admin-token T` (feed a remote deployment), `report DIR` (a finished run again).",
    )
    run.add_argument("--users", type=int, default=DEFAULT_USERS, help="concurrent locust users")
    run.add_argument("--spawn-rate", type=float, default=None, help="users started per second (default users/2)")
    run.add_argument("--duration", type=int, default=DEFAULT_DURATION_S, help="seconds of load")
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server workers (local server)")
    run.add_argument("--server", choices=("granian", "uvicorn"), default="granian")
    run.add_argument("--processes", type=int, default=1, help="locust processes on this machine (-1: one per core)")
    run.add_argument("--host", default=None, help="drive this deployment instead of starting a server")
    run.add_argument("--seed", type=Path, default=None, help="seed file of `seed` (with --host)")
    run.add_argument("--database-url", default=None, help="with --host: the deployment's database, for the check")
    run.add_argument("--expect-workers", type=int, default=0, help="locust master: wait for this many workers")
    run.add_argument("--master-port", type=int, default=None, help="locust master's port (default 5557)")
    run.add_argument("--out", type=Path, default=None, help="the run's folder (default bench/out/peak-<timestamp>)")
    run.add_argument(
        "--only", nargs="+", choices=USER_CLASSES, default=None,
        help="run only these users (e.g. --only ConsumerUser, to see the resolves without the gates' writes)",
    )  # fmt: skip
    _size_args(run)
    seeding = commands.add_parser("seed", help="feed a deployment through its API and write the seed file")
    seeding.add_argument("--host", required=True, help="base URL of the deployment, e.g. https://trace.example.cn")
    seeding.add_argument("--admin-token", default=os.environ.get("TRACECODE_ADMIN_TOKEN"), help="an admin token")
    seeding.add_argument("--out", type=Path, default=OUT_DIR / SEED_FILE, help="the seed file to write")
    _size_args(seeding)
    again = commands.add_parser("report", help="print the table and draw the plot of a finished run again")
    again.add_argument("dir", type=Path)
    return parser


def _argv(argv: Sequence[str] | None) -> list[str]:
    """`run` is the default command: `peak.py --users 8` is `peak.py run --users 8`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("run", "seed", "report"):
        args.insert(0, "run")
    return args


def _run_dir(args: argparse.Namespace) -> Path:
    out: Path = args.out or OUT_DIR / f"peak-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def _locust_run(args: argparse.Namespace, recalls: int) -> LocustRun:
    spawn_rate = args.spawn_rate or max(1.0, args.users / 2)
    processes = (os.cpu_count() or 1) if args.processes == -1 else args.processes
    return LocustRun(
        args.users, spawn_rate, args.duration, processes, args.expect_workers, args.duration / (recalls + 1),
        args.master_port, tuple(args.only or ()),
    )  # fmt: skip


def print_generator_limit(out: Path) -> None:
    """Say so when locust warned that a process of its own ran out of CPU: then it, not the server, set the pace."""
    log = out / "locust.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    if CPU_WARNING in text:
        print(
            "locust warned that its CPU was above 90 %: the load generator limited this run (its latencies include "
            "its own queueing); spread it with --processes, or workers on other machines (bench/PEAK.md)"
        )


def _finish(out: Path, ledger: dict[str, Any], durability: Durability, title: str, server_view: str) -> int:
    report(out, ledger, title)
    print(server_view)
    print_failures(out)
    print_generator_limit(out)
    print(durability.describe())
    print(f"run folder: {out}")
    return 1 if durability.is_ok is False else 0


async def run_local(args: argparse.Namespace, size: SeedSize) -> int:
    out = _run_dir(args)
    admin_token = secrets.token_urlsafe(32)
    print(f"peak-day suite: {describe_machine()}")
    async with bench_database() as database:
        env = dict(os.environ) | {
            "DATABASE_URL": database.url, "REDIS_URL": database.redis_url,
            "TRACECODE_SECRET": secrets.token_urlsafe(32), "TRACECODE_ADMIN_TOKEN": admin_token,
            # Every simulated consumer comes from this one address, whose mistyped codes would add up past the
            # per-client limit on bad lookups within seconds: a load test is not one client walking the codes.
            "TRACECODE_BAD_LOOKUP_LIMIT": "0",
        }  # fmt: skip
        print(
            f"  database {database.name}, Redis {database.redis_url}; starting {args.workers} {args.server} workers ..."
        )
        async with ServerProcess(
            server=args.server, workers=args.workers, env=env, log_path=out / "server.log"
        ) as server:
            data = await seed(server.url, admin_token, size, out / SEED_FILE)
            before = await count_entries(database.url, data["markets"])
            counters = await server_counters(server.url)
            run = _locust_run(args, size.recalls)
            ledger = await run_locust(run, server.url, out / SEED_FILE, out)
            stored = await count_entries(database.url, data["markets"]) - before
            server_view = describe_counters(counters, await server_counters(server.url))
    counts = Counter(ledger["counts"])
    durability = Durability(counts["gate_scans_accepted"], counts["gate_scans_in_doubt"], stored)
    title = (
        f"peak day: {run.users} users, {run.duration_s} s, {size.codes:,} codes; server {args.workers} "
        f"{args.server} workers on this machine; locust {run.processes} process(es)"
    )
    return _finish(out, ledger, durability, title, server_view)


async def run_remote(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.seed is None or not args.seed.exists():
        parser.error("--host needs --seed FILE, written by `bench/peak.py seed --host URL --admin-token T`")
    out = _run_dir(args)
    seed_path = args.seed.resolve()
    data = json.loads(seed_path.read_text())
    recalls = sum(1 for b in data["batches"] if b.get("is_recall"))
    print(f"peak-day suite against {args.host} (seeded {data['created_at']}), locust on {describe_machine()}")
    before = await count_entries(args.database_url, data["markets"]) if args.database_url else None
    counters = await server_counters(args.host)
    run = _locust_run(args, recalls)
    ledger = await run_locust(run, args.host.rstrip("/"), seed_path, out)
    server_view = describe_counters(counters, await server_counters(args.host))
    stored = None
    if args.database_url and before is not None:
        stored = await count_entries(args.database_url, data["markets"]) - before
    counts = Counter(ledger["counts"])
    durability = Durability(counts["gate_scans_accepted"], counts["gate_scans_in_doubt"], stored)
    where = f"{run.expect_workers} workers" if run.expect_workers else f"{run.processes} process(es)"
    title = f"peak day against {args.host}: {run.users} users, {run.duration_s} s; locust {where}"
    return _finish(out, ledger, durability, title, server_view)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_argv(argv))
    if args.command == "report":
        ledger = json.loads((args.dir / LEDGER_FILE).read_text())
        report(args.dir, ledger, f"peak day: {args.dir.name}")
        return 0
    size = _size(args, parser)
    if args.command == "seed":
        if not args.admin_token:
            parser.error("seed needs --admin-token (or TRACECODE_ADMIN_TOKEN)")
        asyncio.run(seed(args.host.rstrip("/"), args.admin_token, size, args.out))
        return 0
    if args.users < 1 or args.duration < 1 or args.workers < 1:
        parser.error("--users, --duration and --workers must be positive")
    if args.host is not None:
        return asyncio.run(run_remote(args, parser))
    return asyncio.run(run_local(args, size))


if __name__ == "__main__":
    raise SystemExit(main())
