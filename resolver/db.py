"""Postgres connection pool: created with bounded retries, jsonb decoded with orjson."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import orjson

logger = logging.getLogger(__name__)

POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10
CONNECT_ATTEMPTS = 20
CONNECT_RETRY_DELAY_S = 0.5
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0

T = TypeVar("T")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (a round trip on every release): tracecode never leaves
    session state behind (no SET, LISTEN, cursors or advisory locks outside a transaction on pooled
    connections), and an open transaction is still rolled back by asyncpg before this is called."""


async def _retrying(what: str, open_: Callable[[], Awaitable[T]]) -> T:
    last_error: BaseException | None = None
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return await open_()
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            last_error = exc
            logger.warning("postgres not ready for %s (attempt %d/%d): %s", what, attempt, CONNECT_ATTEMPTS, exc)
            await asyncio.sleep(CONNECT_RETRY_DELAY_S)
    assert last_error is not None
    raise last_error


async def create_pool(
    dsn: str,
    *,
    min_size: int = POOL_MIN_SIZE,
    max_size: int = POOL_MAX_SIZE,
    query_logger: Callable[[asyncpg.connection.LoggedQuery], None] | None = None,
) -> asyncpg.Pool:
    """Open a pool on `dsn`, retrying while the server starts up; raise the last error after that.

    `query_logger` is attached to every connection and sees each query sent.
    """

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        if query_logger is not None:
            conn.add_query_logger(query_logger)

    async def open_() -> asyncpg.Pool:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=init,
            reset=_keep_session,
            # Codes are hash-partitioned: a custom plan of a code lookup spends ~1 ms planning every partition,
            # a generic one prunes them at run time in ~0.01 ms (measured in bench/resolve.py: cold +40-55 %).
            server_settings={"plan_cache_mode": "force_generic_plan"},
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
        )
        return pool

    return await _retrying("pool", open_)


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the same codecs as the pool (for migrations and the command line)."""

    async def open_() -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
        await _init_connection(conn)
        return conn

    return await _retrying("connection", open_)
