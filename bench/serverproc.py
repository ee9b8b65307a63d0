"""`tracecode serve` as a child process in a process group of its own: started, waited for, measured, stopped; and
the one start-up wait of the benchmarks (`poll_until`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from loadgen import parse_head

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0  # workers compile nothing, but open pools to Postgres and Redis on a busy machine
POLL_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_CHARS = 3_000


def free_port() -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def poll_until(
    is_ready: Callable[[], Awaitable[bool] | bool],
    *,
    timeout_s: float,
    poll_s: float = POLL_INTERVAL_S,
    has_exited: Callable[[], bool] = lambda: False,
) -> bool:
    """Ask `is_ready` every `poll_s` until it says yes (True), or until `timeout_s` has passed or `has_exited()` says
    that what it waits for went away (False). A probe that fails says no: it catches its own errors."""
    deadline = time.monotonic() + timeout_s
    while True:
        ready = is_ready()
        if not isinstance(ready, bool):
            ready = await ready
        if ready:
            return True
        if has_exited() or time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)


def _tracecode_command() -> list[str]:
    script = Path(sys.executable).with_name("tracecode")
    return [str(script)] if script.exists() else [sys.executable, "-m", "resolver.ops.cli"]


async def get_status(url: str, path: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, bytes]:
    """(status, body) of one `GET path` on a fresh connection to `url` (http://host:port)."""
    status, _, body = await get_answer(url, path, timeout_s=timeout_s)
    return status, body


async def get_answer(url: str, path: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one `GET path` on a fresh connection to `url` (http://host:port)."""
    host, _, port = url.removeprefix("http://").partition(":")

    async def get() -> tuple[int, bytes, bytes]:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = answer.partition(b"\r\n\r\n")
        status, _ = parse_head(head)
        return status, head, body

    return await asyncio.wait_for(get(), timeout_s)


class ServerProcess:
    """`async with ServerProcess(...) as server:` serves on `server.url` until the block ends."""

    ready_mark = b'"status":"ok"'  # in /healthz once every worker could answer: Postgres and Redis are ok

    def __init__(self, *, server: str, workers: int, env: Mapping[str, str], log_path: Path) -> None:
        self.server = server
        self.workers = workers
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self._env = dict(env)
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f"ServerProcess({self.server!r}, workers={self.workers}, url={self.url!r}, pid={pid})"

    @property
    def group(self) -> int | None:
        """The process group of the server and its workers (started in a session of its own)."""
        return self._process.pid if self._process else None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        args = [*_tracecode_command(), "serve", "--server", self.server, "--workers", str(self.workers)]
        args += ["--host", HOST, "--port", str(self.port)]
        self._process = await asyncio.create_subprocess_exec(
            *args, env=self._env, stdout=self._log, stderr=asyncio.subprocess.STDOUT, start_new_session=True
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _is_ready(self) -> bool:
        try:
            status, body = await get_status(self.url, "/healthz")
        except (OSError, TimeoutError, ValueError):
            return False
        return status == 200 and self.ready_mark in body

    async def _wait_ready(self) -> None:
        """Until /healthz answers with `ready_mark`."""
        process = self._process
        assert process is not None
        if await poll_until(
            self._is_ready, timeout_s=START_TIMEOUT_S, has_exited=lambda: process.returncode is not None
        ):
            return
        if process.returncode is not None:
            raise RuntimeError(f"{self!r} exited with {process.returncode}:\n{self.log_tail()}")
        raise RuntimeError(f"{self!r} did not become ready within {START_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    async def stop(self) -> None:
        """SIGINT to the whole group (a graceful stop for both servers), SIGKILL to what is left after a while."""
        process, self._process = self._process, None
        if process is not None:
            group = process.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)  # workers that outlived their supervisor
            await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"
