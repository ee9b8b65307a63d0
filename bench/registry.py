"""Registry benchmark: CSV import of 100,000 producers (and as many certifications), and the coverage
query of a county, a prefecture and a province over them.

    .venv/bin/python bench/registry.py [--producers N] [--runs R]

Runs against a database of its own, created on the Postgres that DATABASE_URL names (else the local
one on 127.0.0.1:5432, else an embedded server it starts) and dropped at the end. The producers are
spread over Qinghai's counties, a tenth of them in 大通县 (630121); three in five are enterprises or
cooperatives (the kinds coverage counts), and three in four of those had codes issued within the
last 20 months, so that some are traced and some have lapsed.

Import: `resolver.api.imports.run_import`, the work the API and `tracecode import` share (parse and check
in Python, COPY into a staging table, set-based checks, insert), timed from the CSV bytes to the
commit. Coverage: the API handler, in process (ASGI, no network), p50 and p95 over R runs, with and
without `?breakdown=1`; then the plan of the province query, which must be one index-only scan.

Dated coverage and designations (issue 14): each traced producer gets a history as batch registrations would have
left it (a product, a batch on its last issue day, and issue days about monthly before it), then
`?at=` coverage of the county, prefecture and province a year ago, and `GET /api/v1/designations` of the province
with DESIGNATIONS designations over its counties, each reviewed at its own day (p50 and p95 likewise).

Exhibitor check (fairs, issue 14 item 5): the API handler with a CSV of 1,000 exhibitor products (a tenth from
unregistered producers, the rest from the 100,000 with one of three product names, some of which they have) against
a batch per certified product of a producer with codes, p50 and p95 over R runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from dataset import LOCAL_DATABASE_URL, is_listening
from starlette.applications import Starlette

from cache.store import redis_client
from codegen.creditcode import ALPHABET, make_credit_code
from resolver import db
from resolver.api import designations, fairs, hooks
from resolver.api.imports import ImportKind, run_import
from resolver.app import build_worker
from resolver.categories import PRODUCER_TAG_LABELS
from resolver.edge import problems
from resolver.ops.embedded import EmbeddedServices, ensure_services
from resolver.ops.metrics import Metrics
from resolver.ops.settings import Settings
from resolver.state import attach
from schema.migrate import migrate
from schema.regions import load_regions

UNUSED_REDIS_URL = "redis://127.0.0.1:1"  # the worker's Redis client, never connected: coverage reads Postgres alone
CODE_PARTITIONS = 16
DEFAULT_PRODUCERS = 100_000
DEFAULT_RUNS = 200
WARMUP_RUNS = 10
PROVINCE, PREFECTURE, COUNTY = "630000", "630100", "630121"  # 青海省, 西宁市, 大通县
COUNTY_SHARE = 0.10
KINDS = (("enterprise", 0.2), ("cooperative", 0.4), ("family_farm", 0.3), ("individual", 0.1))
TRACED_SHARE = 0.75  # of the counted kinds, had codes issued at some time in the last ISSUED_WITHIN_MONTHS
EXHIBITOR_ROWS = 1_000
EXHIBITOR_UNREGISTERED_SHARE = 0.1  # rows of producers the platform never heard of
BENCH_ADMIN_TOKEN = "bench-admin"
ISSUED_WITHIN_MONTHS = 20
SEED = 20_191_021  # 青农质〔2019〕21号
DESIGNATIONS = 100
HISTORY_MONTHS = 11  # issue days about monthly, up to this many before a producer's last one
BENCH_ADMIN_TOKEN = "bench-admin-" + secrets.token_hex(8)


def _database_url() -> tuple[str, EmbeddedServices | None]:
    """A maintenance DSN and whatever has to be stopped at the end (embedded servers) or None."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    if is_listening("127.0.0.1", 5432):
        return LOCAL_DATABASE_URL, None
    data_dir = Path(tempfile.mkdtemp(prefix="tracecode-bench-registry-"))
    database_url, _, embedded = ensure_services(data_dir, None, "redis://unused")
    return database_url, embedded


def _producers_csv(count: int, rng: random.Random) -> tuple[bytes, list[str]]:
    counties = [r.code for r in load_regions() if r.province_code == PROVINCE and r.level == 3]
    others = [c for c in counties if c != COUNTY]
    kinds = [kind for kind, _ in KINDS]
    weights = [weight for _, weight in KINDS]
    seen: set[str] = set()
    out = io.StringIO()
    out.write("credit_code,name,kind,region_code,contact\r\n")
    for i in range(count):
        region = COUNTY if rng.random() < COUNTY_SHARE else rng.choice(others)
        while True:
            code = make_credit_code("93" + region + "".join(rng.choice(ALPHABET) for _ in range(9)))
            if code not in seen:
                seen.add(code)
                break
        kind = rng.choices(kinds, weights)[0]
        out.write(f"{code},青海高原生态农牧业专业合作社{i:06d},{kind},{region},0971-{rng.randrange(10**7):07d}\r\n")
    return out.getvalue().encode(), sorted(seen)


def _certifications_csv(credit_codes: list[str], rng: random.Random) -> bytes:
    out = io.StringIO()
    out.write("kind,number,credit_code,product_name,product_category,valid_from,valid_to\r\n")
    for i, code in enumerate(credit_codes):
        kind = rng.choice(("green", "organic", "gi"))
        product = ("高原牦牛肉,yak" if i % 2 else ",") if kind != "gi" else "柴达木枸杞,goji"
        out.write(f"{kind},BENCH-{i:07d},{code},{product},2024-01-01,2029-12-31\r\n")
    return out.getvalue().encode()


async def _timed_import(conn: asyncpg.Connection, kind: ImportKind, data: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    report = await run_import(conn, kind, data)
    elapsed = time.perf_counter() - started
    if report.error_count or report.imported != report.rows:
        raise SystemExit(f"{kind}: {report.error_count} errors, {report.imported} of {report.rows} imported")
    return report.rows, elapsed


async def _issue_codes(conn: asyncpg.Connection) -> None:
    """Stand-in for batch registrations: set last_issued_at as they would have left it, then vacuum."""
    await conn.execute("SELECT setseed($1)", SEED / 10**8)
    await conn.execute(
        """
        UPDATE producers SET last_issued_at = now() - random() * make_interval(months => $2)
         WHERE kind IN ('enterprise', 'cooperative') AND random() < $1
        """,
        TRACED_SHARE,
        ISSUED_WITHIN_MONTHS,
    )
    await conn.execute("VACUUM (ANALYZE) producers")  # a settled table: the visibility map lets scans stay index-only


async def _coverage_timings(pool: asyncpg.Pool, runs: int) -> list[list[str]]:
    app = Starlette(
        routes=hooks.ROUTES,
        exception_handlers={problems.Problem: problems.handle_problem, Exception: problems.handle_unexpected},
    )
    redis = redis_client(UNUSED_REDIS_URL)
    attach(app, build_worker(Settings(), Metrics(), pool, redis))  # no lifespan: no task, no connection to Redis
    rows = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for label, code in (("county", COUNTY), ("prefecture", PREFECTURE), ("province", PROVINCE)):
            for breakdown in (False, True):
                url = f"/api/v1/regions/{code}/coverage" + ("?breakdown=1" if breakdown else "")
                samples = []
                for i in range(WARMUP_RUNS + runs):
                    started = time.perf_counter()
                    response = await client.get(url)
                    if i >= WARMUP_RUNS:
                        samples.append((time.perf_counter() - started) * 1000)
                body = response.json()
                assert response.status_code == 200, body
                samples.sort()
                rows.append([
                    f"{label} {code}" + (" + breakdown" if breakdown else ""),
                    f"{statistics.median(samples):.2f}",
                    f"{samples[int(len(samples) * 0.95) - 1]:.2f}",
                    f"{body['registered']:,}",
                    f"{body['traced']:,}",
                    str(len(body.get("counties", []))) if breakdown else "",
                ])  # fmt: skip
    await redis.aclose()
    return rows


async def _register_history(conn: asyncpg.Connection) -> None:
    """Products, batches and issue days as registrations would have left them, for every producer _issue_codes
    marked: its certified products plus one of its own, a batch of each on its last issue day, and issue days
    about monthly before it (the trigger of migration 0013 wrote the last one)."""
    await conn.execute("SELECT setseed($1)", SEED / 10**8 / 2)
    # Registered over the three years before, products with their producers (a dated answer counts them then).
    await conn.execute("UPDATE producers SET created_at = now() - random() * interval '3 years'")
    await conn.execute("UPDATE products pd SET created_at = p.created_at FROM producers p WHERE p.id = pd.producer_id")
    # A few leading enterprises (one in fifty enterprises) and state farms (one in a thousand producers): tagged.
    await conn.execute(
        """
        UPDATE producers SET tags = CASE WHEN kind = 'enterprise' AND random() < 0.02 THEN '{leading_enterprise}'
                                         WHEN random() < 0.001 THEN '{state_farm}' ELSE '{}' END::text[]
        """
    )
    await conn.execute(
        """
        INSERT INTO products (producer_id, name, category, created_at)
        SELECT p.id, '高原牦牛肉（自产）', 'yak', p.created_at FROM producers p WHERE p.last_issued_at IS NOT NULL
        """
    )
    await conn.execute(
        """
        INSERT INTO batches (producer_id, product_id, trace_code, long_code, lot, quantity, unit, produced_on,
                             created_at)
        SELECT p.id, pd.id, lpad(pd.id::text, 20, '0'), 'BENCH-' || pd.id, 'L1', 100, 'kg',
               (p.last_issued_at AT TIME ZONE 'Asia/Shanghai')::date, p.last_issued_at
          FROM producers p JOIN products pd ON pd.producer_id = p.id
         WHERE p.last_issued_at IS NOT NULL
        """
    )
    await conn.execute(
        """
        INSERT INTO producer_issue_days (producer_id, issued_on)
        SELECT p.id, (p.last_issued_at AT TIME ZONE 'Asia/Shanghai')::date - 30 * k
          FROM producers p CROSS JOIN generate_series(1, $1) k
         WHERE p.last_issued_at IS NOT NULL AND random() < 0.8
        ON CONFLICT DO NOTHING
        """,
        HISTORY_MONTHS,
    )
    for table in ("products", "batches", "producer_issue_days", "producers"):
        await conn.execute(f"VACUUM (ANALYZE) {table}")


async def _add_designations(conn: asyncpg.Connection, rng: random.Random) -> None:
    """DESIGNATIONS designations over the province's counties, reviewed on days of the last three years."""
    counties = [r.code for r in load_regions() if r.province_code == PROVINCE and r.level == 3]
    today = dt.date.today()
    rows = []
    for i in range(DESIGNATIONS):
        review_on = today - dt.timedelta(days=rng.randrange(1, 3 * 365))
        kind = rng.choice(("quality_safety_county", "demonstration_zone", "other"))
        rows.append((rng.choice(counties), kind, f"创建认定{i:03d}", review_on - dt.timedelta(days=3 * 365), review_on))
    await conn.executemany(
        "INSERT INTO designations (region_code, kind, name, designated_on, review_on) VALUES ($1, $2, $3, $4, $5)",
        rows,
    )


async def _dated_timings(pool: asyncpg.Pool, runs: int) -> list[list[str]]:
    """?at= coverage a year ago, and the designations' review list of the province."""
    app = Starlette(
        routes=[*hooks.ROUTES, *designations.ROUTES],
        exception_handlers={problems.Problem: problems.handle_problem, Exception: problems.handle_unexpected},
    )
    redis = redis_client(UNUSED_REDIS_URL)
    attach(app, build_worker(Settings(admin_token=BENCH_ADMIN_TOKEN), Metrics(), pool, redis))
    year_ago = (dt.date.today() - dt.timedelta(days=365)).isoformat()
    requests = [
        *((f"?at= {label} {code}", f"/api/v1/regions/{code}/coverage?at={year_ago}")
          for label, code in (("county", COUNTY), ("prefecture", PREFECTURE), ("province", PROVINCE))),
        (f"designations {PROVINCE} ({DESIGNATIONS}, each at its review day)",
         f"/api/v1/designations?region={PROVINCE}"),
        (f"designations {PROVINCE} ({DESIGNATIONS}, ?at= one day)",
         f"/api/v1/designations?region={PROVINCE}&at={year_ago}"),
    ]  # fmt: skip
    rows = []
    headers = {"Authorization": f"Bearer {BENCH_ADMIN_TOKEN}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        for label, url in requests:
            samples = []
            for i in range(WARMUP_RUNS + runs):
                started = time.perf_counter()
                response = await client.get(url, headers=headers)
                if i >= WARMUP_RUNS:
                    samples.append((time.perf_counter() - started) * 1000)
            body = response.json()
            assert response.status_code == 200, body
            samples.sort()
            if "items" in body:
                keep = sum(item["verdict"] == "keep" for item in body["items"])
                figures = [f"{len(body['items'])} items", f"{keep} keep"]
            else:
                figures = [f"{body['registered']:,} / {body['products_registered']:,}",
                           f"{body['traced']:,} / {body['products_traced']:,}"]  # fmt: skip
            rows.append([label, f"{statistics.median(samples):.2f}", f"{samples[int(len(samples) * 0.95) - 1]:.2f}",
                         *figures])  # fmt: skip
    await redis.aclose()
    return rows


async def _exhibitor_batches(conn: asyncpg.Connection) -> None:
    """Stand-in for batch registrations of the products the certifications import made: one batch per product of
    a producer with codes issued, registered when its producer last had codes, so that the exhibitor check finds
    traced and lapsed products (a check against products with no batch at all would flatter it)."""
    await conn.execute(
        """
        INSERT INTO batches (producer_id, product_id, trace_code, long_code, lot, quantity, unit, produced_on,
                             created_at)
        SELECT pd.producer_id, pd.id, '1' || lpad(pd.id::text, 19, '0'), 'BENCH' || pd.id, 'L1', 1, 'kg',
               p.last_issued_at::date, p.last_issued_at
          FROM products pd JOIN producers p ON p.id = pd.producer_id
         WHERE p.last_issued_at IS NOT NULL
        """
    )
    await conn.execute("VACUUM (ANALYZE) batches, products")


def _exhibitors_csv(credit_codes: list[str], rng: random.Random) -> bytes:
    """EXHIBITOR_ROWS rows: registered producers with a product they have, or not, and some unregistered ones."""
    out = io.StringIO()
    out.write("credit_code,product_name\r\n")
    for _ in range(EXHIBITOR_ROWS):
        if rng.random() < EXHIBITOR_UNREGISTERED_SHARE:
            code = make_credit_code("91" + COUNTY + "".join(rng.choice(ALPHABET) for _ in range(9)))
        else:
            code = rng.choice(credit_codes)
        out.write(f"{code},{rng.choice(('高原牦牛肉', '柴达木枸杞', '青稞'))}\r\n")
    return out.getvalue().encode()


async def _exhibitor_timings(pool: asyncpg.Pool, credit_codes: list[str], rng: random.Random, runs: int) -> list[str]:
    """POST /api/v1/fairs/{id}/exhibitors with EXHIBITOR_ROWS CSV rows, in process: p50 and p95 over `runs`."""
    app = Starlette(
        routes=fairs.ROUTES,
        exception_handlers={problems.Problem: problems.handle_problem, Exception: problems.handle_unexpected},
    )
    redis = redis_client(UNUSED_REDIS_URL)
    attach(app, build_worker(Settings(admin_token=BENCH_ADMIN_TOKEN), Metrics(), pool, redis))
    fair = await pool.fetchrow(fairs.INSERT_FAIR, "中国绿色食品博览会", "national", dt.date(2026, 11, 20),
                               dt.date(2026, 11, 23))  # fmt: skip
    assert fair is not None
    body = _exhibitors_csv(credit_codes, rng)
    headers = {"Authorization": f"Bearer {BENCH_ADMIN_TOKEN}", "Content-Type": "text/csv"}
    samples = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for i in range(WARMUP_RUNS + runs):
            started = time.perf_counter()
            response = await client.post(f"/api/v1/fairs/{fair['id']}/exhibitors", content=body, headers=headers)
            if i >= WARMUP_RUNS:
                samples.append((time.perf_counter() - started) * 1000)
    await redis.aclose()
    answer = response.json()
    assert response.status_code == 200, answer
    samples.sort()
    return [
        f"{EXHIBITOR_ROWS:,} rows (CSV), national fair",
        f"{statistics.median(samples):.2f}",
        f"{samples[int(len(samples) * 0.95) - 1]:.2f}",
        f"{answer['admitted']:,}",
        f"{answer['refused']:,}",
    ]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


async def _plan(conn: asyncpg.Connection) -> list[str]:
    plan: list[str] = [
        r[0]
        for r in await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + hooks.COVERAGE_BY_REGION,
            PROVINCE,
            list(hooks.COUNTED_KINDS),
            list(PRODUCER_TAG_LABELS),
            *reversed(hooks.window(None)),
        )  # fmt: skip
    ]
    return plan


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--producers", type=int, default=DEFAULT_PRODUCERS)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    args = parser.parse_args(argv)
    rng = random.Random(SEED)
    admin_dsn, embedded = _database_url()
    name = f"tracecode_bench_registry_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
    try:
        conn = await db.connect(url)
        try:
            await migrate(conn, code_partitions=CODE_PARTITIONS)
            producers_csv, credit_codes = _producers_csv(args.producers, rng)
            certifications_csv = _certifications_csv(credit_codes, rng)
            imported = [
                ("producers", *await _timed_import(conn, "producers", producers_csv), len(producers_csv)),
                ("certifications", *await _timed_import(conn, "certifications", certifications_csv),
                 len(certifications_csv)),
            ]  # fmt: skip
            await _issue_codes(conn)
            await _register_history(conn)
            await _add_designations(conn, rng)
            await _exhibitor_batches(conn)
            plan = await _plan(conn)
        finally:
            await conn.close()
        pool = await db.create_pool(url, min_size=1, max_size=2)
        try:
            coverage = await _coverage_timings(pool, args.runs)
            exhibitors = await _exhibitor_timings(pool, credit_codes, rng, args.runs)
            dated = await _dated_timings(pool, args.runs)
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        if embedded is not None:
            embedded.stop()
    server = await _server_version(admin_dsn) if embedded is None else "embedded"
    print(f"registry benchmark: {args.producers:,} producers, Postgres {server}, Python {sys.version.split()[0]}\n")
    print(_table(
        ["import (CSV to committed rows)", "rows", "MiB", "seconds", "rows/s"],
        [[kind, f"{rows:,}", f"{size / 2**20:.1f}", f"{seconds:.2f}", f"{rows / seconds:,.0f}"]
         for kind, rows, seconds, size in imported],
    ))  # fmt: skip
    print()
    print(
        _table(
            ["GET /api/v1/regions/{code}/coverage", "p50 ms", "p95 ms", "registered", "traced", "counties"], coverage
        )
    )
    print()
    print(_table(["POST /api/v1/fairs/{id}/exhibitors", "p50 ms", "p95 ms", "admitted", "refused"], [exhibitors]))
    print(f"\n(p50/p95 over {args.runs} requests each, in process; registered = enterprises and cooperatives)")
    print()
    print(_table(["dated coverage and designations", "p50 ms", "p95 ms", "registered / products",
                  "traced / products"], dated))  # fmt: skip
    print("\nplan of the province query (EXPLAIN ANALYZE):")
    print("\n".join("  " + line for line in plan))
    if not any("Index Only Scan using producers_region_kind_idx" in line for line in plan):
        print("\nWARNING: the coverage query did not use an index-only scan of producers_region_kind_idx")
        return 1
    return 0


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
