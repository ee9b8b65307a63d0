"""The benchmarks' HTTP load: one Python load client, and wrk beside it for the GETs of a paths file.

The load client (`Tally`, `Connection`, `open_connections`, `run_closed_loop`) keeps HTTP/1.1 connections
busy on raw keep-alive sockets in one asyncio process (uvloop when installed): closed loop, each
connection sends its next request when the answer to the last one is in, until a deadline; it times
each answer and counts statuses, errors and answers never received. bench/gate.py drives its scans
with it; the resolve and servers benchmarks use it as their Python generator.

The generators of those two (`pick_generator`: wrk when it is installed, else the Python one) run in a
process of their own, ask for the lines of a paths file in order, so that no path is asked twice until
the file is used up, and report requests, p50 and p99 latency (`percentile`, nearest rank), answers
whose status was not an expected one, answers 429 (the service's rate limit), and how many answers
came with each status.

    python bench/loadgen.py URL PATHS_FILE --connections 64 --duration 10 --expect 200

runs the Python generator on its own and prints its summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import shutil
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

SUMMARY_MARK = "BENCH_JSON "
WRK_SCRIPT = Path(__file__).with_name("wrk_paths.lua")
WRK_THREADS = 1  # one wrk thread drives far more requests per second than a Python server answers on 2 cores
WRK_TIMEOUT_S = 10
GENERATOR_GRACE_S = 30.0  # on top of the run's duration, before a stuck generator is killed
CONNECT_TIMEOUT_S = 5.0
HTTP_TOO_MANY_REQUESTS = 429

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured."""

    requests: int  # answers received within the run
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    unexpected: int  # answers whose status was not an expected one
    limited: int  # answers 429 Too Many Requests (expected or not)
    socket_errors: int  # connect, read and write errors
    timeouts: int
    wrapped: int  # times the paths file was used up and started again (0 = no path asked twice)
    paths: int  # lines of the paths file that the generator loaded
    statuses: Mapping[int, int] = field(default_factory=dict)  # answers by HTTP status

    @property
    def non_2xx(self) -> dict[int, int]:
        """Answers whose status was not 2xx, by status."""
        return {status: n for status, n in sorted(self.statuses.items()) if not 200 <= status < 300}

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.unexpected + self.socket_errors + self.timeouts


class LoadGenerator(Protocol):
    name: str

    async def run(
        self,
        url: str,
        paths_file: Path,
        *,
        connections: int,
        duration_s: float,
        expect: Sequence[int],
        accept: str = "",
    ) -> LoadResult: ...


async def _run_command(args: Sequence[str], timeout_s: float) -> str:
    """The standard output of `args`; RuntimeError with its output when it fails."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{args[0]} did not finish within {timeout_s:.0f}s") from None
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {process.returncode}:\n{text}")
    return text


def _summary(text: str, generator: str) -> dict[str, Any]:
    for line in text.splitlines():
        if line.startswith(SUMMARY_MARK):
            summary: dict[str, Any] = json.loads(line[len(SUMMARY_MARK) :])
            return summary
    raise RuntimeError(f"{generator} printed no summary:\n{text}")


def load_result(summary: dict[str, Any]) -> LoadResult:
    """The LoadResult of a generator's JSON summary."""
    return LoadResult(
        requests=int(summary["requests"]),
        duration_s=summary["duration_s"],
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        max_ms=summary["max_ms"],
        unexpected=int(summary["unexpected"]),
        limited=int(summary["limited"]),
        socket_errors=int(summary["socket_errors"]),
        timeouts=int(summary["timeouts"]),
        wrapped=int(summary["wrapped"]),
        paths=int(summary["paths"]),
        statuses={int(status): int(n) for status, n in summary.get("statuses", {}).items()},
    )


class Wrk:
    """wrk (C, epoll) with bench/wrk_paths.lua."""

    __slots__ = ("executable", "name", "threads")

    def __init__(self, executable: str, *, threads: int = WRK_THREADS) -> None:
        self.executable = executable
        self.threads = threads
        self.name = f"wrk ({threads} thread{'s' if threads > 1 else ''})"

    def __repr__(self) -> str:
        return f"Wrk({self.executable!r}, threads={self.threads})"

    async def run(
        self,
        url: str,
        paths_file: Path,
        *,
        connections: int,
        duration_s: float,
        expect: Sequence[int],
        accept: str = "",
    ) -> LoadResult:
        args = [
            self.executable,
            f"-t{self.threads}",
            f"-c{max(connections, self.threads)}",
            f"-d{duration_s:g}s",
            f"--timeout={WRK_TIMEOUT_S}s",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            str(paths_file),
            ",".join(map(str, expect)),
            str(self.threads),
            accept,
        ]
        text = await _run_command(args, duration_s + GENERATOR_GRACE_S)
        return load_result(_summary(text, "wrk"))


class PythonLoad:
    """This module run as a process of its own: asyncio (uvloop when installed) on raw sockets."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "python (asyncio, 1 process)"

    def __repr__(self) -> str:
        return "PythonLoad()"

    async def run(
        self,
        url: str,
        paths_file: Path,
        *,
        connections: int,
        duration_s: float,
        expect: Sequence[int],
        accept: str = "",
    ) -> LoadResult:
        args = [
            sys.executable,
            str(Path(__file__)),
            url,
            str(paths_file),
            f"--connections={connections}",
            f"--duration={duration_s}",
            f"--expect={','.join(map(str, expect))}",
            f"--accept={accept}",
        ]
        text = await _run_command(args, duration_s + GENERATOR_GRACE_S)
        return load_result(_summary(text, "the python load generator"))


def pick_generator(name: str) -> LoadGenerator:
    """`name` is "auto" (wrk when on PATH, else Python), "wrk" or "python"."""
    wrk = shutil.which("wrk")
    if name == "python" or (name == "auto" and wrk is None):
        return PythonLoad()
    if wrk is None:
        raise SystemExit("wrk is not on PATH: install it (Debian: apt-get install wrk) or use --generator python")
    return Wrk(wrk)


# The load client: keep-alive connections of one process, on asyncio (uvloop when installed).


class Tally:
    """What the connections of one run saw. An answer in flight at the deadline is waited for and given to
    `answered_late()`, which counts nothing here; a subclass that reads the answers' bodies sets `reads_bodies`."""

    reads_bodies = False  # False: the connections hand every answer an empty body and skip the copy

    def __init__(self, expect: Collection[int]) -> None:
        self.expect = frozenset(expect)
        self.deadline_ns = sys.maxsize  # set when the run starts
        self.latencies_ns = array("q")
        self.unexpected = 0  # answers within the run whose status was not an expected one
        self.limited = 0  # ... answered 429 Too Many Requests
        self.statuses: Counter[int] = Counter()
        self.socket_errors = 0  # connect, read and write errors, and answers that could not be framed
        self.lost = 0  # requests sent whose answer never came
        self.open_connections = 0
        self.finished = asyncio.Event()

    def answered(self, status: int, body: bytes, latency_ns: int) -> None:
        """An answer that came within the run."""
        self.latencies_ns.append(latency_ns)
        self.statuses[status] += 1
        if status not in self.expect:
            self.unexpected += 1
        if status == HTTP_TOO_MANY_REQUESTS:
            self.limited += 1

    def answered_late(self, status: int, body: bytes) -> None:
        """An answer that was in flight when the deadline passed."""

    def closed(self) -> None:
        self.open_connections -= 1
        if self.open_connections <= 0:
            self.finished.set()

    def summary(self, elapsed_ns: int) -> dict[str, Any]:
        """The JSON summary of the run: requests, duration, latency, unexpected statuses and errors."""
        latencies = sorted(self.latencies_ns)
        return {
            "requests": len(latencies),
            "duration_s": elapsed_ns / 1e9,
            "p50_ms": percentile(latencies, 0.50) / 1e6 if latencies else 0.0,
            "p99_ms": percentile(latencies, 0.99) / 1e6 if latencies else 0.0,
            "max_ms": latencies[-1] / 1e6 if latencies else 0.0,
            "unexpected": self.unexpected,
            "limited": self.limited,
            "socket_errors": self.socket_errors,
            "lost": self.lost,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
        }


def parse_head(head: bytes) -> tuple[int, int | None]:
    """(status, Content-Length or None) of an answer's status line and headers, without the blank line."""
    head = head.lower()
    status = int(head[9:12])
    marker = head.find(b"\r\ncontent-length:")
    if marker < 0:
        return status, None
    line_end = head.find(b"\r\n", marker + 2)
    return status, int(head[marker + 17 : line_end if line_end >= 0 else len(head)])


class Connection(asyncio.Protocol):
    """One keep-alive connection: send, read the whole answer (Content-Length framed), send again until the
    deadline; the answer in flight at the deadline is waited for, then the connection closes."""

    def __init__(self, tally: Tally, request: Callable[[], bytes]) -> None:
        self._tally = tally
        self._request = request
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._body_left: int | None = None
        self._status = 0
        self._sent_ns = 0
        self._is_pending = False
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self) -> None:
        assert self._transport is not None
        request = self._request()
        self._is_pending = True
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while not self._done:
            if self._body_left is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._status, length = parse_head(bytes(self._buffer[:end]))
                del self._buffer[: end + 4]
                if length is None:
                    self._fail()  # every answer of this service has a Content-Length
                    return
                self._body_left = length
            if len(self._buffer) < self._body_left:
                return
            body = bytes(self._buffer[: self._body_left]) if self._tally.reads_bodies else b""
            del self._buffer[: self._body_left]
            self._body_left = None
            self._answered(body)

    def _answered(self, body: bytes) -> None:
        now = time.perf_counter_ns()
        self._is_pending = False
        tally = self._tally
        if now > tally.deadline_ns:
            tally.answered_late(self._status, body)
            self._finish()
            return
        tally.answered(self._status, body, now - self._sent_ns)
        self.send()

    def _fail(self) -> None:
        self._tally.socket_errors += 1
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            assert self._transport is not None
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        tally = self._tally
        if self._is_pending:
            tally.lost += 1
        if not self._done:
            self._done = True
            if time.perf_counter_ns() < tally.deadline_ns:
                tally.socket_errors += 1
        tally.closed()


async def open_connections(
    url: str, tally: Tally, requests: Sequence[Callable[[], bytes]], *, timeout_s: float = CONNECT_TIMEOUT_S
) -> list[Connection]:
    """One idle connection to `url` per request source; one that cannot be opened counts as a socket error."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    connections = []
    for request in requests:
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(functools.partial(Connection, tally, request), host, port), timeout_s
            )
        except (OSError, TimeoutError):
            tally.socket_errors += 1
        else:
            connections.append(connection)
    tally.open_connections = len(connections)
    return connections


async def run_closed_loop(connections: Sequence[Connection], tally: Tally, duration_s: float) -> int:
    """Each connection sends its next request when the answer to the last one is in, for `duration_s`; returns the
    nanoseconds measured (the answers in flight at the deadline are waited for, but not timed)."""
    started_ns = time.perf_counter_ns()
    tally.deadline_ns = started_ns + int(duration_s * 1e9)
    if not connections:
        tally.finished.set()
    for connection in connections:
        connection.send()
    await asyncio.wait_for(tally.finished.wait(), duration_s + GENERATOR_GRACE_S)
    return min(time.perf_counter_ns(), tally.deadline_ns) - started_ns


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run with uvloop's event loop when it is installed."""
    try:
        import uvloop
    except ImportError:  # uvloop comes with uvicorn[standard]; plain asyncio does too, only slower
        return asyncio.run(main)
    return uvloop.run(main)


def nearest_rank(fraction: float, count: int) -> int:
    """The 1-based rank of the `fraction` percentile of `count` values: the smallest with at least that share of
    the values at or below it."""
    return min(count, max(1, math.ceil(fraction * count)))


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of values sorted in ascending order; NaN for none."""
    if not ordered:
        return math.nan
    return ordered[nearest_rank(fraction, len(ordered)) - 1]


# The Python generator: this module run as a process of its own.


class PathRequests:
    """GET requests for `paths` in order, every connection drawing the next; after the last, the first again."""

    def __init__(self, paths: Sequence[bytes], host: bytes, accept: bytes) -> None:
        self.paths = paths
        self.next_index = 0
        self.wrapped = 0  # times the paths were used up and started again
        self.host_header = b"Host: " + host + b"\r\n"
        self.accept_header = b"Accept: " + accept + b"\r\n" if accept else b""

    def __repr__(self) -> str:
        return f"PathRequests({len(self.paths)} paths, next={self.next_index}, wrapped={self.wrapped})"

    def __call__(self) -> bytes:
        if self.next_index == len(self.paths):
            self.next_index = 0
            self.wrapped += 1
        path = self.paths[self.next_index]
        self.next_index += 1
        return b"GET " + path + b" HTTP/1.1\r\n" + self.host_header + self.accept_header + b"\r\n"


async def _python_load(
    url: str, paths: list[bytes], *, connections: int, duration_s: float, expect: set[int], accept: str
) -> dict[str, Any]:
    tally = Tally(expect)
    requests = PathRequests(paths, urlsplit(url).netloc.encode(), accept.encode())
    opened = await open_connections(url, tally, [requests] * connections)
    elapsed_ns = await run_closed_loop(opened, tally, duration_s)
    return tally.summary(elapsed_ns) | {"timeouts": 0, "wrapped": requests.wrapped, "paths": len(paths)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="closed-loop HTTP/1.1 load on keep-alive connections")
    parser.add_argument("url")
    parser.add_argument("paths_file", type=Path)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--expect", default="200", help="comma-separated statuses that count as answered right")
    parser.add_argument("--accept", default="")
    args = parser.parse_args(argv)
    paths = [line.encode() for line in args.paths_file.read_text().splitlines() if line]
    expect = {int(status) for status in args.expect.split(",")}
    summary = run_fast(
        _python_load(
            args.url, paths, connections=args.connections, duration_s=args.duration, expect=expect, accept=args.accept
        )
    )
    print(SUMMARY_MARK + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
