"""Load generators: wrk when it is installed, else a Python one on raw keep-alive sockets; one interface.

Both run in a process of their own, keep `connections` HTTP/1.1 connections busy for `duration_s`
(closed loop: each connection sends its next request when the answer to the last one is in), ask
for the lines of a paths file in order, so that no path is asked twice until the file is used up,
and report requests, p50 and p99 latency, answers whose status was not an expected one, answers
429 (the service's rate limit), and how many answers came with each status.

    python bench/loadgen.py URL PATHS_FILE --connections 64 --duration 10 --expect 200

runs the Python generator on its own and prints its summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

SUMMARY_MARK = "BENCH_JSON "
WRK_SCRIPT = Path(__file__).with_name("wrk_paths.lua")
WRK_THREADS = 1  # one wrk thread drives far more requests per second than a Python server answers on 2 cores
WRK_TIMEOUT_S = 10
GENERATOR_GRACE_S = 30.0  # on top of the run's duration, before a stuck generator is killed
PYTHON_CONNECT_TIMEOUT_S = 5.0
HTTP_TOO_MANY_REQUESTS = 429


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


def _result(summary: dict[str, Any]) -> LoadResult:
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
        return _result(_summary(text, "wrk"))


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
        return _result(_summary(text, "the python load generator"))


def pick_generator(name: str) -> LoadGenerator:
    """`name` is "auto" (wrk when on PATH, else Python), "wrk" or "python"."""
    wrk = shutil.which("wrk")
    if name == "python" or (name == "auto" and wrk is None):
        return PythonLoad()
    if wrk is None:
        raise SystemExit("wrk is not on PATH: install it (Debian: apt-get install wrk) or use --generator python")
    return Wrk(wrk)


# The Python generator.


class _Run:
    """State shared by the connections of one Python load run."""

    def __init__(self, paths: list[bytes], host: bytes, accept: bytes, expect: set[int], deadline_ns: int) -> None:
        self.paths = paths
        self.next_index = 0
        self.wrapped = 0
        self.host_header = b"Host: " + host + b"\r\n"
        self.accept_header = b"Accept: " + accept + b"\r\n" if accept else b""
        self.expect = expect
        self.deadline_ns = deadline_ns
        self.latencies_ns = array("q")
        self.unexpected = 0
        self.limited = 0
        self.statuses: Counter[int] = Counter()
        self.socket_errors = 0
        self.open_connections = 0
        self.finished = asyncio.Event()

    def request(self) -> bytes:
        if self.next_index == len(self.paths):
            self.next_index = 0
            self.wrapped += 1
        path = self.paths[self.next_index]
        self.next_index += 1
        return b"GET " + path + b" HTTP/1.1\r\n" + self.host_header + self.accept_header + b"\r\n"

    def closed(self) -> None:
        self.open_connections -= 1
        if self.open_connections == 0:
            self.finished.set()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send, read the whole answer (Content-Length framed), send again."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._body_left: int | None = None
        self._status = 0
        self._sent_ns = 0
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        request = self._run.request()
        self._sent_ns = time.perf_counter_ns()
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._body_left is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self._buffer[:end]).lower()
                del self._buffer[: end + 4]
                self._status = int(head[9:12])
                marker = head.find(b"\r\ncontent-length:")
                if marker < 0:
                    self._fail()  # every answer of this service has a Content-Length
                    return
                line_end = head.find(b"\r\n", marker + 2)
                self._body_left = int(head[marker + 17 : line_end if line_end >= 0 else len(head)])
            if len(self._buffer) < self._body_left:
                return
            del self._buffer[: self._body_left]
            self._body_left = None
            self._answered()
            if self._done:
                return

    def _answered(self) -> None:
        now = time.perf_counter_ns()
        run = self._run
        if now > run.deadline_ns:
            self._finish()
            return
        run.latencies_ns.append(now - self._sent_ns)
        run.statuses[self._status] += 1
        if self._status not in run.expect:
            run.unexpected += 1
        if self._status == HTTP_TOO_MANY_REQUESTS:
            run.limited += 1
        self._send()

    def _fail(self) -> None:
        self._run.socket_errors += 1
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            assert self._transport is not None
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done:
            self._done = True
            if time.perf_counter_ns() < self._run.deadline_ns:
                self._run.socket_errors += 1
        self._run.closed()


def _percentile_ms(sorted_ns: list[int], fraction: float) -> float:
    if not sorted_ns:
        return 0.0
    index = min(len(sorted_ns) - 1, max(0, round(fraction * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1e6


async def _python_load(
    url: str, paths: list[bytes], *, connections: int, duration_s: float, expect: set[int], accept: str
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    started_ns = time.perf_counter_ns()
    run = _Run(paths, parts.netloc.encode(), accept.encode(), expect, started_ns + int(duration_s * 1e9))
    run.open_connections = connections
    for _ in range(connections):
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(run), host, port), PYTHON_CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            run.socket_errors += 1
            run.closed()
    await asyncio.wait_for(run.finished.wait(), duration_s + GENERATOR_GRACE_S)
    elapsed_s = min(time.perf_counter_ns(), run.deadline_ns) - started_ns
    latencies = sorted(run.latencies_ns)
    return {
        "requests": len(latencies),
        "duration_s": elapsed_s / 1e9,
        "p50_ms": _percentile_ms(latencies, 0.50),
        "p99_ms": _percentile_ms(latencies, 0.99),
        "max_ms": latencies[-1] / 1e6 if latencies else 0.0,
        "unexpected": run.unexpected,
        "limited": run.limited,
        "socket_errors": run.socket_errors,
        "timeouts": 0,
        "wrapped": run.wrapped,
        "paths": len(paths),
        "statuses": {str(status): n for status, n in sorted(run.statuses.items())},
    }


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
    load = _python_load(
        args.url, paths, connections=args.connections, duration_s=args.duration, expect=expect, accept=args.accept
    )
    try:
        import uvloop
    except ImportError:  # uvloop comes with uvicorn[standard]; plain asyncio does too, only slower
        summary = asyncio.run(load)
    else:
        summary = uvloop.run(load)
    print(SUMMARY_MARK + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
