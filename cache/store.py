"""Cache-aside of resolved documents in Redis, as the bytes that are sent, with consumer scan counters.

Redis is an accelerator, never the source of truth: every error or timeout on the read path is
logged, counted and answered as a miss, and for a short while afterwards the cache is skipped
altogether so that a dead Redis costs a scan nothing. Scan counters live here between flushes
to Postgres (see resolver.scans).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cache import keys
from cache.local import LocalTier, ScanState

logger = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# Add one worker's scans of a code since its last sync; answer the code's totals.
_ADD_SCANS = """
local count = redis.call('HINCRBY', KEYS[1], 'count', ARGV[1])
redis.call('HSETNX', KEYS[1], 'first_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #ARGV > 4 then
    redis.call('PFADD', KEYS[2], unpack(ARGV, 5))
    if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
end
return {count, redis.call('HGET', KEYS[1], 'first_at'), redis.call('PFCOUNT', KEYS[2])}
"""

# Drop every cached document of a batch. Touches keys it reads from the set, so on a Redis Cluster
# it needs the documents to be invalidated one by one instead (see ROADMAP in the README).
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


@dataclass(frozen=True, slots=True)
class Fetched:
    document: bytes  # a document, or keys.NEGATIVE
    batch_id: int  # 0 for NEGATIVE
    scans: Scans  # Redis's counters of the code as they stand (zero when it has none)


def redis_client(url: str) -> aioredis.Redis:
    """A client that gives up quickly, so that a slow Redis falls back to Postgres instead of holding a scan.

    Its pool waits briefly for a free connection under a burst instead of failing at once (redis-py's default
    pool raises MaxConnectionsError, which dropped invalidations under gate load in bench/gate.py).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=keys.REDIS_MAX_CONNECTIONS,
        timeout=keys.REDIS_TIMEOUT_S,
        socket_timeout=keys.REDIS_TIMEOUT_S,
        socket_connect_timeout=keys.REDIS_TIMEOUT_S,
    )
    return aioredis.Redis(connection_pool=pool)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DocumentCache:
    """Documents and scan counters by code, in Redis."""

    __slots__ = ("_add_scans", "_channel", "_invalidate_batch", "_redis", "_skip_until", "errors", "hits", "misses")

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._add_scans = client.register_script(_ADD_SCANS)
        self._invalidate_batch = client.register_script(_INVALIDATE_BATCH)
        # Pub/sub channels span a server's databases; batch ids do not: one channel per database.
        self._channel = keys.INVALIDATION_CHANNEL + str(client.connection_pool.connection_kwargs.get("db", 0))
        self._skip_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"DocumentCache(hits={self.hits}, misses={self.misses}, errors={self.errors})"

    @property
    def is_available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def fetch(self, code: str) -> Fetched | None:
        """The cached document of `code` and its scan counters, in one round trip; None on a miss or without Redis."""
        if not self.is_available:
            return None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(keys.document_key(code))
                pipe.hmget(keys.scans_key(code), "count", "first_at")
                pipe.pfcount(keys.places_key(code))
                document, (count, first_at), places = await pipe.execute()
        except REDIS_ERRORS as exc:
            self._failed("fetch", exc)
            return None
        if document is None:
            self.misses += 1
            return None
        self.hits += 1
        scans = Scans(int(count or 0), _text(first_at) if first_at else None, int(places))
        if document == keys.NEGATIVE:
            return Fetched(keys.NEGATIVE, 0, scans)
        batch_id, _, document = document.partition(b"\n")
        return Fetched(document, int(batch_id), scans)

    async def fill(self, code: str, document: bytes, *, batch_id: int, ttl_s: int, seed: Scans | None = None) -> None:
        """Cache `document` for `code` (registered under its batch), and seed the scan counter from Postgres."""
        if not self.is_available:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                # The batch id rides in front of the document: a worker's local tier indexes it for invalidation.
                pipe.set(keys.document_key(code), b"%d\n%s" % (batch_id, document), ex=ttl_s)
                pipe.sadd(keys.batch_codes_key(batch_id), code)
                pipe.expire(keys.batch_codes_key(batch_id), keys.SCANS_TTL_S)
                if seed is not None and seed.count > 0:
                    pipe.hsetnx(keys.scans_key(code), "count", seed.count)
                    if seed.first_at is not None:
                        pipe.hsetnx(keys.scans_key(code), "first_at", seed.first_at)
                    pipe.expire(keys.scans_key(code), keys.SCANS_TTL_S)
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

    async def add_scans(self, states: dict[str, ScanState]) -> None:
        """Add each code's pending scans to Redis and refresh the states with the totals, in one round trip.

        Raises on a Redis error, leaving the states pending for the next try.
        """
        sent = [(code, state, state.pending, list(state.pending_places)) for code, state in states.items()]
        async with self._redis.pipeline(transaction=False) as pipe:
            for code, state, pending, places in sent:
                await self._add_scans(
                    keys=[keys.scans_key(code), keys.places_key(code)],
                    args=[pending, state.first_at or "", keys.SCANS_TTL_S, keys.PLACES_WINDOW_S, *places],
                    client=pipe,
                )
            replies = await pipe.execute()
        for (_, state, pending, places), (count, first_at, distinct) in zip(sent, replies, strict=True):
            state.count = int(count)  # includes the scans just sent and every other worker's
            state.pending -= pending  # scans that arrived during the round trip stay pending
            state.first_at = _text(first_at)
            state.places = int(distinct)
            state.pending_places.difference_update(places)

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
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    tier.is_enabled = True
                    logger.info("local document tier on: subscribed to invalidations")
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            tier.drop_batch(int(message["data"]))
            except REDIS_ERRORS as exc:
                logger.warning("invalidation channel lost, local tier off until resubscribed: %r", exc)
            finally:
                tier.disable()
            await asyncio.sleep(keys.REDIS_RETRY_AFTER_S)

    async def forget(self, codes: list[str]) -> None:
        """Drop the entries of `codes` where Redis can be reached; a stale negative entry expires on its own."""
        try:
            await self._redis.delete(*(keys.document_key(code) for code in codes))
        except REDIS_ERRORS as exc:
            self._failed("delete", exc)

    async def scan_counts(self, codes: list[str]) -> dict[str, Scans]:
        """The counters of `codes` that Redis holds (for the flush to Postgres); raises on a Redis error."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for code in codes:
                pipe.hmget(keys.scans_key(code), "count", "first_at")
            replies = await pipe.execute()
        return {
            code: Scans(int(count), _text(first_at))
            for code, (count, first_at) in zip(codes, replies, strict=True)
            if count is not None and first_at is not None
        }

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
