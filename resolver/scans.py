"""Consumer scan counts: counted in the worker, added to Redis a few times a second, flushed to Postgres.

A warm scan makes no I/O: it raises this worker's pending count. SCAN_SYNC_INTERVAL_S later the
pending scans of every code are added to Redis's counters in one round trip (which also returns
the totals of every worker), and every FLUSH_INTERVAL_S the totals of the codes counted since are
written to Postgres (never lowering what it has), so a restart of Redis or of the service loses
at most the last interval.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import asyncpg

from cache.keys import SCAN_SYNC_INTERVAL_S
from cache.local import ScanState
from cache.store import REDIS_ERRORS, DocumentCache, Scans
from resolver import queries
from resolver.documents import CHINA_TZ

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
FLUSH_CHUNK = 1_000  # codes per Redis pipeline and Postgres statement
MAX_PENDING_PLACES = 16  # distinct networks remembered per code between syncs: enough to pass the warning line
MAX_STATES = 50_000  # counters kept per worker; idle ones are forgotten beyond this and read again from Redis


class ScanCounter:
    """This worker's scan counters."""

    __slots__ = ("_cache", "_pool", "_states", "_unflushed", "flushed")

    def __init__(self, pool: asyncpg.Pool, cache: DocumentCache) -> None:
        self._pool = pool
        self._cache = cache
        self._states: dict[str, ScanState] = {}
        self._unflushed: set[str] = set()
        self.flushed = 0

    def __repr__(self) -> str:
        return f"ScanCounter(codes={len(self._states)}, unflushed={len(self._unflushed)}, flushed={self.flushed})"

    def is_known(self, code: str) -> bool:
        return code in self._states

    def count(self, code: str, place: str, current: Scans | None = None) -> ScanState:
        """Count one scan of `code` from `place`; `current` are the totals just read from Redis or Postgres.

        Answers the code's live counter: read it before the next await, when other scans may change it.
        """
        state = self._states.get(code)
        if state is None:
            current = current or Scans(0, None)
            state = self._states[code] = ScanState(current.count, current.first_at, current.places)
        elif current is not None:
            state.count, state.places = current.count, current.places
            state.first_at = state.first_at or current.first_at
        state.pending += 1
        if state.first_at is None:
            state.first_at = dt.datetime.now(CHINA_TZ).isoformat(timespec="seconds")
        if len(state.pending_places) < MAX_PENDING_PLACES:
            state.pending_places.add(place)
        return state

    async def sync(self) -> int:
        """Add the pending scans to Redis; on failure they stay pending for the next try."""
        if not self._cache.is_available:  # Redis failed a moment ago: the scans wait, nothing is tried
            return 0
        pending = {code: state for code, state in self._states.items() if state.pending}
        if not pending:
            return 0
        try:
            await self._cache.add_scans(pending)
        except REDIS_ERRORS:  # logged by the cache, which now skips Redis for a while
            return 0
        self._unflushed.update(pending)
        if len(self._states) > MAX_STATES:
            self._states = {code: state for code, state in self._states.items() if state.pending}
        return len(pending)

    async def flush(self) -> int:
        """Write Redis's totals of the codes counted since the last flush to Postgres."""
        codes, self._unflushed = list(self._unflushed), set()
        written = 0
        try:
            for start in range(0, len(codes), FLUSH_CHUNK):
                chunk = codes[start : start + FLUSH_CHUNK]
                totals = await self._cache.scan_counts(chunk)
                if totals:
                    await self._pool.execute(
                        queries.FLUSH_SCAN_COUNTS,
                        list(totals),
                        [t.count for t in totals.values()],
                        [dt.datetime.fromisoformat(t.first_at or "") for t in totals.values()],
                    )
                written += len(chunk)
        except (*REDIS_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("scan counts not flushed to postgres, retrying next time: %r", exc)
            self._unflushed.update(codes[written:])
        self.flushed += written
        return written

    async def run(self) -> None:
        """Sync every SCAN_SYNC_INTERVAL_S and flush every FLUSH_INTERVAL_S until cancelled, then both once more."""
        syncs_per_flush = max(1, round(FLUSH_INTERVAL_S / SCAN_SYNC_INTERVAL_S))
        try:
            tick = 0
            while True:
                await asyncio.sleep(SCAN_SYNC_INTERVAL_S)
                await self.sync()
                tick += 1
                if tick % syncs_per_flush == 0:
                    await self.flush()
        finally:
            await asyncio.shield(self._last_words())

    async def _last_words(self) -> None:
        await self.sync()
        await self.flush()
