"""Cache-aside of resolved documents in Redis, as the bytes that are sent.

Redis is an accelerator, never the source of truth: every error or timeout is logged, counted
and answered as a miss, and for a short while afterwards the cache is skipped altogether so
that a dead Redis costs a scan nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cache import keys

logger = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 20
CONNECT_RETRY_DELAY_S = 0.5


async def create_redis(url: str) -> aioredis.Redis:
    """A client on `url` whose first ping succeeded, retried a bounded number of times."""
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=keys.REDIS_TIMEOUT_S,
        socket_connect_timeout=keys.REDIS_TIMEOUT_S,
        health_check_interval=0,
    )
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            await client.ping()
            return client
        except (RedisError, OSError) as exc:
            logger.warning("redis not ready (attempt %d/%d): %s", attempt, CONNECT_ATTEMPTS, exc)
            if attempt == CONNECT_ATTEMPTS:
                await client.aclose()
                raise
            await asyncio.sleep(CONNECT_RETRY_DELAY_S)
    raise AssertionError("unreachable")


class DocumentCache:
    """Documents by code: `get` answers the cached bytes, `keys.NEGATIVE`, or None for a miss."""

    __slots__ = ("_redis", "_skip_until", "errors", "hits", "misses")

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._skip_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"DocumentCache(hits={self.hits}, misses={self.misses}, errors={self.errors})"

    @property
    def is_available(self) -> bool:
        return time.monotonic() >= self._skip_until

    async def get(self, code: str) -> bytes | None:
        if not self.is_available:
            return None
        try:
            value = await self._redis.get(keys.document_key(code))
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value if isinstance(value, bytes) else value.encode()

    async def put(self, code: str, document: bytes, *, ttl_s: int = keys.DOCUMENT_TTL_S) -> None:
        await self._set(code, document, ttl_s)

    async def put_negative(self, code: str) -> None:
        await self._set(code, keys.NEGATIVE, keys.NEGATIVE_TTL_S)

    async def invalidate(self, codes: list[str]) -> None:
        """Drop the documents of `codes`. Raises on a Redis error: a caller that changed data must know."""
        if codes:
            await self._redis.delete(*(keys.document_key(code) for code in codes))

    async def forget(self, codes: list[str]) -> None:
        """Drop the entries of `codes` where Redis can be reached; a stale negative entry expires on its own."""
        try:
            await self.invalidate(codes)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("delete", exc)

    async def ping(self) -> bool:
        try:
            await self._redis.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("ping", exc)
            return False
        self._skip_until = 0.0
        return True

    async def _set(self, code: str, value: bytes, ttl_s: int) -> None:
        if not self.is_available:
            return
        try:
            await self._redis.set(keys.document_key(code), value, ex=ttl_s)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("set", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.errors += 1
        self._skip_until = time.monotonic() + keys.REDIS_RETRY_AFTER_S
        logger.warning("redis %s failed, serving from postgres for %.1fs: %r", operation, keys.REDIS_RETRY_AFTER_S, exc)
