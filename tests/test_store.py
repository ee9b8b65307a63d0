"""cache/store.py: the cache's Redis side. The hot read (documents and scan counters in one round trip, the fetches of
one turn in one write), the scan pairs and their scripts, the back-off when Redis fails, the client and its close,
and the invalidation feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from cache import keys, store
from cache.local import ScanState
from cache.resp import RespClient, pack
from cache.store import DocumentCache, Scans, redis_client
from resolver.ops.embedded import EmbeddedRedis
from resolver.scan.scans import ScanCounter
from tests.helpers import silent_server


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[DocumentCache]:
    client = redis_client(redis_url)
    try:
        yield DocumentCache(client)
    finally:
        await client.aclose()


AT = "2026-01-02T03:04:05+08:00"


def _slot(code: str) -> keys.ScanSlot:
    return keys.code_scan_slot(code)


async def _counted(redis: aioredis.Redis, slot: keys.ScanSlot, count: int | None = None, *, at: str = AT) -> None:
    """The scan pair of `slot` whole in Redis (as rebuilt from Postgres), with `count` scans of its code if any."""
    await redis.set(slot.bits_key, b"")
    if count is not None:
        await redis.hset(slot.key, slot.field, f"{count} {at} 0 ")
        await redis.setbit(slot.bits_key, slot.bit, 1)


async def test_fetch_answers_the_document_and_the_counters_in_one_round_trip(
    cache: DocumentCache, redis: aioredis.Redis
) -> None:
    await cache.fill("C1", b'{"a":1}', batch_id=7, version=3, ttl_s=60)
    await _counted(redis, _slot("C1"), 5)
    await _counted(redis, _slot("C4"))
    await cache.put_negative("C2")

    fetched = await cache.fetch("C1", _slot("C1"))
    negative = await cache.fetch("C2", _slot("C2"))
    missing = await cache.fetch("C3", _slot("C3"))
    counters_only = await cache.fetch(None, _slot("C4"))

    assert fetched is not None and (fetched.document, fetched.batch_id, fetched.version) == (b'{"a":1}', 7, 3)
    assert fetched.scans == Scans(5, AT, 0)
    assert fetched.scanned == b"\x80"  # the code's bit set
    assert negative is not None and negative.document == keys.NEGATIVE and negative.scans is None
    assert missing == store.Fetched(None, 0, 0, None, None)  # no document, and its scan pair must be rebuilt
    assert counters_only == store.Fetched(None, 0, 0, Scans(0, None, 0), b"")  # never scanned
    assert (cache.hits, cache.misses, cache.errors) == (2, 1, 0)


class _CountedWrites:
    """A transport that counts the writes made on it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def close(self) -> None:
        self.transport.close()


def _count_writes(hot: RespClient) -> _CountedWrites:
    connection = hot._connection
    assert connection is not None and connection._transport is not None
    counted = _CountedWrites(connection._transport)
    connection._transport = counted  # type: ignore[assignment]
    return counted


async def test_fetches_of_one_turn_share_one_write_and_each_gets_its_own_answer(redis_url: str) -> None:
    client = redis_client(redis_url)
    cache = DocumentCache(client)
    try:
        for i in range(20):
            await cache.fill(f"C{i}", b'{"n":%d}' % i, batch_id=i + 1, version=0, ttl_s=60)
            await _counted(client, _slot(f"C{i}"), i)
        await cache.put_negative("NEG")
        await cache.fetch("C0", _slot("C0"))  # connects
        writes = _count_writes(client.hot_clients[0])  # type: ignore[attr-defined]

        codes = [*(f"C{i}" for i in range(20)), "NEG", "NONE"]
        fetched = await asyncio.gather(*(cache.fetch(code, _slot(code)) for code in codes))
        again = await cache.fetch("C7", _slot("C7"))
    finally:
        await client.aclose()

    assert len(writes.writes) == 2  # the 22 fetches of one turn, then the lone one
    assert b"EVALSHA" not in b"".join(writes.writes)
    assert [(f.document, f.batch_id, f.scans) for f in fetched[:20] if f is not None] == [
        (b'{"n":%d}' % i, i + 1, Scans(i, AT, 0)) for i in range(20)
    ]
    assert fetched[20] is not None and fetched[20].document == keys.NEGATIVE
    assert fetched[21] == store.Fetched(None, 0, 0, None, None)
    assert again is not None and again.document == b'{"n":7}'
    assert (cache.hits, cache.misses, cache.errors) == (23, 1, 0)


async def test_a_cancelled_fetch_leaves_the_others_of_its_turn_their_answers(cache: DocumentCache) -> None:
    for code in ("A", "B", "C"):
        await cache.fill(code, b'{"c":"%s"}' % code.encode(), batch_id=1, version=0, ttl_s=60)
    await cache.fetch("A", _slot("A"))

    tasks = [asyncio.ensure_future(cache.fetch(code, _slot(code))) for code in ("A", "B", "C")]
    await asyncio.sleep(0)  # all three sent in this turn
    tasks[1].cancel()
    a, b, c = await asyncio.gather(*tasks, return_exceptions=True)
    after = await cache.fetch("B", _slot("B"))  # replies stay matched to their requests

    assert isinstance(b, asyncio.CancelledError)
    assert isinstance(a, store.Fetched) and a.document == b'{"c":"A"}'
    assert isinstance(c, store.Fetched) and c.document == b'{"c":"C"}'
    assert after is not None and after.document == b'{"c":"B"}' and cache.errors == 0


async def test_a_failed_shared_round_trip_fails_each_of_its_fetches_into_the_fallback() -> None:
    server, port = await silent_server(None)  # reads the commands, never answers
    client = redis_client(f"redis://127.0.0.1:{port}/0")
    cache = DocumentCache(client)
    try:
        fetched = await asyncio.gather(*(cache.fetch(f"C{i}", _slot(f"C{i}")) for i in range(10)))
        skipped = await cache.fetch("C0", _slot("C0"))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()

    assert fetched == [None] * 10 and skipped is None  # each a miss: the resolver asks Postgres
    assert cache.errors == 10 and not cache.is_available  # and the back-off holds for every scan


async def test_an_error_reply_fails_its_fetch_like_a_failed_script(cache: DocumentCache, redis: aioredis.Redis) -> None:
    await redis.hset(keys.document_key("WRONG"), "not", "a string")  # GET answers WRONGTYPE

    assert await cache.fetch("WRONG", _slot("WRONG")) is None
    assert cache.errors == 1 and not cache.is_available


@pytest.mark.parametrize(
    ("doc_key", "slot"),
    [
        pytest.param("16301214181039605482", _slot("16301214181039605482"), id="batch-code"),
        pytest.param("1.2.93630121MA7H8Q2K1C.03010200.20261129173537.001",
                     _slot("1.2.93630121MA7H8Q2K1C.03010200.20261129173537.001"), id="long-form"),
        pytest.param("16301214181039605482", keys.package_scan_slot("46301210000000001274", "630121", 12_345),
                     id="package-code"),
        pytest.param(None, keys.package_scan_slot("46301210000000001274", "630121", 12_345), id="counters-only"),
    ],
)  # fmt: skip
def test_the_fetch_is_packed_as_plain_commands(doc_key: str | None, slot: keys.ScanSlot) -> None:
    commands: list[tuple[str, ...]] = [] if doc_key is None else [("GET", keys.document_key(doc_key))]
    commands += [("HGET", slot.key, slot.field), ("GET", slot.bits_key)]

    assert store._fetch_commands(doc_key, slot) == b"".join(pack(command) for command in commands)


def _state(code: str, pending: int, places: set[str], *, at: str = AT) -> ScanState:
    return ScanState(_slot(code), code, 0, at, 0, pending=pending, pending_places=places)


async def test_scripts_are_loaded_again_when_redis_forgot_them(cache: DocumentCache, redis: aioredis.Redis) -> None:
    await cache.fill("C1", b"{}", batch_id=1, version=0, ttl_s=60)
    await _counted(redis, _slot("C1"))
    assert await cache.fetch("C1", _slot("C1")) is not None
    await redis.script_flush()

    again = await cache.fetch("C1", _slot("C1"))
    state = _state("C1", 2, {"10.0.0.0/24"})
    lost, _, _ = await cache.add_scans([state])

    assert again is not None and cache.errors == 0 and lost == []
    assert (state.count, state.pending, state.unflushed, state.places) == (2, 0, 2, 1)


async def test_a_sync_of_many_codes_adds_every_one(
    cache: DocumentCache, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "SYNC_CHUNK", 3)  # several calls of the script in one sync
    earlier = "2025-01-01T00:00:00+08:00"
    for i in range(7):
        await _counted(redis, _slot(f"K{i}"), 10 if i == 0 else None, at=earlier)
    states = [_state(f"K{i}", i + 1, {f"10.0.{p}.0/24" for p in range(i)}) for i in range(7)]
    states.append(_state("LOST", 1, set()))  # its scan pair is gone: nothing is added to it

    lost, bitmaps, generation = await cache.add_scans(states, [_slot("K0").bits_key, _slot("LOST").bits_key])
    again = await cache.add_scans([], [])

    assert lost == [states[7]] and states[7].pending == 1 and not await redis.exists(_slot("LOST").key)
    assert generation and again[2] == generation  # the same Redis, the same generation
    assert bitmaps == {_slot("K0").bits_key: b"\x80", _slot("LOST").bits_key: None}
    assert [s.count for s in states[:7]] == [11, 2, 3, 4, 5, 6, 7]
    assert [s.places for s in states[:7]] == [0, 1, 2, 3, 4, 5, 6]
    assert states[0].first_at == earlier and states[1].first_at == AT
    assert all(s.pending == 0 and not s.pending_places for s in states[:7])
    assert await redis.ttl(_slot("K3").key) > 0 and await redis.ttl(_slot("K3").bits_key) > 0


async def test_a_rebuilt_pair_short_of_other_workers_scans_never_lowers_a_count(
    cache: DocumentCache, redis: aioredis.Redis
) -> None:
    """Redis lost the pair and rebuilt it from Postgres, which lacks the scans other workers have not flushed yet:
    this worker goes on showing at least what it showed, until they have added theirs again."""
    await _counted(redis, _slot("R"), 10)  # rebuilt: Postgres knew 10 of the 50 scans this worker had seen
    state = replace(_state("R", 1, {"10.0.0.0/24"}), count=50, epoch="before the loss")
    counter = ScanCounter(None, cache)  # type: ignore[arg-type]  # counting alone asks no store

    await cache.add_scans([state])
    synced = state.count
    again = counter.count(_slot("R"), "R", "10.0.0.0/24", Scans(12, AT))  # the first scan read the short pair
    read = again.count
    again.count = 52
    counter.count(_slot("R"), "R", "10.0.0.0/24", Scans(11, AT))  # a later read, still short

    assert synced == 51  # not 11, what the rebuilt pair holds
    assert read == 12  # a new counter takes what it reads
    assert again.count == 52 and again.pending == 2


async def test_a_code_counts_each_place_once_and_at_most_max_places(
    cache: DocumentCache, redis: aioredis.Redis
) -> None:
    await _counted(redis, _slot("P"))
    places = [f"10.0.{p}.0/24" for p in range(keys.MAX_PLACES + 4)]

    for place in [places[0], places[0], *places]:
        await cache.add_scans([_state("P", 1, {place})])
    fetched = await cache.fetch(None, _slot("P"))

    assert fetched is not None and fetched.scans == Scans(len(places) + 2, AT, keys.MAX_PLACES)


async def test_a_lost_scan_pair_is_rebuilt_whole_once(cache: DocumentCache, redis: aioredis.Redis) -> None:
    slots = [keys.package_scan_slot(f"4-{seq}", "630121", seq) for seq in (5, 6, 7)]
    bits = b"\x06"  # bits 5 and 6
    members = {slots[0].key: (bits, [(slots[0].field, Scans(3, AT)), (slots[1].field, Scans(1, AT))])}
    await redis.hset(slots[0].key, "stale", "1")  # left of a pair whose bitmap was evicted: not kept

    rebuilt, bitmaps = await cache.rebuild_scans(members, slots)
    await redis.hset(slots[0].key, slots[0].field, f"9 {AT} 0 ")  # counted on since
    again, _ = await cache.rebuild_scans({slots[0].key: (bits, [(slots[0].field, Scans(3, AT))])}, slots[:1])

    assert rebuilt == {slots[0]: Scans(3, AT), slots[1]: Scans(1, AT), slots[2]: Scans(0, None)}
    assert bitmaps == {slots[0].bits_key: bits}
    assert again == {slots[0]: Scans(9, AT)}  # made once: the second rebuild changes nothing
    assert await redis.hget(slots[0].key, "stale") is None
    assert await redis.ttl(slots[0].key) > 0 and await redis.ttl(slots[0].bits_key) > 0


async def test_closing_the_redis_client_closes_the_hot_connection(redis_url: str) -> None:
    client = redis_client(redis_url)
    cache = DocumentCache(client)
    await cache.fetch("nothing", _slot("nothing"))
    hot = client.hot_clients[0]  # type: ignore[attr-defined]
    assert hot._connection is not None and not hot._connection.is_closed

    await client.aclose()

    assert hot._connection is None


async def test_a_killed_redis_is_a_miss_and_its_return_is_used_again(own_redis: EmbeddedRedis) -> None:
    client = redis_client(own_redis.url)
    cache = DocumentCache(client)
    try:
        await cache.fill("C1", b"{}", batch_id=1, version=0, ttl_s=60)
        assert await cache.fetch("C1", _slot("C1")) is not None

        await asyncio.to_thread(own_redis.stop)
        down = await cache.fetch("C1", _slot("C1"))
        skipped = await cache.fetch("C1", _slot("C1"))  # within the back-off: not even tried
        errors_down = cache.errors
        await asyncio.to_thread(own_redis.start)
        assert await cache.ping()  # the health check ends the back-off once Redis answers
        await cache.fill("C1", b"{}", batch_id=1, version=0, ttl_s=60)  # an empty Redis after the restart
        back = await cache.fetch("C1", _slot("C1"))
    finally:
        await client.aclose()

    assert down is None and skipped is None and errors_down == 1
    assert back is not None and cache.errors == errors_down


async def test_a_subscription_cancelled_while_it_connects_ends_at_once(redis: aioredis.Redis) -> None:
    """A worker's shut-down cancels its follower at any moment, also inside redis-py's connect, which can swallow
    the cancellation: the follower must end then too, not listen on until the shut-down's bound."""
    hung = []
    for step in range(60):
        delay_s = step * 0.00005  # across the connect, the SUBSCRIBE and its reply
        follower = asyncio.create_task(
            store.follow_ids(redis, "tracecode:test:follow", print, on_subscribed=lambda: None, on_lost=lambda: None)
        )
        await asyncio.sleep(delay_s)
        follower.cancel()
        done, _ = await asyncio.wait([follower], timeout=2.0)
        if not done:
            hung.append(delay_s)
            follower.cancel()
            await asyncio.wait([follower], timeout=2.0)
    assert hung == []
