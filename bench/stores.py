"""What the service asked of its stores: Redis commands by name and Postgres transactions, read around a run.

A count of store I/O is only a proof when nobody else adds to it. Postgres is easy: the benchmark
has a database of its own, and pg_stat_database counts its transactions (read through a connection
to another database, so the reading adds nothing). Redis is not: its counters are server-wide, and
on a shared machine other people's tests and benchmarks use the same server. `PrivateRedis` starts
a redis-server of the benchmark's own on a free port (nothing saved to disk), so that every command
it counts came from the service under test, apart from the probe's own INFO and DBSIZE, which are
left out by name.

`RedisMemory` reads what the server holds (INFO memory's used_memory, the clients' buffers in it, and
DBSIZE of the service's database), so that two readings around a run give Redis's bytes per code.

Postgres publishes a backend's counters late: when the backend goes idle, at most once a second,
and a backend that goes idle within a second of its last report reports again only after 10 s
(PGSTAT_IDLE_INTERVAL). So Postgres is read PG_REPORT_LAG_S after the work it should count has
stopped (`read_postgres(settle_s=...)`), while Redis, which counts as it goes, is read at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import asyncpg
import redis.asyncio as aioredis
from serverproc import HOST, ServerProcess, free_port, poll_until

SETTLE_S = 1.2  # a busy Postgres backend reports its counters at least once a second
PG_REPORT_LAG_S = 11.0  # ... and one that went idle right after a report, 10 s later
PROBE_COMMANDS = frozenset({"info", "dbsize"})  # what reading the counters sends; never sent by the service
MEMORY_SETTLE_S = 1.0  # the service adds its scans to Redis 4 times a second: all of a run's are in after this
REDIS_START_TIMEOUT_S = 10.0
REDIS_POLL_S = 0.05
REDIS_STOP_TIMEOUT_S = 5.0
_PG_COUNTERS = """
SELECT xact_commit + xact_rollback AS xacts, tup_returned, tup_fetched
  FROM pg_stat_database WHERE datname = $1
"""


@dataclass(frozen=True, slots=True)
class StoreIO:
    """Counters of the service's store I/O; subtract two readings to get what happened in between."""

    redis_commands: Mapping[str, int] = field(default_factory=dict)  # by command name, the probe's left out
    postgres_xacts: int = 0  # transactions of the benchmark's database (each query outside one is one)
    postgres_rows: int = 0  # rows returned and fetched
    seconds: float = 0.0  # wall time between the two readings (for a difference)

    def __sub__(self, other: StoreIO) -> StoreIO:
        names = set(self.redis_commands) | set(other.redis_commands)
        commands = {n: self.redis_commands.get(n, 0) - other.redis_commands.get(n, 0) for n in names}
        return StoreIO(
            {n: c for n, c in sorted(commands.items()) if c},
            self.postgres_xacts - other.postgres_xacts,
            self.postgres_rows - other.postgres_rows,
            self.seconds - other.seconds,
        )

    @property
    def redis_total(self) -> int:
        return sum(self.redis_commands.values())

    def describe_commands(self) -> str:
        """e.g. "evalsha 48, hmget 6"; "none" when there were none."""
        return ", ".join(f"{name} {count:,}" for name, count in self.redis_commands.items()) or "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "redis_commands": self.redis_total,
            "redis_by_command": dict(self.redis_commands),
            "postgres_xacts": self.postgres_xacts,
            "postgres_rows": self.postgres_rows,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class RedisMemory:
    """What Redis holds at one moment: the server's memory (INFO memory) and the keys of one database."""

    used_bytes: int  # used_memory: everything Redis allocated, data and overhead
    clients_bytes: int  # mem_clients_normal: the clients' query and output buffers, which come and go with load
    dataset_bytes: int  # used_memory_dataset: used_memory less the server's overhead (clients, key tables, ...)
    keys: int  # DBSIZE of the database read

    @classmethod
    async def read(cls, client: aioredis.Redis) -> RedisMemory:
        """INFO memory of `client`'s server and DBSIZE of its database."""
        memory: dict[str, Any] = await client.info("memory")
        keys: int = await client.dbsize()
        return cls(
            int(memory["used_memory"]), int(memory["mem_clients_normal"]), int(memory["used_memory_dataset"]), keys
        )

    @property
    def stored_bytes(self) -> int:
        """used_memory less the clients' buffers: what the data costs, keys and their tables included."""
        return self.used_bytes - self.clients_bytes

    def to_json(self) -> dict[str, int]:
        return {
            "used_memory": self.used_bytes,
            "mem_clients_normal": self.clients_bytes,
            "used_memory_dataset": self.dataset_bytes,
            "keys": self.keys,
        }


@dataclass(frozen=True, slots=True)
class RedisGrowth:
    """Redis before a run and after it (MEMORY_SETTLE_S after the last answer): what the run left there."""

    before: RedisMemory
    after: RedisMemory

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before.to_json(), "after": self.after.to_json()}


@dataclass(slots=True)
class StoreProbe:
    """Reads the counters: `redis` is a client of the server the service uses, `admin` a Postgres connection
    to some database other than `database` (the service's)."""

    redis: aioredis.Redis
    admin: asyncpg.Connection
    database: str
    is_private_redis: bool  # False: Redis's counts include whatever else uses that server

    async def read_redis(self) -> dict[str, int]:
        """The server's command counts by name, the probe's own left out."""
        stats: dict[str, Any] = await self.redis.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name.removeprefix("cmdstat_") not in PROBE_COMMANDS
        }

    async def read_postgres(self, *, settle_s: float = 0.0) -> tuple[int, int]:
        """(transactions, rows) of the service's database so far, after waiting `settle_s` for late reports."""
        if settle_s > 0:
            await asyncio.sleep(settle_s)
        row = await self.admin.fetchrow(_PG_COUNTERS, self.database)
        return (int(row["xacts"]), int(row["tup_returned"] + row["tup_fetched"])) if row else (0, 0)

    async def read(self, *, settle_s: float = 0.0) -> StoreIO:
        """Redis now, Postgres after `settle_s`; the time is Redis's."""
        commands = await self.read_redis()
        at = time.monotonic()
        xacts, rows = await self.read_postgres(settle_s=settle_s)
        return StoreIO(commands, xacts, rows, at)

    async def idle(self, seconds: float) -> StoreIO:
        """What the service does on its own in `seconds` without a request: its background work. Waits first
        until the Postgres counters of earlier work are in, so that they are not put on the idle interval."""
        await asyncio.sleep(PG_REPORT_LAG_S)
        before = await self.read()
        await asyncio.sleep(seconds)
        return await self.read(settle_s=SETTLE_S) - before


class PrivateRedis:
    """`async with PrivateRedis() as r:` a redis-server of our own on `r.url` (no persistence) until the block ends."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self._process: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __repr__(self) -> str:
        return f"PrivateRedis(url={self.url!r}, pid={self.pid})"

    @classmethod
    def find(cls) -> PrivateRedis | None:
        executable = shutil.which("redis-server")
        return cls(executable) if executable else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def __aenter__(self) -> Self:
        self._dir = tempfile.TemporaryDirectory(prefix="tracecode-bench-redis-")
        self._process = await asyncio.create_subprocess_exec(
            self.executable, "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no",
            "--dir", self._dir.name, "--databases", "32", "--loglevel", "warning",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        process = self._process
        client = aioredis.Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                await client.ping()
            except (OSError, aioredis.ConnectionError):
                return False
            return True

        try:
            started = await poll_until(
                answers, timeout_s=REDIS_START_TIMEOUT_S, poll_s=REDIS_POLL_S,
                has_exited=lambda: process.returncode is not None,
            )  # fmt: skip
        finally:
            await client.aclose()
        if not started:
            await self._stop()
            raise RuntimeError(f"{self!r} did not start")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), REDIS_STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None


class DegradedServerProcess(ServerProcess):
    """A server that is ready when Postgres answers, whether Redis does or not (for the Postgres-only phase,
    started with a Redis URL that nothing listens on). ServerProcess itself waits for both."""

    ready_mark = b'"postgres":"ok"'


def unreachable_redis_url(db: int = 0) -> str:
    """A Redis URL on a local port that nothing listens on (right now)."""
    return f"redis://{HOST}:{free_port()}/{db}"
