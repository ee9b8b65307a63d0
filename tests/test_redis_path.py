"""The Redis-only resolve path: the hot read's own client (cache.resp), its scripts, and its failure semantics."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache import keys, store
from cache.local import ScanState
from cache.resp import RespClient
from cache.store import DocumentCache, Scans, redis_client
from resolver.app import create_app
from resolver.embedded import EmbeddedRedis
from resolver.scans import ScanCounter
from resolver.settings import Settings
from tests.conftest import QueryLog, Service
from tests.helpers import register_batch


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[DocumentCache]:
    client = redis_client(redis_url)
    try:
        yield DocumentCache(client)
    finally:
        await client.aclose()


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
    cache = tierless.app.state.cache
    tierless.query_log.queries.clear()
    hits = cache.hits

    answers = [(await tierless.client.get(f"/api/v1/codes/{code}")).json() for _ in range(4)]

    assert first.status_code == 200
    assert [a["scans"]["count"] for a in answers] == [2, 3, 4, 5]
    assert cache.hits - hits == 4 and cache.errors == 0
    assert tierless.query_log.queries == []


async def test_fetch_answers_the_document_and_the_counters_in_one_command(
    cache: DocumentCache, redis: aioredis.Redis
) -> None:
    await cache.fill("C1", b'{"a":1}', batch_id=7, ttl_s=60, seed=Scans(5, "2026-01-02T03:04:05+08:00"))
    await cache.put_negative("C2")

    fetched = await cache.fetch("C1")
    negative = await cache.fetch("C2")
    missing = await cache.fetch("C3")

    assert fetched is not None and (fetched.document, fetched.batch_id) == (b'{"a":1}', 7)
    assert fetched.scans == Scans(5, "2026-01-02T03:04:05+08:00", 0)
    assert negative is not None and negative.document == keys.NEGATIVE
    assert missing is None and (cache.hits, cache.misses, cache.errors) == (2, 1, 0)


async def test_scripts_are_loaded_again_when_redis_forgot_them(cache: DocumentCache, redis: aioredis.Redis) -> None:
    await cache.fill("C1", b"{}", batch_id=1, ttl_s=60)
    assert await cache.fetch("C1") is not None
    await redis.script_flush()

    again = await cache.fetch("C1")
    state = ScanState(0, "2026-01-02T03:04:05+08:00", 0, pending=2, pending_places={"10.0.0.0/24"})
    await cache.add_scans({"C1": state})

    assert again is not None and cache.errors == 0
    assert (state.count, state.pending, state.places) == (2, 0, 1)


async def test_a_sync_of_many_codes_adds_every_one(
    cache: DocumentCache, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "SYNC_CHUNK", 3)  # several calls of the script in one sync
    at = "2026-01-02T03:04:05+08:00"
    await redis.hset(keys.scans_key("K0"), mapping={"count": 10, "first_at": "2025-01-01T00:00:00+08:00"})
    states = {
        f"K{i}": ScanState(0, at, 0, pending=i + 1, pending_places={f"10.0.{p}.0/24" for p in range(i)})
        for i in range(7)
    }

    await cache.add_scans(states)

    assert [s.count for s in states.values()] == [11, 2, 3, 4, 5, 6, 7]
    assert [s.places for s in states.values()] == [0, 1, 2, 3, 4, 5, 6]
    assert states["K0"].first_at == "2025-01-01T00:00:00+08:00" and states["K1"].first_at == at
    assert all(s.pending == 0 and not s.pending_places for s in states.values())
    assert await redis.ttl(keys.scans_key("K3")) > 0 and await redis.ttl(keys.places_key("K3")) > 0


async def test_closing_the_redis_client_closes_the_hot_connection(redis_url: str) -> None:
    client = redis_client(redis_url)
    cache = DocumentCache(client)
    await cache.fetch("nothing")
    hot = client.hot_clients[0]  # type: ignore[attr-defined]
    assert hot._connection is not None and not hot._connection.is_closed

    await client.aclose()

    assert hot._connection is None


async def _silent_server(answer_every_s: float | None) -> tuple[asyncio.Server, int]:
    """A server that reads commands and answers +OK to each, one every `answer_every_s` (never with None)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = 0
        try:
            while True:
                data = await reader.read(65_536)
                if not data:
                    return
                pending += data.count(b"*")
                if answer_every_s is None:
                    continue
                while pending:
                    await asyncio.sleep(answer_every_s)
                    writer.write(b"+OK\r\n")
                    pending -= 1
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_silent_redis_fails_the_waiting_requests() -> None:
    server, port = await _silent_server(None)
    client = RespClient(port=port, timeout_s=0.1, give_up_s=5.0)
    try:
        results = await asyncio.gather(client.call("PING"), client.call("PING"), return_exceptions=True)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()

    assert all(isinstance(r, RedisTimeoutError) for r in results)


async def test_requests_queued_behind_flowing_replies_wait_their_turn() -> None:
    # Each reply comes 0.05 s after the previous one: the tenth request waits 0.5 s, five times the timeout,
    # but Redis is never silent for the timeout, so nothing fails (a saturated worker reads replies like this).
    server, port = await _silent_server(0.05)
    client = RespClient(port=port, timeout_s=0.1, give_up_s=5.0)
    try:
        replies = await asyncio.gather(*(client.call("PING") for _ in range(10)))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()

    assert replies == [b"OK"] * 10


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    data_dir = Path(tempfile.mkdtemp(prefix="tracecode-redis-path-"))
    server = EmbeddedRedis(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_killed_redis_is_a_miss_and_its_return_is_used_again(own_redis: EmbeddedRedis) -> None:
    client = redis_client(own_redis.url)
    cache = DocumentCache(client)
    try:
        await cache.fill("C1", b"{}", batch_id=1, ttl_s=60)
        assert await cache.fetch("C1") is not None

        await asyncio.to_thread(own_redis.stop)
        down = await cache.fetch("C1")
        skipped = await cache.fetch("C1")  # within the back-off: not even tried
        errors_down = cache.errors
        await asyncio.to_thread(own_redis.start)
        assert await cache.ping()  # the health check ends the back-off once Redis answers
        await cache.fill("C1", b"{}", batch_id=1, ttl_s=60)  # an empty Redis after the restart
        back = await cache.fetch("C1")
    finally:
        await client.aclose()

    assert down is None and skipped is None and errors_down == 1
    assert back is not None and cache.errors == errors_down


async def test_connection_refused_raises_a_redis_error() -> None:
    server, port = await _silent_server(None)
    server.close()
    await server.wait_closed()
    client = RespClient(port=port, timeout_s=0.5, give_up_s=1.0)

    with pytest.raises(RedisConnectionError):
        await client.call("PING")


async def test_a_failed_scan_sync_backs_off_like_a_failed_read(own_redis: EmbeddedRedis) -> None:
    """With Redis down, the scan sync (4 times a second per worker) tries once, then waits out the back-off with
    the scans kept pending, instead of failing and logging on every round."""
    client = redis_client(own_redis.url)
    cache = DocumentCache(client)
    counter = ScanCounter(None, cache)  # type: ignore[arg-type]  # sync never touches Postgres
    try:
        counter.count("C1", "10.0.0.0/24")
        await asyncio.to_thread(own_redis.stop)

        synced = [await counter.sync() for _ in range(5)]

        assert synced == [0] * 5
        assert cache.errors == 1  # one attempt, then the back-off
        assert counter.count("C1", "10.0.0.0/24").pending == 2  # nothing lost: sent once Redis is back
    finally:
        await client.aclose()
