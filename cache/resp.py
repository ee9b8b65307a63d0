"""A minimal Redis client for the one hot read of the scan path: one pipelined connection, hiredis parsing.

redis-py's per-call machinery (the blocking pool and its locks, command objects, response callbacks)
cost a Redis-served scan several times what Redis itself does (bench/PROFILE.md, "Redis-only path").
This client does one thing: send commands on a single connection shared by every request of the
worker (replies come back in order, so each request waits on a future in a queue) and hand back
hiredis's replies. Everything else stays on redis-py.

What every request of one turn of the event loop sends goes out in one write at the end of the turn:
a write system call per request was the largest single cost of a Redis-served scan in the worker
(bench/PROFILE.md), and under load dozens of requests arrive in the same turn.

Failure semantics are those of the cache: every error raises one of redis-py's exceptions, which the
caller answers as a miss. A reply is late only when the *connection* is: when a request has waited
`timeout_s` and nothing at all has arrived from Redis for `timeout_s` either. A request queued behind
replies that keep arriving (a saturated event loop reads them late, but Redis is answering) waits on,
up to `give_up_s`. A late connection fails every request on it and is closed; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable
from typing import Any, TypeAlias, cast

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg: TypeAlias = bytes | str | int


def pack(command: tuple[Arg, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]  # its stub allows 1-tuples only
    return packed


class _Connection(asyncio.Protocol):
    """One connection: replies are matched to the requests waiting in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, give_up_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._give_up_s = give_up_s
        self._reader = hiredis.Reader(replyError=ResponseError)
        # Each request: its future, when it was sent, how many replies it waits for as a list (0: one reply, not in a
        # list), and those come so far.
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float, int, list[Any]]] = collections.deque()
        self._outgoing: list[bytes] = []  # sent in this turn of the event loop, written at its end
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._heard_at = loop.time()
        self.is_closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not derive from asyncio's

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        self._reader.feed(data)
        waiting = self._waiting
        while (reply := self._reader.gets()) is not False:
            if not waiting:
                self.close(RedisConnectionError("redis sent a reply nobody asked for"))
                return
            future, _, count, replies = waiting[0]
            if count:
                replies.append(reply)
                if len(replies) < count:
                    continue
                reply = replies
            waiting.popleft()
            if not future.done():  # a caller that was cancelled is skipped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisConnectionError(f"connection to redis lost: {exc!r}"))

    def send(self, packed: bytes, count: int = 0) -> asyncio.Future[Any]:
        """The reply to the command in `packed`, or with `count` the list of the replies to its `count` commands;
        written with everything else sent in this turn of the event loop."""
        if self.is_closed or self._transport is None:
            raise RedisConnectionError("connection to redis closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        now = self._loop.time()
        if not self._waiting:
            self._heard_at = now  # an idle connection has had nothing to say: its silence starts now
        self._waiting.append((future, now, count, []))
        if not self._outgoing:
            self._loop.call_soon(self._write)
        self._outgoing.append(packed)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(now + self._timeout_s, self._watch)
        return future

    def _write(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if not self.is_closed and self._transport is not None:  # when closed, close() failed their requests
            self._transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _watch(self) -> None:
        """Close the connection when its oldest request is late; otherwise look again when it could be."""
        self._watchdog = None
        if not self._waiting:
            return
        now = self._loop.time()
        sent_at = self._waiting[0][1]
        silent = now - self._heard_at >= self._timeout_s
        if now - sent_at >= self._timeout_s and (silent or now - sent_at >= self._give_up_s):
            self.close(RedisTimeoutError(f"no reply from redis in {now - sent_at:.2f}s"))
            return
        due = max(sent_at, self._heard_at) + self._timeout_s
        self._watchdog = self._loop.call_at(min(due, sent_at + self._give_up_s), self._watch)

    def close(self, exc: Exception) -> None:
        self.is_closed = True
        self._outgoing.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(exc)
        if self._transport is not None:
            self._transport.close()


class RespClient:
    """Commands to one Redis database over a single pipelined connection, opened on first use."""

    __slots__ = ("_address", "_connecting", "_connection", "_hello", "_give_up_s", "_timeout_s")

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float,
        give_up_s: float,
    ) -> None:
        self._address = (path,) if path else (host, port)
        hello: list[tuple[Arg, ...]] = []
        if password is not None:
            hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            hello.append(("SELECT", db))
        self._hello = hello
        self._timeout_s = timeout_s
        self._give_up_s = give_up_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    def __repr__(self) -> str:
        return f"RespClient(address={self._address!r}, connected={self._connection is not None})"

    async def call(self, *args: Arg) -> Any:
        """The reply to one command; an error reply is raised as ResponseError, any other failure as redis-py's
        ConnectionError or TimeoutError."""
        reply = await self.send(pack(args))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def send(self, packed: bytes, count: int = 0) -> Awaitable[Any]:
        """The reply to the command in `packed` (RESP, as `pack` makes it), or with `count` the list of the replies
        to its `count` commands; error replies are returned as ResponseError, not raised. Written with every other
        request of this turn of the event loop: one round trip for all of them."""
        connection = self._connection
        if connection is not None and not connection.is_closed:
            return connection.send(packed, count)
        return self._send_connecting(packed, count)

    async def _send_connecting(self, packed: bytes, count: int) -> Any:
        connection = await self._connect()
        return await connection.send(packed, count)

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.close(RedisConnectionError("client closed"))
            self._connection = None

    async def _connect(self) -> _Connection:
        """One connection attempt at a time; callers arriving meanwhile share its outcome."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()

        def factory() -> _Connection:
            return _Connection(loop, self._timeout_s, self._give_up_s)

        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                if len(self._address) == 1:
                    _, connection = await loop.create_unix_connection(factory, self._address[0])
                else:
                    _, connection = await loop.create_connection(factory, *self._address)
                for command in self._hello:
                    reply = await connection.send(pack(command))
                    if isinstance(reply, ResponseError):
                        raise reply
        except BaseException as exc:
            if connection is not None:
                connection.close(RedisConnectionError("connection to redis not set up"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError("no connection to redis in time") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"cannot connect to redis: {exc!r}") from exc
            raise
        self._connection = connection
        return connection
