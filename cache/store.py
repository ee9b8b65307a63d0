"""Cache-aside of resolved documents in Redis, as the bytes that are sent, with consumer scan counters.

Redis is an accelerator, never the source of truth: every error or timeout on the read path is
logged, counted and answered as a miss, and for a short while afterwards the cache is skipped
altogether so that a dead Redis costs a scan nothing. Scan counters live here between flushes
to Postgres (see resolver.scans).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from cache import keys
from cache.local import LocalTier, ScanState
from cache.resp import RespClient

logger = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# Add one worker's scans of many codes since its last sync; answer each code's totals, three values per code.
# KEYS: each code's scan hash (codes of one block share one). ARGV: the hashes' TTL, the places window, the most
# places kept, now (epoch s), SCANS_ALIVE, then per code: its member, the scans to add, their first_at, the number
# of places, the places. A member is "{count} {first_at} {window start} {places}" (keys.ScanSlot). A hash without its
# SCANS_ALIVE member was lost (Redis restarted, evicted or expired it): nothing is added to it, and its codes
# answer a count of -1, until it has been rebuilt from Postgres (_REBUILD_SCANS). Touches keys of many codes: on a
# Redis Cluster the sync would have to send one call per hash instead (see "Known limits" in the README).
_ADD_SCANS = """
local totals, at, alive = {}, 6, {}
local window, most, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, #KEYS do
    local key, member, add, first_at = KEYS[i], ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
    local n = tonumber(ARGV[at + 3])
    if alive[key] == nil then
        alive[key] = redis.call('HEXISTS', key, ARGV[5]) == 1
        if alive[key] then redis.call('EXPIRE', key, ARGV[1]) end
    end
    if alive[key] then
        local count, since, places = 0, now, ''
        local value = redis.call('HGET', key, member)
        if value then
            local c, f, s, p = string.match(value, '^(%d+) (%S+) (%d+) ?(.*)$')
            count, since, places = tonumber(c), tonumber(s), p
            if first_at == '' or f < first_at then first_at = f end
            if now - since >= window then since, places = now, '' end
        end
        count = count + add
        local seen = 0
        if places ~= '' then seen = select(2, string.gsub(places, ',', ',')) + 1 end
        for j = at + 4, at + 3 + n do
            if seen >= most then break end
            if not string.find(',' .. places .. ',', ',' .. ARGV[j] .. ',', 1, true) then
                if places == '' then places = ARGV[j] else places = places .. ',' .. ARGV[j] end
                seen = seen + 1
            end
        end
        redis.call('HSET', key, member, string.format('%d %s %d %s', count, first_at, since, places))
        totals[#totals + 1] = count
        totals[#totals + 1] = first_at
        totals[#totals + 1] = seen
    else
        totals[#totals + 1] = -1
        totals[#totals + 1] = ''
        totals[#totals + 1] = 0
    end
    at = at + 4 + n
end
return totals
"""
SYNC_CHUNK = 500  # codes per call of _ADD_SCANS: a script holds Redis up while it runs

# Make lost scan hashes whole again from Postgres's counts, unless another worker did meanwhile; answer the asked
# members as they then stand. KEYS: the hashes. ARGV: their TTL, SCANS_ALIVE, members per HSET, then per hash:
# the number of members from Postgres, those members and their values, the number of members asked, those members.
_REBUILD_SCANS = """
local answers, at, step = {}, 4, 2 * tonumber(ARGV[3])
for i = 1, #KEYS do
    local key, n = KEYS[i], tonumber(ARGV[at])
    local made = redis.call('EXISTS', key) == 0
    if made then redis.call('HSET', key, ARGV[2], '1') end
    for j = at + 1, at + 2 * n, step do
        if made then redis.call('HSET', key, unpack(ARGV, j, math.min(j + step - 1, at + 2 * n))) end
    end
    if made then redis.call('EXPIRE', key, ARGV[1]) end
    at = at + 1 + 2 * n
    for j = at + 1, at + tonumber(ARGV[at]) do answers[#answers + 1] = redis.call('HGET', key, ARGV[j]) or false end
    at = at + 1 + tonumber(ARGV[at])
end
return answers
"""
REBUILD_MEMBERS_PER_HSET = 500  # Lua's unpack takes a few thousand values at most

# Drop every cached document of a batch. Touches keys it reads from the set, so on a Redis Cluster
# it needs the documents to be invalidated one by one instead (see "Known limits" in the README).
_INVALIDATE_BATCH = """
local codes = redis.call('SMEMBERS', KEYS[1])
for _, code in ipairs(codes) do redis.call('DEL', ARGV[1] .. '{' .. code .. '}') end
redis.call('DEL', KEYS[1])
if #codes > 0 or ARGV[4] == '1' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return #codes
"""


@dataclass(frozen=True, slots=True)
class Scans:
    """Consumer scans of a code: how many, since when, and from how many networks in the current window."""

    count: int
    first_at: str | None
    places: int = 0

    @property
    def is_suspicious(self) -> bool:
        return self.places >= keys.PLACES_WARNING


NO_SCANS = Scans(0, None)


@dataclass(frozen=True, slots=True)
class Fetched:
    document: bytes | None  # a document, keys.NEGATIVE, or None: not asked for, or not in Redis
    batch_id: int  # 0 without a document
    scans: Scans | None  # Redis's counters of the code as they stand; None: its scan hash was lost (rebuild it)


def unpack_scans(member: bytes | None, now_s: float) -> Scans:
    """The counters in a scan hash's member (keys.ScanSlot) at `now_s`; no member: never scanned."""
    if member is None:
        return NO_SCANS
    count, first_at, since, places = member.decode().split(" ", 3)
    seen = places.count(",") + 1 if places and now_s - int(since) < keys.PLACES_WINDOW_S else 0
    return Scans(int(count), first_at, seen)


class _Redis(aioredis.Redis):
    """redis-py's client, which also closes the hot-read clients made on its address (see DocumentCache)."""

    hot_clients: list[RespClient]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        for client in self.hot_clients:
            await client.aclose()
        await super().aclose(close_connection_pool)


def redis_client(url: str) -> aioredis.Redis:
    """A client that gives up in time, so that a Redis that stopped answering falls back to Postgres.

    Its pool waits briefly for a free connection under a burst instead of failing at once (redis-py's default
    pool raises MaxConnectionsError, which dropped invalidations under gate load in bench/gate.py).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=keys.REDIS_MAX_CONNECTIONS,
        timeout=keys.REDIS_GIVE_UP_S,
        socket_timeout=keys.REDIS_GIVE_UP_S,
        socket_connect_timeout=keys.REDIS_TIMEOUT_S,
    )
    client = _Redis(connection_pool=pool)
    client.hot_clients = []
    client.auto_close_connection_pool = True  # the pool is the client's own: aclose() closes its connections too
    return client


def hot_client(client: aioredis.Redis) -> RespClient | None:
    """A RespClient to the database of `client`, closed with it; None where it cannot go (TLS and the like)."""
    pool = client.connection_pool
    if pool.connection_class not in (aioredis.Connection, aioredis.UnixDomainSocketConnection):
        return None
    options = pool.connection_kwargs
    hot = RespClient(
        host=options.get("host", "127.0.0.1"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        db=int(options.get("db", 0)),
        username=options.get("username"),
        password=options.get("password"),
        timeout_s=keys.REDIS_TIMEOUT_S,
        give_up_s=keys.REDIS_GIVE_UP_S,
    )
    if isinstance(client, _Redis):
        client.hot_clients.append(hot)
    return hot


def db_channel(prefix: str, client: aioredis.Redis) -> str:
    """`prefix` + the client's database number: pub/sub channels span a server's databases, the ids sent on them
    do not."""
    return prefix + str(client.connection_pool.connection_kwargs.get("db", 0))


async def follow_ids(
    client: aioredis.Redis,
    channel: str,
    on_id: Callable[[int], None],
    *,
    on_subscribed: Callable[[], None],
    on_lost: Callable[[], None],
) -> None:
    """Call `on_id` with every id published on `channel`, until cancelled. A lost subscription is taken up again
    after the back-off; messages published meanwhile cannot be replayed, so `on_lost` must make up for them
    (`on_subscribed` runs each time the subscription stands)."""
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                _raise_if_cancelled()
                on_subscribed()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        on_id(int(message["data"]))
        except REDIS_ERRORS as exc:
            logger.warning(
                "redis channel %s lost, subscribing again in %.0f s: %r", channel, keys.REDIS_RETRY_AFTER_S, exc
            )
        finally:
            on_lost()
        await asyncio.sleep(keys.REDIS_RETRY_AFTER_S)


def _raise_if_cancelled() -> None:
    """redis-py can swallow a cancellation that arrives while it connects (redis/redis-py#2028, #2551): the
    subscription then stands and listens for ever, and a worker's shut-down waits its whole bound for it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Script:
    """A Lua script called by EVALSHA, loaded by EVAL when Redis does not know it (a restarted Redis)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, call: Callable[..., Awaitable[Any]], keys_: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await call("EVALSHA", self.sha, len(keys_), *keys_, *args)
        except ResponseError as exc:  # redis-py raises NoScriptError; cache.resp the reply as it is
            if not isinstance(exc, NoScriptError) and not str(exc).startswith("NOSCRIPT"):
                raise
        return await call("EVAL", self.source, len(keys_), *keys_, *args)


_ADD_SCANS_SCRIPT = _Script(_ADD_SCANS)
_REBUILD_SCANS_SCRIPT = _Script(_REBUILD_SCANS)


def place_id(place: str) -> str:
    """A short id of a client network, as kept among a code's places in Redis (a collision costs one place)."""
    return format(zlib.crc32(place.encode()), "x")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raise_error_reply(replies: list[Any]) -> list[Any]:
    """The replies of a RespClient.send of several commands, which returns error replies: raised here, the first."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


# The document of a code and its scan counters, in one round trip: GET the document (unless this worker has it),
# HMGET the code's member and the hash's SCANS_ALIVE, packed here. Plain commands cost Redis about a third of a Lua
# script making the same calls (bench/PROFILE.md, "Redis-only path"), each touches one key (a Redis Cluster routes
# them), and the worker writes the fetches of one turn of its event loop together (cache.resp).
_GET_DOCUMENT = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"
_GET_SCANS = b"*4\r\n$5\r\nHMGET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$1\r\n" + keys.SCANS_ALIVE.encode() + b"\r\n"


def _fetch_commands(doc_key: str | None, slot: keys.ScanSlot) -> bytes:
    """The commands of a fetch in RESP, as hiredis.pack_command would pack them one by one."""
    key, field = slot.key.encode(), slot.field.encode()
    scans = _GET_SCANS % (len(key), key, len(field), field)
    if doc_key is None:
        return scans
    document = keys.document_key(doc_key).encode()
    return _GET_DOCUMENT % (len(document), document) + scans


class DocumentCache:
    """Documents and scan counters by code, in Redis."""

    __slots__ = ("_call", "_channel", "_hot", "_invalidate_batch", "_redis", "_skip_until", "errors", "hits", "misses")

    def __init__(self, client: aioredis.Redis, *, hot_read: bool = True) -> None:
        """`hot_read`: the scan path's read, the scan sync and the flush's reads go through a RespClient of its own
        (see cache.resp), not redis-py."""
        self._redis = client
        self._hot = hot_client(client) if hot_read else None
        # The scan sync and flush too: hiredis packs their thousands of arguments in C, redis-py in Python.
        self._call: Callable[..., Awaitable[Any]] = client.execute_command if self._hot is None else self._hot.call
        self._invalidate_batch = client.register_script(_INVALIDATE_BATCH)
        # Pub/sub channels span a server's databases; batch ids do not: one channel per database.
        self._channel = db_channel(keys.INVALIDATION_CHANNEL, client)
        self._skip_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"DocumentCache(hits={self.hits}, misses={self.misses}, errors={self.errors})"

    @property
    def is_available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def fetch(self, doc_key: str | None, slot: keys.ScanSlot) -> Fetched | None:
        """The cached document of `doc_key` (unless None) and the scan counters of `slot`, in one round trip; None
        without Redis. The fetches of one turn of the event loop share that round trip; when it fails, each fails."""
        if not self.is_available:
            return None
        try:
            if self._hot is not None:
                replies = _raise_error_reply(
                    await self._hot.send(_fetch_commands(doc_key, slot), 1 + (doc_key is not None))
                )
            else:
                replies = await self._fetch_by_redis_py(doc_key, slot)
        except REDIS_ERRORS as exc:
            self._failed("fetch", exc)
            return None
        member, alive = replies[-1]
        scans = unpack_scans(member, time.time()) if alive is not None else None
        document = replies[0] if doc_key is not None else None
        if document is None:
            self.misses += doc_key is not None
            return Fetched(None, 0, scans)
        self.hits += 1
        if document == keys.NEGATIVE:
            return Fetched(keys.NEGATIVE, 0, scans)
        batch_id, _, document = document.partition(b"\n")
        return Fetched(document, int(batch_id), scans)

    async def _fetch_by_redis_py(self, doc_key: str | None, slot: keys.ScanSlot) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            if doc_key is not None:
                pipe.get(keys.document_key(doc_key))
            pipe.hmget(slot.key, slot.field, keys.SCANS_ALIVE)
            replies: list[Any] = await pipe.execute()
        return replies

    async def fill(self, doc_key: str, document: bytes, *, batch_id: int, ttl_s: int) -> None:
        """Cache `document` under `doc_key`, registered under its batch (whose changes drop it)."""
        if not self.is_available:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                # The batch id rides in front of the document: a worker's local tier indexes it for invalidation.
                pipe.set(keys.document_key(doc_key), b"%d\n%s" % (batch_id, document), ex=ttl_s)
                pipe.sadd(keys.batch_codes_key(batch_id), doc_key)
                pipe.expire(keys.batch_codes_key(batch_id), keys.SCANS_TTL_S)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._failed("fill", exc)

    async def put_negative(self, code: str) -> None:
        if not self.is_available:
            return
        try:
            await self._redis.set(keys.document_key(code), keys.NEGATIVE, ex=keys.NEGATIVE_TTL_S)
        except REDIS_ERRORS as exc:
            self._failed("set", exc)

    async def add_scans(self, states: list[ScanState]) -> list[ScanState]:
        """Add each code's pending scans to Redis and refresh the states with the totals, one command per
        SYNC_CHUNK codes; answers the states whose scan hash was lost, which added nothing (`rebuild_scans`).

        Raises on a Redis error, leaving the states of that chunk and the following ones pending for the next try,
        and skips Redis for a while like a failed read (see `is_available`).
        """
        try:
            return await self._add_scans(states)
        except REDIS_ERRORS as exc:
            self._failed("scan sync", exc)
            raise

    async def _add_scans(self, states: list[ScanState]) -> list[ScanState]:
        sent = [(state, state.pending, list(state.pending_places)) for state in states]
        lost = []
        for start in range(0, len(sent), SYNC_CHUNK):
            chunk = sent[start : start + SYNC_CHUNK]
            names: list[str] = []
            args: list[Any] = [
                keys.SCANS_TTL_S, keys.PLACES_WINDOW_S, keys.MAX_PLACES, int(time.time()), keys.SCANS_ALIVE
            ]  # fmt: skip
            for state, pending, places in chunk:
                names.append(state.slot.key)
                args += (state.slot.field, pending, state.first_at or "", len(places), *map(place_id, places))
            totals = await _ADD_SCANS_SCRIPT(self._call, names, args)
            for i, (state, pending, places) in enumerate(chunk):
                count, first_at, seen = totals[3 * i : 3 * i + 3]
                if count < 0:
                    lost.append(state)
                    continue
                state.count = int(count)  # includes the scans just sent and every other worker's
                state.pending -= pending  # scans that arrived during the round trip stay pending
                state.first_at = _text(first_at)
                state.places = int(seen)
                state.pending_places.difference_update(places)
        return lost

    async def rebuild_scans(
        self, members: dict[str, list[tuple[str, Scans]]], asked: list[keys.ScanSlot]
    ) -> dict[keys.ScanSlot, Scans]:
        """Make each lost scan hash (by key) whole again from `members` (every code of it Postgres has counted),
        unless another worker did meanwhile; answers the counters of `asked` as they then stand. Raises on a Redis
        error (and skips Redis for a while)."""
        names: list[str] = []
        args: list[Any] = [keys.SCANS_TTL_S, keys.SCANS_ALIVE, REBUILD_MEMBERS_PER_HSET]
        asked_by_key: dict[str, list[keys.ScanSlot]] = {}
        for slot in asked:
            asked_by_key.setdefault(slot.key, []).append(slot)
        for key, slots in asked_by_key.items():
            rows = members.get(key, [])
            names.append(key)
            args.append(len(rows))
            for field, scans in rows:
                args += (field, f"{scans.count} {scans.first_at} 0 ")
            args += (len(slots), *(slot.field for slot in slots))
        try:
            answers = await _REBUILD_SCANS_SCRIPT(self._call, names, args)
        except REDIS_ERRORS as exc:
            self._failed("scan rebuild", exc)
            raise
        now_s = time.time()
        ordered = [slot for slots in asked_by_key.values() for slot in slots]
        return {slot: unpack_scans(answer or None, now_s) for slot, answer in zip(ordered, answers, strict=True)}

    async def invalidate_batch(self, batch_id: int, *, always_publish: bool = True) -> int:
        """Drop every cached document of the batch in Redis and tell every worker's local tier (only when Redis
        held some, unless `always_publish`); raises on a Redis error, since the caller changed data and must know."""
        prefix = keys.document_key("")[: -len("{}")]
        dropped = await self._invalidate_batch(
            keys=[keys.batch_codes_key(batch_id)], args=[prefix, self._channel, batch_id, int(always_publish)]
        )
        return int(dropped)

    async def listen_for_invalidations(self, tier: LocalTier) -> None:
        """Drop the local documents of every batch announced as changed. The tier is on only while subscribed:
        a message missed while the connection is down would leave a stale document."""

        def subscribed() -> None:
            tier.is_enabled = True
            logger.info("local document tier on: subscribed to invalidations")

        await follow_ids(self._redis, self._channel, tier.drop_batch, on_subscribed=subscribed, on_lost=tier.disable)

    async def forget(self, codes: list[str]) -> None:
        """Drop the entries of `codes` where Redis can be reached; a stale negative entry expires on its own."""
        try:
            await self._redis.delete(*(keys.document_key(code) for code in codes))
        except REDIS_ERRORS as exc:
            self._failed("delete", exc)

    async def ping(self) -> bool:
        try:
            await self._redis.ping()
        except REDIS_ERRORS as exc:
            self._failed("ping", exc)
            return False
        self._skip_until = 0.0
        return True

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.errors += 1
        self._skip_until = time.monotonic() + keys.REDIS_RETRY_AFTER_S
        logger.warning("redis %s failed, serving from postgres for %.1fs: %r", operation, keys.REDIS_RETRY_AFTER_S, exc)
