"""The benchmark's own data: a fresh database with producers, batches and their package codes.

`bench_dataset()` finds Postgres and Redis the way the product does (DATABASE_URL and REDIS_URL,
else the usual local ports, else embedded servers it starts), creates a database of its own,
migrates it, and seeds it through the product's own functions: batches with
`resolver.api.registry.add_batch`, package codes (type 4) with `resolver.api.labels.issue_labels`, one labels
request per batch as a print run would be (so the codes are stored however the product stores
them: rows or ranges). It seeds the main batch with `code_count` package codes (its product has the GTIN
BENCH_GTIN and its lot is one GS1 allows, so that it has a Digital Link URI), and groups of
further batches (`groups`: name -> the package codes of each batch, 0 for none), so that a phase
can ask each of its codes exactly once. Nothing is ever inserted into the code tables here.
Redis database BENCH_REDIS_DB is flushed before and after. The database is dropped at the end.
`bench_database()` is the same without the seed: an empty, migrated database (the peak-day suite
seeds its own through the API).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from codegen.creditcode import ALPHABET, make_credit_code
from codegen.digitallink import digital_link_path
from codegen.format import parse
from resolver import db, queries
from resolver.api.issuer import CodeIssuer
from resolver.api.labels import MAX_LABELS_PER_REQUEST, find_batch, issue_labels
from resolver.api.registry import add_batch
from resolver.edge.bodies import BatchIn
from resolver.ops.embedded import ensure_services
from resolver.ops.settings import Settings
from resolver.scan.documents import CHINA_TZ
from schema.migrate import migrate

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The benchmark flushes this Redis database only (the tests use 9); give concurrent benchmarks different ones.
BENCH_REDIS_DB = int(os.environ.get("TRACECODE_BENCH_REDIS_DB", "8"))
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
PORT_PROBE_TIMEOUT_S = 0.5
REGION = "630121"  # 大通回族土族自治县, Xining: the demo's yak county
CODE_PARTITIONS = 16
PRODUCT_NAME = "大通牦牛肉"
BENCH_GTIN = "06950000000019"  # the main batch's product (GS1 China prefix 695); no other batch's has one
PRODUCER_NAME = "大通县高原牦牛养殖专业合作社（压测）"
BATCHES_PER_PRODUCER = 100  # a cooperative's batches; the long form's 3-digit sequence wraps at 1,000
SEED_CONCURRENCY = 4  # batches and labels requests seeded at once (3.5-5 ms a batch on 2 cores, CPU-bound)
SEED_POOL_SIZE = SEED_CONCURRENCY + 1


@dataclass(frozen=True, slots=True)
class SeededBatch:
    """A production batch (type 1 code) and its package codes (type 4) in sequence order, none resolved yet."""

    trace_code: str
    package_codes: list[str]


@dataclass(frozen=True, slots=True)
class Dataset:
    """What the phases ask for; the database and Redis URLs are the server's settings."""

    database_url: str
    redis_url: str
    database_name: str
    secret: str
    batch_code: str  # the main production batch code (type 1)
    package_codes: list[str]  # the main batch's, type 4, in sequence order, none resolved yet
    digital_link: str  # the main batch's GS1 Digital Link path, /01/{gtin}/10/{lot}
    groups: Mapping[str, list[SeededBatch]] = field(default_factory=dict)  # further batches, by the name asked

    @property
    def warm_code(self) -> str:
        """The package code that the warm phases ask for over and over (no other phase does)."""
        return self.package_codes[0]

    @property
    def hot_codes(self) -> list[str]:
        """The main batch's other package codes."""
        return self.package_codes[1:]

    @property
    def malformed_code(self) -> str:
        """The warm code with its check digits off by one: well-formed length, wrong check."""
        code = self.warm_code
        return code[:18] + f"{(int(code[18:]) + 1) % 100:02d}"


def is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PORT_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _with_redis_db(url: str, number: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
        return urlunsplit(parts._replace(query=f"{query}&db={number}".lstrip("&")))
    return urlunsplit(parts._replace(path=f"/{number}"))


def _random_credit_code() -> str:
    return make_credit_code("93" + REGION + "".join(secrets.choice(ALPHABET) for _ in range(9)))


def _batch_body(credit_code: str, today: dt.date, gtin: str | None = None) -> BatchIn:
    """A batch like the demo's yak meat, with inspection and certificate: a document of the real size; its lot
    is one GS1 allows (AI 10)."""

    def days_ago(n: int) -> str:
        return (today - dt.timedelta(days=n)).isoformat()

    return BatchIn.model_validate(
        {
            "producer_credit_code": credit_code,
            "product": {"name": PRODUCT_NAME, "category": "yak", "gtin": gtin},
            "lot": f"BENCH-YAK-{secrets.token_hex(3).upper()}",
            "quantity": 1200,
            "unit": "kg",
            "produced_on": days_ago(6),
            "expires_on": (today + dt.timedelta(days=180)).isoformat(),
            "origin": "大通县宝库乡",
            "inspection": {
                "result": "pass",
                "method": "快速检测",
                "agency": "县农产品质量安全检测站",
                "items": ["克伦特罗", "莱克多巴胺", "沙丁胺醇"],
                "inspected_on": days_ago(5),
            },
            "certificate": {"kind": "承诺达标合格证", "basis": "self_test", "issued_on": days_ago(4)},
        }
    )


async def _add_producer(pool: asyncpg.Pool, today: dt.date) -> asyncpg.Record:
    """A cooperative of REGION with a green-food certification; its PRODUCER_BY_CREDIT_CODE row."""
    credit_code = _random_credit_code()
    await pool.execute(queries.INSERT_PRODUCER, credit_code, PRODUCER_NAME, "cooperative", REGION, "0971-2721001", [])
    producer = await pool.fetchrow(queries.PRODUCER_BY_CREDIT_CODE, credit_code)
    assert producer is not None
    await pool.execute(
        queries.DEMO_CERTIFICATION, "green", f"LB-BENCH-{secrets.token_hex(4)}", producer["id"],
        today - dt.timedelta(days=200), today + dt.timedelta(days=900),
    )  # fmt: skip
    return producer


async def _gather_bounded(jobs: Sequence[Awaitable[T]], limit: int) -> list[T]:
    """The results of `jobs` in their order, at most `limit` of them running at once."""
    gate = asyncio.Semaphore(limit)

    async def bounded(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return await asyncio.gather(*(bounded(job) for job in jobs))


async def add_batches(pool: asyncpg.Pool, issuer: CodeIssuer, count: int, *, gtin: str | None = None) -> list[str]:
    """Register `count` batches through resolver.api.registry.add_batch, BATCHES_PER_PRODUCER per cooperative,
    their product with `gtin`; their codes (type 1), in the order registered."""
    today = dt.datetime.now(CHINA_TZ).date()
    producers = [await _add_producer(pool, today) for _ in range(-(-count // BATCHES_PER_PRODUCER))]
    owners = [producers[i // BATCHES_PER_PRODUCER] for i in range(count)]
    jobs = [add_batch(pool, issuer, owner, _batch_body(owner["credit_code"], today, gtin)) for owner in owners]
    return [issued.trace_code for issued in await _gather_bounded(jobs, SEED_CONCURRENCY)]


async def issue_package_codes(pool: asyncpg.Pool, secret: bytes, batch_code: str, count: int) -> list[str]:
    """`count` package codes of the batch `batch_code` through resolver.api.labels.issue_labels, in as few labels
    requests as its limit allows (one for any print run up to MAX_LABELS_PER_REQUEST); the codes in sequence
    order. No request for 0."""
    issuer = CodeIssuer(secret)
    batch = await find_batch(pool, batch_code)
    codes: list[str] = []
    for start in range(0, count, MAX_LABELS_PER_REQUEST):
        issued = await issue_labels(pool, issuer, secret, batch, min(MAX_LABELS_PER_REQUEST, count - start))
        codes.extend(issued.codes())
    return codes


async def seed_batches(
    pool: asyncpg.Pool, secret: bytes, label_runs: Sequence[int], *, gtin: str | None = None
) -> list[SeededBatch]:
    """One batch for each of `label_runs`, with that many package codes (0: none), its product with `gtin`; in the
    order of `label_runs`."""
    trace_codes = await add_batches(pool, CodeIssuer(secret), len(label_runs), gtin=gtin)
    jobs = [issue_package_codes(pool, secret, code, n) for code, n in zip(trace_codes, label_runs, strict=True)]
    codes = await _gather_bounded(jobs, SEED_CONCURRENCY)
    return [SeededBatch(code, package_codes) for code, package_codes in zip(trace_codes, codes, strict=True)]


async def _flush(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def _service_urls() -> tuple[str | None, str | None]:
    """The configured URLs, else the local servers on their usual ports, else None (start an embedded one)."""
    database_url = os.environ.get("DATABASE_URL") or None
    if database_url is None and is_listening("127.0.0.1", 5432):
        database_url = LOCAL_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or None
    if redis_url is None and is_listening("127.0.0.1", 6379):
        redis_url = LOCAL_REDIS_URL
    return database_url, redis_url


@dataclass(frozen=True, slots=True)
class BenchDatabase:
    """A migrated, empty database of the benchmark's own and its Redis database."""

    url: str
    redis_url: str
    name: str
    admin_url: str  # the server's maintenance database


@asynccontextmanager
async def bench_database() -> AsyncIterator[BenchDatabase]:
    """A migrated database of its own and a flushed Redis database (BENCH_REDIS_DB), both removed afterwards."""
    settings = Settings.from_env()
    database_url, redis_url = _service_urls()
    admin_url, server_redis_url, embedded = await asyncio.to_thread(
        ensure_services, settings.data_dir, database_url, redis_url
    )
    name = f"tracecode_bench_{secrets.token_hex(4)}"
    redis_url = _with_redis_db(server_redis_url, BENCH_REDIS_DB)
    try:
        admin = await db.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = _with_database(admin_url, name)
        try:
            conn = await db.connect(url)
            try:
                await migrate(conn, code_partitions=CODE_PARTITIONS)
            finally:
                await conn.close()
            try:
                await _flush(redis_url)
            except ResponseError as exc:
                raise RuntimeError(
                    f"Redis database {BENCH_REDIS_DB} cannot be used ({exc}): set TRACECODE_BENCH_REDIS_DB to one "
                    "that exists (0 to 15 on a default Redis)"
                ) from exc
            yield BenchDatabase(url, redis_url, name, admin_url)
        finally:
            try:
                await _flush(redis_url)
            except Exception as exc:  # the database must go even when Redis cannot be flushed
                logger.warning("Redis %s not flushed after the benchmark: %r", redis_url, exc)
            admin = await db.connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


@asynccontextmanager
async def bench_dataset(
    code_count: int, *, groups: Mapping[str, Sequence[int]] | None = None
) -> AsyncIterator[Dataset]:
    """A migrated, seeded database of its own and a flushed Redis database, both removed afterwards.

    The main batch gets `code_count` package codes; each group of `groups` (name -> package codes of each of its
    batches) gets batches of its own, seeded after the main batch, group by group in the order given.
    """
    secret = secrets.token_urlsafe(32)
    async with bench_database() as database:
        pool = await db.create_pool(database.url, min_size=1, max_size=SEED_POOL_SIZE)
        try:
            (main,) = await seed_batches(pool, secret.encode(), [code_count], gtin=BENCH_GTIN)
            seeded = {name: await seed_batches(pool, secret.encode(), runs) for name, runs in (groups or {}).items()}
            await pool.execute("ANALYZE")
            labelled = await find_batch(pool, main.trace_code)
        finally:
            await pool.close()
        assert labelled.gtin == BENCH_GTIN
        digital_link = digital_link_path(labelled.gtin, labelled.lot)  # ValueError if the lot were not AI 10's
        assert not main.package_codes or parse(main.package_codes[0]) == main.package_codes[0]
        await _flush(database.redis_url)
        yield Dataset(
            database.url, database.redis_url, database.name, secret, main.trace_code, main.package_codes,
            digital_link, seeded,
        )  # fmt: skip
