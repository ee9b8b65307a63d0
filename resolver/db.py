"""Postgres connection pool: created with bounded retries, jsonb decoded with orjson."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import orjson

logger = logging.getLogger(__name__)

POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10
CONNECT_ATTEMPTS = 20
CONNECT_RETRY_DELAY_S = 0.5
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
# What a request waits for Postgres, connection included, before it answers 503 with Retry-After: a Postgres that
# hangs (frozen, partitioned) rather than refusing would otherwise hold a scan for COMMAND_TIMEOUT_S or more.
REQUEST_WAIT_S = 3.0
# Postgres is away (down, restarting, shutting down, out of connections, or silent past a timeout) rather than
# refusing the statement. A request answers these with the one 503 (resolver.edge.problems.store_unavailable,
# which the app's exception handlers give), so a route lets them pass unless it has something else to do.
POSTGRES_AWAY_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection cut in the middle of an operation (seen when Postgres stops)
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# Any failure of a Postgres call: away, or the statement refused. What a background task logs and outlives.
POSTGRES_CALL_ERRORS = (*POSTGRES_AWAY_ERRORS, asyncpg.PostgresError)

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


_abandoned: set[asyncio.Future[Any]] = set()  # calls given up on, referenced until their clean-up ends


async def within(call: Awaitable[T], timeout_s: float) -> T:
    """`await call`, given up after `timeout_s` with TimeoutError, at once.

    Unlike asyncio.wait_for, which waits for the cancelled call to finish: cancelling a query on a Postgres that
    hangs waits for asyncpg's cancel request, which hangs too (a 1 s health check took 11 s). The call is
    cancelled and left to finish its clean-up on its own."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        raise TimeoutError(f"no answer within {timeout_s} s")
    return task.result()


def _forget(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an error nobody waits for is not logged as lost


async def within_request_wait(call: Awaitable[T]) -> T:
    """`await call`, given up after REQUEST_WAIT_S with TimeoutError (which the app answers as 503)."""
    return await within(call, REQUEST_WAIT_S)


async def _retrying(what: str, open_: Callable[[], Awaitable[T]]) -> T:
    last_error: BaseException | None = None
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return await open_()
        # Not POSTGRES_CALL_ERRORS: an InterfaceError here is a mistake in the settings (a bad DSN option), which
        # no retry mends.
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
