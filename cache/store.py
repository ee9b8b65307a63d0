"""Cache-aside of resolved documents in Redis, as the bytes that are sent, with consumer scan counters.

Redis is an accelerator, never the source of truth: every error or timeout on the read path is
logged, counted and answered as a miss, and for a short while afterwards the cache is skipped
altogether so that a dead Redis costs a scan nothing. Scan counters live here between flushes
to Postgres (see resolver.scans).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cache import keys

logger = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# One round trip per warm scan: the document, and when it is one, the scan counted and its statistics.
_LOOKUP = """
local doc = redis.call('GET', KEYS[1])
if not doc then return nil end
if doc == ARGV[4] then return doc end
local count = redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HSETNX', KEYS[2], 'first_at', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
local first_at = redis.call('HGET', KEYS[2], 'first_at')
redis.call('PFADD', KEYS[3], ARGV[2])
if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
return {doc, count, first_at, redis.call('PFCOUNT', KEYS[3])}
"""

# Drop every cached document of a batch. Touches keys it reads from the set, so on a Redis Cluster
# it needs the documents to be invalidated one by one instead (see ROADMAP in the README).
_INVALIDATE_BATCH = """
local codes = redis.call('SMEMBERS', KEYS[1])
for _, code in ipairs(codes) do redis.call('DEL', ARGV[1] .. '{' .. code .. '}') end
redis.call('DEL', KEYS[1])
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
class Lookup:
    document: bytes  # a document, or keys.NEGATIVE
    scans: Scans | None


def redis_client(url: str) -> aioredis.Redis:
    """A client that gives up quickly, so that a slow Redis falls back to Postgres instead of holding a scan."""
    return aioredis.Redis.from_url(
        url, socket_timeout=keys.REDIS_TIMEOUT_S, socket_connect_timeout=keys.REDIS_TIMEOUT_S
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class DocumentCache:
    """Documents and scan counters by code."""

    __slots__ = ("_invalidate_batch", "_lookup", "_redis", "_skip_until", "errors", "hits", "misses")

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._lookup = client.register_script(_LOOKUP)
        self._invalidate_batch = client.register_script(_INVALIDATE_BATCH)
        self._skip_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"DocumentCache(hits={self.hits}, misses={self.misses}, errors={self.errors})"

    @property
    def is_available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def lookup(self, code: str, *, place: str, now_iso: str) -> Lookup | None:
        """The cached document of `code` with this scan counted from `place`; None on a miss or without Redis."""
        if not self.is_available:
            return None
        try:
            reply = await self._lookup(
                keys=[keys.document_key(code), keys.scans_key(code), keys.places_key(code)],
                args=[now_iso, place, keys.PLACES_WINDOW_S, keys.NEGATIVE, keys.SCANS_TTL_S],
            )
        except REDIS_ERRORS as exc:
            self._failed("lookup", exc)
            return None
        if reply is None:
            self.misses += 1
            return None
        self.hits += 1
        if not isinstance(reply, list):
            return Lookup(keys.NEGATIVE, None)
        document, count, first_at, places = reply
        return Lookup(document, Scans(int(count), _text(first_at), int(places)))

    async def fill(self, code: str, document: bytes, *, batch_id: int, ttl_s: int, seed: Scans | None = None) -> None:
        """Cache `document` for `code` (registered under its batch), and seed the scan counter from Postgres."""
        if not self.is_available:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(keys.document_key(code), document, ex=ttl_s)
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

    async def invalidate_batch(self, batch_id: int) -> int:
        """Drop every cached document of the batch; raises on a Redis error, since the caller changed data."""
        prefix = keys.document_key("")[: -len("{}")]
        dropped = await self._invalidate_batch(keys=[keys.batch_codes_key(batch_id)], args=[prefix])
        return int(dropped)

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
