"""The Redis-only resolve path: scans answered from Redis ask Postgres nothing, and the scan sync lives through a
Redis outage. The hot read's own client has tests/test_resp.py, the cache's Redis side tests/test_store.py."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import httpx
import pytest

from cache import keys
from cache.store import DocumentCache, redis_client
from resolver.app import create_app
from resolver.ops.embedded import EmbeddedRedis
from resolver.ops.settings import Settings
from resolver.scan.scans import ScanCounter
from resolver.state import app_worker
from tests.conftest import QueryLog, Service
from tests.helpers import register_batch


@pytest.fixture
async def tierless(settings: Settings) -> AsyncIterator[Service]:
    """The service with its in-process tier off: every scan asks Redis."""
    log = QueryLog()
    own = replace(settings, local_cache_size=0)
    app = create_app(own, query_logger=log)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            yield Service(app, client, own, {"Authorization": f"Bearer {own.admin_token}"}, log)


async def test_redis_served_scans_ask_postgres_nothing(tierless: Service) -> None:
    code = (await register_batch(tierless))["trace_code"]
    first = await tierless.client.get(f"/api/v1/codes/{code}")
    cache = app_worker(tierless.app).cache
    tierless.query_log.queries.clear()
    hits = cache.hits

    answers = [(await tierless.client.get(f"/api/v1/codes/{code}")).json() for _ in range(4)]

    assert first.status_code == 200
    assert [a["scans"]["count"] for a in answers] == [2, 3, 4, 5]
    assert cache.hits - hits == 4 and cache.errors == 0
    assert tierless.query_log.queries == []


def _slot(code: str) -> keys.ScanSlot:
    return keys.code_scan_slot(code)


async def test_a_scan_sync_without_redis_keeps_the_scans_and_sends_them_once_it_is_back(
    own_redis: EmbeddedRedis, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis down, each scan sync (4 times a second per worker) only pings it, the scans kept pending and the
    outage logged once; the first sync after Redis is back sends them and ends the skipping for every request,
    instead of the whole back-off passing first."""
    client = redis_client(own_redis.url)
    cache = DocumentCache(client)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    counter = ScanCounter(pool, cache)
    code = f"C{secrets.token_hex(6)}"
    try:
        counter.count(_slot(code), code, "10.0.0.0/24")
        await asyncio.to_thread(own_redis.stop)
        with caplog.at_level(logging.WARNING, logger="cache.store"):
            synced = [await counter.sync() for _ in range(5)]
        state = counter.count(_slot(code), code, "10.0.0.0/24")
        pending_down = (state.pending, state.shown_count)
        await asyncio.to_thread(own_redis.start)  # empty: the pair is rebuilt from Postgres, which has none yet

        back = await counter.sync()
        in_redis = await client.hget(_slot(code).key, _slot(code).field)
    finally:
        await client.aclose()
        await pool.close()

    assert synced == [0] * 5 and cache.errors == 5  # a ping each, nothing sent
    assert len(caplog.records) == 1  # one outage, one warning
    assert pending_down == (2, 2)
    assert back == 1 and cache.is_available and state.pending == 0 and state.unflushed == 2
    assert in_redis is not None and in_redis.split()[0] == b"2"
