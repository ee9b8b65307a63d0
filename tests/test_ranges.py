"""Package codes as ranges (resolver.scan.ranges, migration 0009): found by their range, one document per batch, scan
counters only for scanned codes, and the move of package rows from trace_codes."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from cache import keys
from cache.store import DocumentCache, Fetched
from codegen.format import CodeType, region_of
from codegen.permute import issue_one
from resolver.api import labels
from resolver.api.issuer import CodeIssuer
from resolver.app import create_app
from resolver.ops.settings import Settings
from resolver.state import app_worker
from schema.migrate import MigrationError, migrate
from tests.conftest import SESSION_SECRET, Servers, Service, create_database, drop_database
from tests.helpers import issue_labels, next_package_code, package_code, register_batch, serving, subprocess_env


async def _status(service: Service, code: str) -> int:
    return (await service.client.get(f"/api/v1/codes/{code}")).status_code


async def test_the_first_and_last_code_of_a_range_resolve_and_its_neighbours_do_not(service: Service) -> None:
    batch = await register_batch(service)
    first, *_, last = await issue_labels(service, batch["trace_code"], 5)
    region, ranges = region_of(first), app_worker(service.app).ranges
    after_last = next_package_code(service, last)

    answers = [(await service.client.get(f"/api/v1/codes/{code}")).json() for code in (first, last)]

    assert [(a["code"], a["type"], a["batch"]["trace_code"]) for a in answers] == [
        (first, "package", batch["trace_code"]),
        (last, "package", batch["trace_code"]),
    ]
    assert await _status(service, after_last) == 404
    if ranges.seq_of(first) > 0:  # the code before: an earlier request's (another batch), or a gap
        before_first = package_code(service, region, ranges.seq_of(first) - 1)
        owner = await app_worker(service.app).pool.fetchval(
            "SELECT batch_id FROM tracecode_package_range($1, $2)", region, ranges.seq_of(before_first)
        )
        assert owner != batch["batch_id"]
        assert await _status(service, before_first) == (404 if owner is None else 200)


async def test_a_gap_between_two_ranges_is_never_issued(service: Service) -> None:
    batch = await register_batch(service)
    state = app_worker(service.app)
    region = region_of(batch["trace_code"])
    before = await issue_labels(service, batch["trace_code"], 3)
    gap_start = await state.issuer.reserve(state.pool, CodeType.PACKAGE, region, 4)  # reserved, never stored
    after = await issue_labels(service, batch["trace_code"], 3)
    gap = [package_code(service, region, gap_start + i) for i in range(4)]

    statuses = [await _status(service, code) for code in [*before, *gap, *after]]

    assert statuses == [200] * 3 + [404] * 4 + [200] * 3
    assert state.ranges.seq_of(after[0]) == gap_start + 4


async def test_a_range_issued_on_another_worker_a_moment_ago_resolves(
    service: Service, second_service: Service
) -> None:
    batch = await register_batch(service)
    (earlier,) = await issue_labels(service, batch["trace_code"], 1)
    assert await _status(second_service, earlier) == 200  # the second worker now knows the region's ranges

    fresh = await issue_labels(service, batch["trace_code"], 2)  # issued by the first worker

    assert [await _status(second_service, code) for code in fresh] == [200, 200]
    assert repr(app_worker(second_service.app).ranges).endswith("probed=2)")  # one probe per range it met


async def test_a_package_code_costs_no_document_of_its_own(service: Service, redis: aioredis.Redis) -> None:
    batch = await register_batch(service)
    codes = await issue_labels(service, batch["trace_code"], 300)

    for code in codes[:100]:
        assert await _status(service, code) == 200
    await app_worker(service.app).resolver.counter.sync()
    await app_worker(service.app).resolver.counter.flush()

    pool = app_worker(service.app).pool
    document_keys = [key async for key in redis.scan_iter(match=keys.document_key("*"))]
    assert document_keys == [keys.document_key(batch["trace_code"]).encode()]  # one document for 100 codes
    stored = await pool.fetch("SELECT code FROM code_documents WHERE batch_id = $1", batch["batch_id"])
    assert [row["code"] for row in stored] == [batch["trace_code"]]
    counted = await pool.fetchval(
        "SELECT count(*) FROM package_scans WHERE region_code = $1 AND seq = ANY ($2::bigint[])",
        region_of(codes[0]), [app_worker(service.app).ranges.seq_of(code) for code in codes],
    )  # fmt: skip
    assert counted == 100  # the scanned ones, not the 200 never scanned


async def test_a_first_scan_of_a_known_block_makes_no_io(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = await register_batch(service)
    first, *rest = await issue_labels(service, batch["trace_code"], 20)
    assert await _status(service, first) == 200  # the range, the batch's document and the block's bitmap
    fetched: list[str] = []
    fetch = DocumentCache.fetch

    async def counted_fetch(cache: DocumentCache, doc_key: str | None, slot: keys.ScanSlot) -> Fetched | None:
        fetched.append(slot.code)
        return await fetch(cache, doc_key, slot)

    monkeypatch.setattr(DocumentCache, "fetch", counted_fetch)
    service.query_log.queries.clear()

    answers = [(await service.client.get(f"/api/v1/codes/{code}")).json() for code in rest]

    assert [a["scans"]["count"] for a in answers] == [1] * len(rest)
    assert fetched == []  # nothing asked of Redis
    assert [q for q in service.query_log.queries if "pg_advisory_unlock_all" not in q] == []


async def test_scans_on_two_workers_add_up_and_a_worker_that_never_saw_a_code_shows_them(
    service: Service, second_service: Service
) -> None:
    batch = await register_batch(service)
    code, *_ = await issue_labels(service, batch["trace_code"], 3)
    for _ in range(3):
        assert await _status(service, code) == 200
    await app_worker(service.app).resolver.counter.sync()
    await app_worker(service.app).resolver.counter.flush()
    await asyncio.sleep(keys.SCANNED_BITS_FRESH_S)  # any copy of the bitmap the second worker made is stale now

    seen = (await second_service.client.get(f"/api/v1/codes/{code}")).json()["scans"]

    assert seen["count"] == 4


async def test_counters_lost_with_redis_are_rebuilt_from_postgres_before_they_are_shown(
    service: Service, redis: aioredis.Redis
) -> None:
    batch = await register_batch(service)
    codes = await issue_labels(service, batch["trace_code"], 3)
    for code in [*codes, codes[0]]:
        assert await _status(service, code) == 200
    counter = app_worker(service.app).resolver.counter
    await counter.sync()
    await counter.flush()
    await redis.flushdb()  # Redis restarted empty

    app = create_app(service.settings)  # a worker that never saw the codes
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker-3") as client:
            shown = [(await client.get(f"/api/v1/codes/{code}")).json()["scans"]["count"] for code in codes]

    assert shown == [3, 2, 2]


async def test_a_recall_of_a_batch_of_a_million_package_codes_is_seen_everywhere_within_a_second(
    service: Service, settings: Settings, redis: aioredis.Redis
) -> None:
    batch = await register_batch(service)
    state = app_worker(service.app)
    found = await labels.find_batch(state.pool, batch["trace_code"])
    issued = await labels.issue_labels(state.pool, state.issuer, settings.secret, found, 1_000_000)
    codes = issued.codes()
    sample = [next(codes) for _ in range(2_000)]
    env = subprocess_env(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url,
                         TRACECODE_SECRET=settings.secret.decode())  # fmt: skip
    with serving(env, "--workers", "2") as other:
        async with httpx.AsyncClient(base_url=other) as client:
            for code in sample[:200]:  # cached as active in both workers, and in Redis
                assert (await client.get(f"/api/v1/codes/{code}")).json()["status"] == "active"
            documents_before = len([key async for key in redis.scan_iter(match=keys.document_key("*"))])

            recalled = await service.client.post(
                f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "抽检不合格"},
                headers=service.admin_headers,
            )  # fmt: skip
            returned_at = time.monotonic()
            seen: list[tuple[float, str]] = []
            for code in sample[200:]:  # package codes never scanned, and then scanned ones again
                status = (await client.get(f"/api/v1/codes/{code}")).json()["status"]
                seen.append((time.monotonic() - returned_at, status))
                if time.monotonic() - returned_at > 2.0:
                    break

    assert recalled.status_code == 200 and recalled.json()["caches_invalidated"] is True
    assert documents_before == 1  # the batch's document, shared by its 200 scanned package codes
    last_active = max((at for at, status in seen if status == "active"), default=0.0)
    assert last_active < 1.0, f"a worker still showed the batch active {last_active:.3f} s after the recall"
    assert [status for at, status in seen if at >= 1.0] and all(
        status == "recalled" for at, status in seen if at >= 1.0
    )


# The move of package rows of trace_codes to ranges (migration 0009's data step).


@pytest.fixture
async def at_0008(servers: Servers) -> AsyncIterator[str]:
    """A database migrated up to 0008, as an installation before ranges was: its URL."""
    name = f"tracecode_ranges_{secrets.token_hex(4)}"
    url = await create_database(servers, name)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, code_partitions=4, until="0008")
        finally:
            await conn.close()
        yield url
    finally:
        await drop_database(servers, name)


async def _old_labels(conn: asyncpg.Connection, batch_id: int, region: str, count: int) -> list[str]:
    """Package codes issued as before 0009: a reserved range, a row per code."""
    issuer = CodeIssuer(SESSION_SECRET)
    start = await conn.fetchval(
        "INSERT INTO code_sequences AS s (code_type, region_code, next_seq) VALUES (4, $1, $2) "
        "ON CONFLICT (code_type, region_code) DO UPDATE SET next_seq = s.next_seq + $2 RETURNING next_seq - $2",
        region, count,
    )  # fmt: skip
    codes = issuer.codes(CodeType.PACKAGE, region, start, count)
    await conn.copy_records_to_table(
        "trace_codes", records=[(code, 4, batch_id) for code in codes], columns=("code", "code_type", "batch_id")
    )
    return codes


async def _old_batch(conn: asyncpg.Connection, region: str) -> int:
    producer = await conn.fetchval(
        "INSERT INTO producers (credit_code, name, kind, region_code) VALUES ($1, '老合作社', 'cooperative', $2) "
        "RETURNING id",
        f"93{region}{secrets.token_hex(5).upper()[:10]}", region,
    )  # fmt: skip
    product = await conn.fetchval(
        "INSERT INTO products (producer_id, name, category) VALUES ($1, '枸杞', 'goji') RETURNING id", producer
    )
    trace_code = (await CodeIssuer(SESSION_SECRET).issue(conn, 1, region, 1))[0]  # type: ignore[arg-type]
    batch_id: int = await conn.fetchval(
        "INSERT INTO batches (producer_id, product_id, trace_code, long_code, lot, quantity, unit, produced_on) "
        "VALUES ($1, $2, $3, $4, 'L1', 100, 'kg', current_date) RETURNING id",
        producer, product, trace_code, f"1.2.x.{secrets.token_hex(6)}",
    )  # fmt: skip
    await conn.execute("INSERT INTO trace_codes (code, code_type, batch_id) VALUES ($1, 1, $2)", trace_code, batch_id)
    return batch_id


async def test_package_rows_move_to_ranges_and_keep_resolving_with_their_counts(at_0008: str, redis_url: str) -> None:
    conn = await asyncpg.connect(at_0008)
    try:
        first, second = await _old_batch(conn, "632801"), await _old_batch(conn, "632801")
        older = await _old_labels(conn, first, "632801", 1_000)
        newer = await _old_labels(conn, second, "632801", 10)
        more = await _old_labels(conn, first, "632801", 5)
        at = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
        await conn.execute("INSERT INTO scan_counts (code, count, first_at) VALUES ($1, 7, $2)", older[500], at)

        await migrate(conn, code_partitions=4, secret=SESSION_SECRET)

        ranges = await conn.fetch("SELECT first_seq, count, batch_id FROM code_ranges ORDER BY first_seq")
        rows_left = await conn.fetchval("SELECT count(*) FROM trace_codes WHERE code_type = 4")
        counts_left = await conn.fetchval("SELECT count(*) FROM scan_counts")
        moved = await conn.fetchrow("SELECT count, first_at FROM package_scans")
    finally:
        await conn.close()

    assert [(r["count"], r["batch_id"]) for r in ranges] == [(1_000, first), (10, second), (5, first)]
    assert rows_left == 0 and counts_left == 0
    assert moved is not None and (moved["count"], moved["first_at"]) == (7, at)
    settings = Settings(database_url=at_0008, redis_url=redis_url, secret=SESSION_SECRET, is_dev_secret=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://migrated") as client:
            answers = [await client.get(f"/api/v1/codes/{code}") for code in (older[0], older[500], newer[9], more[4])]
            after_more = issue_one(
                SESSION_SECRET, CodeType.PACKAGE, "632801", app_worker(app).ranges.seq_of(more[4]) + 1
            )
            never = await client.get(f"/api/v1/codes/{after_more}")
    assert [a.status_code for a in answers] == [200] * 4
    assert answers[1].json()["scans"]["count"] == 8  # 7 before the move, and this scan
    assert never.status_code == 404


async def test_the_move_refuses_a_secret_the_codes_were_not_issued_with(at_0008: str) -> None:
    conn = await asyncpg.connect(at_0008)
    try:
        batch = await _old_batch(conn, "632802")
        await _old_labels(conn, batch, "632802", 50)

        with pytest.raises(MigrationError, match="TRACECODE_SECRET"):
            await migrate(conn, code_partitions=4, secret=b"not the secret of these codes")
        with pytest.raises(MigrationError, match="TRACECODE_SECRET"):
            await migrate(conn, code_partitions=4)

        assert await conn.fetchval("SELECT count(*) FROM trace_codes WHERE code_type = 4") == 50
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = '0009'") == 0
    finally:
        await conn.close()
