"""Package label issuance: the labels request's commit and the streamed answer, with time and memory.

    .venv/bin/python bench/labels.py [--codes 1000000] [--rounds 3] [--stream 10000000]

On a database of its own (bench/dataset.py) with one batch, each round issues `--codes` package codes through
resolver.api.labels.issue_labels (reserve the range, store it with the commissioning event, commit; no row per code),
then starts `tracecode serve` (one worker) and asks POST /api/v1/batches/{code}/labels for 1,000 codes (the
server's first label request loads the compiled kernel), for `--codes` and for `--stream` codes, reading the CSV
answer as it streams and throwing it away. For each: seconds to the answer's first byte (the codes are committed
by then), seconds to its last byte, codes per second, and the peak RSS of the process doing the work (this one, or
the server's processes) sampled every 10 ms, beside its RSS before. (Until the codes became ranges, the in-process
part compared four ways of COPYing one row per code; `git log bench/labels.py` has them.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from dataset import Dataset, bench_dataset
from report import OUT_DIR, describe_machine, table
from serverproc import ServerProcess

from codegen.kernels import warm
from resolver import db
from resolver.api import labels
from resolver.api.issuer import CodeIssuer

DEFAULT_CODES = 1_000_000
DEFAULT_STREAM_CODES = 10_000_000
DEFAULT_ROUNDS = 3
WARMUP_CODES = 1_000  # the server's first label request loads the compiled kernel: kept out of the comparison
TARGET_S = 3.0  # the issue's aim for 1,000,000 codes, end to end
RSS_SAMPLE_INTERVAL_S = 0.01
HTTP_TIMEOUT_S = 1_800.0  # the 10M answer starts only after its COPY has committed
READ_CHUNK_BYTES = 1 << 20
PUBLIC_URL = "https://trace.example.cn"
_PROC = Path("/proc")
_PAGE_KB = os.sysconf("SC_PAGESIZE") // 1024
IN_PROCESS_WAY = "issue_labels"


@dataclass(frozen=True, slots=True)
class Run:
    way: str
    codes: int
    first_byte_s: float | None  # HTTP only: when the answer started, i.e. the codes were committed
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float

    @property
    def codes_per_s(self) -> float:
        return self.codes / self.seconds


def _rss_kb(pid: int) -> int:
    try:
        return int((_PROC / str(pid) / "statm").read_text().split()[1]) * _PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def _group_pids(group: int) -> list[int]:
    pids = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[2]) == group:
                pids.append(int(entry.name))
    return pids


class RssSampler:
    """The largest total RSS of the processes `pids()` names, sampled in a thread until the block ends."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self.before_kb = sum(_rss_kb(p) for p in pids())
        self.peak_kb = self.before_kb
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __repr__(self) -> str:
        return f"RssSampler(before_kb={self.before_kb}, peak_kb={self.peak_kb})"

    def _run(self) -> None:
        pids = self._pids()
        while not self._stop.wait(RSS_SAMPLE_INTERVAL_S):
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _in_process(data: Dataset, codes: int, rounds: int) -> list[Run]:
    secret = data.secret.encode()
    issuer = CodeIssuer(secret)
    pool = await db.create_pool(data.database_url, min_size=1, max_size=2)
    runs: list[Run] = []
    try:
        batch = await labels.find_batch(pool, data.batch_code)
        for _ in range(rounds):
            with RssSampler(lambda: [os.getpid()]) as rss:
                started = time.perf_counter()
                await labels.issue_labels(pool, issuer, secret, batch, codes)
                seconds = time.perf_counter() - started
            runs.append(Run(IN_PROCESS_WAY, codes, None, seconds, rss.before_kb / 1024, rss.peak_kb / 1024))
            print(f"  {_row(runs[-1])}", flush=True)
    finally:
        await pool.close()
    return runs


async def _over_http(data: Dataset, counts: list[int], server: str) -> list[Run]:
    admin_token = "bench-" + secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=data.database_url,
        REDIS_URL=data.redis_url,
        TRACECODE_SECRET=data.secret,
        TRACECODE_ADMIN_TOKEN=admin_token,
        TRACECODE_PUBLIC_URL=PUBLIC_URL,
    )
    runs: list[Run] = []
    log_path = OUT_DIR / f"labels-server-{server}.log"
    async with (
        ServerProcess(server=server, workers=1, env=env, log_path=log_path) as process,
        httpx.AsyncClient(base_url=process.url, timeout=HTTP_TIMEOUT_S) as client,
    ):
        group = process.group
        assert group is not None
        for count in counts:
            received = 0
            first_byte_s = 0.0
            with RssSampler(lambda: _group_pids(group)) as rss:
                started = time.perf_counter()
                async with client.stream(
                    "POST",
                    f"/api/v1/batches/{data.batch_code}/labels",
                    json={"count": count},
                    headers={"Authorization": f"Bearer {admin_token}"},
                ) as response:
                    first_byte_s = time.perf_counter() - started
                    if response.status_code != 201:
                        raise RuntimeError(f"{response.status_code}: {(await response.aread())[:500]!r}")
                    async for piece in response.aiter_raw(READ_CHUNK_BYTES):
                        received += len(piece)
                seconds = time.perf_counter() - started
            expected = labels.csv_length(count, labels.url_prefix(PUBLIC_URL).encode())
            if received != expected:
                raise RuntimeError(f"answer of {received} bytes, expected {expected}")
            run = Run(f"HTTP ({server})", count, first_byte_s, seconds, rss.before_kb / 1024, rss.peak_kb / 1024)
            runs.append(run)
            print(f"  {_row(run)}", flush=True)
    return runs


HEADERS = (
    "way",
    "codes",
    "committed s",
    "seconds",
    "codes/s",
    "RSS before MB",
    "peak RSS MB",
    "growth MB",
)


def _row(run: Run) -> str:
    return "  ".join(_cells(run))


def _cells(run: Run) -> list[str]:
    committed = "" if run.first_byte_s is None else f"{run.first_byte_s:.2f}"
    return [
        run.way, f"{run.codes:,}", committed, f"{run.seconds:.2f}",
        f"{run.codes_per_s:,.0f}", f"{run.rss_before_mb:.0f}", f"{run.rss_peak_mb:.0f}",
        f"{run.rss_peak_mb - run.rss_before_mb:.0f}",
    ]  # fmt: skip


def _summary(runs: list[Run], codes: int) -> list[str]:
    by_way: dict[str, list[float]] = {}
    for run in runs:
        if run.first_byte_s is None:
            by_way.setdefault(run.way, []).append(run.seconds)
    lines = []
    for way, seconds in by_way.items():
        lines.append(f"{way}: median {statistics.median(seconds):.3f} s for {codes:,} codes (committed)")
    http = [r for r in runs if r.first_byte_s is not None and r.codes != WARMUP_CODES]
    if http:
        first = http[0]
        verdict = "met" if first.codes == DEFAULT_CODES and first.seconds <= TARGET_S else "not met"
        lines.append(
            f"over HTTP: {first.codes:,} codes committed in {first.first_byte_s:.2f} s, answered in "
            f"{first.seconds:.2f} s (aim {TARGET_S:g} s for 1,000,000 end to end: {verdict})"
        )
        if len(http) > 1:
            growth = ", ".join(f"{r.codes:,}: +{r.rss_peak_mb - r.rss_before_mb:.0f} MB" for r in http)
            lines.append(f"server RSS growth during the request ({growth}): flat if these are about equal")
    return lines


async def _postgres_settings(url: str) -> str:
    conn = await db.connect(url)
    try:
        names = ("server_version", "shared_buffers", "max_wal_size", "synchronous_commit", "lc_collate")
        values = [f"{n}={await conn.fetchval(f'SHOW {n}')}" for n in names]
    finally:
        await conn.close()
    return "postgres: " + ", ".join(values)


async def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="package label issuance: time and memory")
    parser.add_argument("--codes", type=int, default=DEFAULT_CODES, help="codes per issuance (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds of the in-process issuance")
    parser.add_argument(
        "--stream", type=int, default=DEFAULT_STREAM_CODES, help="codes of the big HTTP answer; 0: none"
    )
    parser.add_argument("--server", choices=("granian", "uvicorn"), default="granian")
    args = parser.parse_args(argv)
    warm()
    print(describe_machine())
    async with bench_dataset(1) as data:
        print(await _postgres_settings(data.database_url))
        print(f"in process, {args.rounds} round(s):")
        runs = await _in_process(data, args.codes, args.rounds)
        print("over HTTP, the CSV answer streamed and discarded:")
        counts = [WARMUP_CODES, args.codes] + ([args.stream] if args.stream else [])
        runs += await _over_http(data, counts, args.server)
    print()
    print(table(HEADERS, [_cells(r) for r in runs]))
    print()
    print("\n".join(_summary(runs, args.codes)))
    print(describe_machine().partition(";")[0].replace("machine", "machine at the end"))
    print(f"reproduce: .venv/bin/python bench/labels.py {shlex.join(argv)}".rstrip())
    return 0


def main() -> int:
    return asyncio.run(run(sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
