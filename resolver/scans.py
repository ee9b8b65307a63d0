"""Consumer scan counts: counted in Redis on every resolve, flushed to Postgres every few seconds.

Each process remembers which codes it counted since its last flush and writes their totals (never
less than Postgres already has), so a scan is never a Postgres write, and a restart of Redis or of
the service loses at most the last interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import asyncpg

from cache.store import REDIS_ERRORS, DocumentCache
from resolver import queries

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
FLUSH_CHUNK = 1_000  # codes per Redis pipeline and Postgres statement


class ScanLedger:
    """The codes this process counted since its last flush."""

    __slots__ = ("_cache", "_pool", "_touched", "flushed")

    def __init__(self, pool: asyncpg.Pool, cache: DocumentCache) -> None:
        self._pool = pool
        self._cache = cache
        self._touched: set[str] = set()
        self.flushed = 0

    def __repr__(self) -> str:
        return f"ScanLedger(pending={len(self._touched)}, flushed={self.flushed})"

    def touched(self, code: str) -> None:
        self._touched.add(code)

    async def flush(self) -> int:
        """Write the counters of the codes touched since the last flush; keep them for the next one on failure."""
        codes, self._touched = list(self._touched), set()
        written = 0
        try:
            for start in range(0, len(codes), FLUSH_CHUNK):
                chunk = codes[start : start + FLUSH_CHUNK]
                counts = await self._cache.scan_counts(chunk)
                if counts:
                    await self._pool.execute(
                        queries.FLUSH_SCAN_COUNTS,
                        list(counts),
                        [c.count for c in counts.values()],
                        [dt.datetime.fromisoformat(c.first_at or "") for c in counts.values()],
                    )
                written += len(chunk)
        except (*REDIS_ERRORS, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("scan counts not flushed, retrying next time: %r", exc)
            self._touched.update(codes[written:])
        self.flushed += written
        return written

    async def run(self) -> None:
        """Flush every FLUSH_INTERVAL_S until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
