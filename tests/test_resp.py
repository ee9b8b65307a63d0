"""cache/resp.py: the hot read's own Redis client. Replies matched to requests in order, whatever way they arrive;
error replies; the requests of one turn in one write; a silent or closed connection failing its requests."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache.resp import RespClient, pack
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


TIMEOUT_S = 1.0
GIVE_UP_S = 5.0


@pytest.fixture
async def resp(redis: aioredis.Redis) -> AsyncIterator[RespClient]:
    """A client of the test's Redis database, made from the address redis-py was given."""
    options = redis.connection_pool.connection_kwargs
    client = RespClient(
        host=options.get("host", "127.0.0.1"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        db=int(options.get("db", 0)),
        username=options.get("username"),
        password=options.get("password"),
        timeout_s=TIMEOUT_S,
        give_up_s=GIVE_UP_S,
    )
    try:
        yield client
    finally:
        await client.aclose()


async def _scripted_server(replies: list[bytes], *, extra: bytes = b"") -> tuple[asyncio.Server, int, list[int]]:
    """A server that answers its n-th command with `replies[n]` one byte at a time, each byte its own packet, and
    `extra` after each reply; the list counts the connections it accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answered = 0
        try:
            while data := await reader.read(65_536):
                for _ in range(data.count(b"*")):  # one array header per command; the tests' commands have no "*"
                    for i in range(len(replies[answered])):
                        writer.write(replies[answered][i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0.001)
                    writer.write(extra)
                    answered += 1
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], accepted


async def test_replies_split_at_every_byte_are_put_together_in_order() -> None:
    replies = [b"$5\r\nhello\r\n", b"*2\r\n$1\r\na\r\n*2\r\n:7\r\n*0\r\n", b"-ERR nope\r\n", b"$0\r\n\r\n", b"$-1\r\n"]
    server, port, _ = await _scripted_server(replies)
    client = RespClient(port=port, timeout_s=TIMEOUT_S, give_up_s=GIVE_UP_S)
    try:
        got = await asyncio.gather(*(client.send(pack(("ECHO", str(i)))) for i in range(len(replies))))
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()

    assert got[:2] == [b"hello", [b"a", [7, []]]]
    assert isinstance(got[2], ResponseError) and str(got[2]) == "ERR nope"
    assert got[3:] == [b"", None]


async def test_a_reply_nobody_asked_for_closes_the_connection_and_the_next_call_opens_another() -> None:
    server, port, accepted = await _scripted_server([b"+OK\r\n"] * 2, extra=b"+EXTRA\r\n")
    client = RespClient(port=port, timeout_s=TIMEOUT_S, give_up_s=GIVE_UP_S)
    try:
        first = await client.call("PING")
        await asyncio.sleep(0.05)  # the extra reply arrives
        connection = client._connection
        second = await client.call("PING")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()

    assert first == second == b"OK"
    assert connection is not None and connection.is_closed
    assert len(accepted) == 2


async def test_the_client_uses_its_own_database(resp: RespClient, redis: aioredis.Redis) -> None:
    assert await resp.call("SET", "resp:k", "v") == b"OK"

    assert await redis.get("resp:k") == b"v"  # redis-py on the test's database sees it


async def test_an_error_reply_is_raised_by_call_returned_by_send_and_the_connection_goes_on(
    resp: RespClient, redis: aioredis.Redis
) -> None:
    await redis.hset("resp:h", "f", "v")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await resp.call("GET", "resp:h")
    returned = await resp.send(pack(("GET", "resp:h")))
    after = await resp.call("PING")

    assert isinstance(returned, ResponseError) and "WRONGTYPE" in str(returned)
    assert after == b"PONG"


async def test_the_replies_to_a_batch_come_back_as_one_list_with_errors_in_place(
    resp: RespClient, redis: aioredis.Redis
) -> None:
    await redis.set("resp:s", "1")
    await redis.hset("resp:h", "f", "v")
    batch = [("GET", "resp:s"), ("GET", "resp:h"), ("HGET", "resp:h", "f"), ("GET", "resp:none")]

    replies = await resp.send(b"".join(pack(command) for command in batch), len(batch))

    assert replies[0] == b"1" and replies[2:] == [b"v", None]
    assert isinstance(replies[1], ResponseError)


async def test_nested_arrays_come_back_as_nested_lists(resp: RespClient) -> None:
    reply = await resp.call("EVAL", "return {1, {2, 'x', {}}, 'y'}", 0)

    assert reply == [1, [2, b"x", []], b"y"]


async def test_a_big_bulk_string_comes_back_whole_and_the_next_reply_after_it(
    resp: RespClient, redis: aioredis.Redis
) -> None:
    value = secrets.token_bytes(8 << 20)  # many reads of the socket
    await redis.set("resp:big", value)

    big, pong = await asyncio.gather(resp.call("GET", "resp:big"), resp.call("PING"))

    assert big == value and pong == b"PONG"


async def test_a_cancelled_call_leaves_the_later_replies_matched(resp: RespClient, redis: aioredis.Redis) -> None:
    await redis.mset({"resp:a": "1", "resp:b": "2", "resp:c": "3"})
    await resp.call("PING")  # connected

    calls = [asyncio.ensure_future(resp.call("GET", f"resp:{key}")) for key in "abc"]
    await asyncio.sleep(0)  # all three sent in this turn
    calls[1].cancel()
    a, b, c = await asyncio.gather(*calls, return_exceptions=True)
    again = await resp.call("GET", "resp:b")

    assert (a, c, again) == (b"1", b"3", b"2")
    assert isinstance(b, asyncio.CancelledError)


async def test_a_connection_redis_closed_is_replaced_on_the_next_call(resp: RespClient, redis: aioredis.Redis) -> None:
    first_id = await resp.call("CLIENT", "ID")
    connection = resp._connection
    await redis.client_kill_filter(_id=str(first_id))
    for _ in range(100):
        if connection is not None and connection.is_closed:
            break
        await asyncio.sleep(0.01)

    second_id = await resp.call("CLIENT", "ID")

    assert connection is not None and connection.is_closed
    assert second_id != first_id
