"""What issued package codes cost Postgres: bytes per code, and how long a very large labels request takes.

On a fresh database of its own (bench/dataset.py), with its batches registered first, it reads the
database's size after a CHECKPOINT (`pg_database_size`, and each table with its indexes, TOAST and
partitions), issues PRINT_RUNS labels requests of PRINT_RUN_CODES package codes each through
`resolver.api.labels.issue_labels` (one per batch: a realistic print run), reads the size again the same
way, then issues LARGE_REQUEST_CODES codes in one request, timed to its return (it returns once the
codes are committed; streaming the CSV answer is separate), and reads the size once more. Every
request also stores what the product stores with it (the commissioning event, the producer's
last_issued_at, the reserved sequence), so bytes per code are what a label costs, all in.

What a scanned code costs Redis is read during the first-scan phase instead (bench/phases.py,
`reads_memory`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from dataset import SEED_POOL_SIZE, add_batches, bench_database

from resolver import db
from resolver.api.issuer import CodeIssuer
from resolver.api.labels import find_batch, issue_labels

PRINT_RUNS = 1_000  # labels requests, one per batch
PRINT_RUN_CODES = 1_000  # package codes per request: 1,000,000 in all
LARGE_REQUEST_CODES = 10_000_000  # the most one labels request may ask (resolver.api.labels.MAX_LABELS_PER_REQUEST)
CHECKPOINT_TIMEOUT_S = 600.0  # after 10,000,000 rows a checkpoint writes gigabytes
SIZE_QUERY_TIMEOUT_S = 60.0
_TABLE_SIZES = """
SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text AS name,
       sum(pg_total_relation_size(c.oid))::bigint AS bytes
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm')
 GROUP BY 1
"""


@dataclass(frozen=True, slots=True)
class DatabaseSize:
    """The database's size on disk and each table's (with its indexes, TOAST and partitions), in bytes."""

    total_bytes: int
    tables: Mapping[str, int]
    is_checkpointed: bool  # False: CHECKPOINT was refused (not a superuser), read without one

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> DatabaseSize:
        """After a CHECKPOINT where allowed, so that two readings are taken the same way."""
        try:
            await conn.execute("CHECKPOINT", timeout=CHECKPOINT_TIMEOUT_S)
            is_checkpointed = True
        except asyncpg.InsufficientPrivilegeError:
            is_checkpointed = False
        total: int = await conn.fetchval("SELECT pg_database_size(current_database())", timeout=SIZE_QUERY_TIMEOUT_S)
        rows = await conn.fetch(_TABLE_SIZES, timeout=SIZE_QUERY_TIMEOUT_S)
        return cls(total, {row["name"]: row["bytes"] for row in rows}, is_checkpointed)


@dataclass(frozen=True, slots=True)
class SizeStep:
    """Package codes issued between two readings of the database's size."""

    name: str
    codes_per_request: int
    request_seconds: Sequence[float]  # each labels request, timed to its return (committed)
    before: DatabaseSize
    after: DatabaseSize

    @property
    def requests(self) -> int:
        return len(self.request_seconds)

    @property
    def codes(self) -> int:
        return self.requests * self.codes_per_request

    @property
    def grew_bytes(self) -> int:
        return self.after.total_bytes - self.before.total_bytes

    @property
    def bytes_per_code(self) -> float:
        return self.grew_bytes / self.codes if self.codes else 0.0

    def grown_tables(self) -> list[tuple[str, int]]:
        """(table, bytes it grew) of the tables that grew, the most first."""
        after, before = self.after.tables, self.before.tables
        grown = [(name, size - before.get(name, 0)) for name, size in after.items()]
        return sorted(((name, n) for name, n in grown if n > 0), key=lambda item: -item[1])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "codes_per_request": self.codes_per_request,
            "codes": self.codes,
            "request_seconds_total": round(sum(self.request_seconds), 3),
            "request_seconds_max": round(max(self.request_seconds, default=0.0), 3),
            "database_bytes_before": self.before.total_bytes,
            "database_bytes_after": self.after.total_bytes,
            "bytes_per_code": round(self.bytes_per_code, 2),
            "tables_grew_bytes": dict(self.grown_tables()),
            "checkpointed": self.before.is_checkpointed and self.after.is_checkpointed,
        }


async def _issue_step(
    pool: asyncpg.Pool, conn: asyncpg.Connection, secret: bytes, name: str, batch_codes: Sequence[str], count: int
) -> SizeStep:
    """One labels request of `count` codes for each of `batch_codes`, one after the other, between two readings
    of the size (through `conn`, a connection to the same database apart from `pool`)."""
    issuer = CodeIssuer(secret)
    before = await DatabaseSize.read(conn)
    seconds = []
    for batch_code in batch_codes:
        batch = await find_batch(pool, batch_code)
        started = time.perf_counter()
        await issue_labels(pool, issuer, secret, batch, count)
        seconds.append(time.perf_counter() - started)
    return SizeStep(name, count, seconds, before, await DatabaseSize.read(conn))


async def measure_postgres_sizes(
    *, print_runs: int = PRINT_RUNS, print_run_codes: int = PRINT_RUN_CODES, large_codes: int = LARGE_REQUEST_CODES
) -> list[SizeStep]:
    """`print_runs` requests of `print_run_codes` codes, then one of `large_codes` (none for 0), on a database of
    their own with the batches registered before the first reading; each step with the sizes around it."""
    secret = secrets.token_urlsafe(32).encode()
    async with bench_database() as database:
        pool = await db.create_pool(database.url, min_size=1, max_size=SEED_POOL_SIZE)
        conn = await db.connect(database.url)
        try:
            batch_codes = await add_batches(pool, CodeIssuer(secret), print_runs + (1 if large_codes else 0))
            await conn.execute("VACUUM ANALYZE", timeout=SIZE_QUERY_TIMEOUT_S)  # the batches' own dead rows and maps
            steps = [await _issue_step(pool, conn, secret, "print runs", batch_codes[:print_runs], print_run_codes)]
            if large_codes:
                steps.append(
                    await _issue_step(pool, conn, secret, "one request", batch_codes[print_runs:], large_codes)
                )
        finally:
            await conn.close()
            await pool.close()
    return steps
