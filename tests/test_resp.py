"""cache/resp.py: the hot read's own Redis client. Replies matched to requests in order, whatever way they arrive;
error replies; the requests of one turn in one write; a silent or closed connection failing its requests."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache.resp import RespClient
from tests.helpers import silent_server


async def test_a_silent_redis_fails_the_waiting_requests() -> None:
    server, port = await silent_server(None)
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
    server, port = await silent_server(0.05)
    client = RespClient(port=port, timeout_s=0.1, give_up_s=5.0)
    try:
        replies = await asyncio.gather(*(client.call("PING") for _ in range(10)))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()

    assert replies == [b"OK"] * 10


async def test_connection_refused_raises_a_redis_error() -> None:
    server, port = await silent_server(None)
    server.close()
    await server.wait_closed()
    client = RespClient(port=port, timeout_s=0.5, give_up_s=1.0)

    with pytest.raises(RedisConnectionError):
        await client.call("PING")
