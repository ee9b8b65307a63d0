"""Consumer scan counts: counted in the worker, added to Redis a few times a second, flushed to Postgres.

A warm scan makes no I/O: it raises this worker's pending count. SCAN_SYNC_INTERVAL_S later the
pending scans of every code are added to Redis's counters in one round trip (which also returns
the totals of every worker), and every FLUSH_INTERVAL_S the totals of the codes synced since are
written to Postgres (never lowering what it has): `package_scans` for package codes, `scan_counts`
for the others.

Redis keeps a code's counters in a scan hash (cache.keys.ScanSlot): a package code's is a member of its
block's hash, so a code never scanned costs nothing anywhere. A hash that Redis lost (restarted, evicted,
expired) is made whole again from Postgres before anything is shown from it or added to it: the first scan
of a block asks Postgres once (one index range scan for the whole block), and its other codes then need
Redis alone. Without Redis, a code's counts come from Postgres, and its scans wait in the worker until
Redis is back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import asyncpg

from cache import keys
from cache.batching import Batcher
from cache.keys import SCAN_SYNC_INTERVAL_S, ScanSlot
from cache.local import ScanState
from cache.store import NO_SCANS, REDIS_ERRORS, DocumentCache, Scans
from resolver import queries
from resolver.documents import CHINA_TZ

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
FLUSH_CHUNK = 1_000  # codes per Postgres statement
MAX_STATES = 50_000  # counters kept per worker; idle ones are forgotten beyond this and read again from Redis
LOOKUP_MAX_CODES = 256  # codes whose counts are asked of Postgres in one statement
_POSTGRES_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class ScanCounter:
    """This worker's scan counters."""

    __slots__ = ("_cache", "_lookups", "_pool", "_states", "_unflushed", "flushed", "rebuilt")

    def __init__(self, pool: asyncpg.Pool, cache: DocumentCache) -> None:
        self._pool = pool
        self._cache = cache
        self._states: dict[str, ScanState] = {}
        self._unflushed: dict[str, ScanState] = {}  # synced since the last flush, by code
        self._lookups: Batcher[ScanSlot, Scans] = Batcher(self._look_up, max_group=LOOKUP_MAX_CODES)
        self.flushed = 0
        self.rebuilt = 0  # scan hashes made whole again from Postgres by this worker

    def __repr__(self) -> str:
        return f"ScanCounter(codes={len(self._states)}, unflushed={len(self._unflushed)}, flushed={self.flushed})"

    def state(self, code: str) -> ScanState | None:
        """The code's counter in this worker, if it has one."""
        return self._states.get(code)

    def count(self, slot: ScanSlot, doc_key: str, place: str, current: Scans | None = None) -> ScanState:
        """Count one scan of `slot`'s code from `place`; `current` are its totals just read from Redis or Postgres.

        Answers the code's live counter: read it before the next await, when other scans may change it.
        """
        state = self._states.get(slot.code)
        if state is None:
            current = current or NO_SCANS
            state = self._states[slot.code] = ScanState(slot, doc_key, current.count, current.first_at, current.places)
        elif current is not None:
            state.count, state.places = current.count, current.places
            state.first_at = state.first_at or current.first_at
        state.pending += 1
        if state.first_at is None:
            state.first_at = dt.datetime.now(CHINA_TZ).isoformat(timespec="seconds")
        if len(state.pending_places) < keys.MAX_PLACES:
            state.pending_places.add(place)
        return state

    async def current(self, slot: ScanSlot) -> Scans:
        """The code's totals when Redis has none to give: its scan hash is made whole again from Postgres (with the
        others asked meanwhile), or, without Redis, its counts are read from Postgres. Raises Postgres's errors."""
        return await self._lookups.call(slot)

    async def _look_up(self, slots: list[ScanSlot]) -> dict[ScanSlot, Scans | BaseException]:
        if self._cache.is_available:
            members = await self._members(slots)
            try:
                answers: dict[ScanSlot, Scans | BaseException] = dict(await self._cache.rebuild_scans(members, slots))
            except REDIS_ERRORS:  # logged by the cache: answer from Postgres alone
                pass
            else:
                self.rebuilt += len({slot.key for slot in slots})
                return answers
        counted = {slot: scans for slot, scans in await self._counted(slots)}
        return {slot: counted.get(slot, NO_SCANS) for slot in slots}

    async def _members(self, slots: list[ScanSlot]) -> dict[str, list[tuple[str, Scans]]]:
        """Every counted code of the slots' scan hashes, as members by hash: whole blocks of package codes."""
        blocks = {(slot.region, slot.seq - slot.seq % keys.PACKAGE_SCAN_BLOCK) for slot in slots if slot.is_package}
        members: dict[str, list[tuple[str, Scans]]] = {}
        if blocks:
            rows = await self._pool.fetch(
                queries.PACKAGE_SCAN_BLOCKS, [region for region, _ in blocks], [first for _, first in blocks],
                keys.PACKAGE_SCAN_BLOCK,
            )  # fmt: skip
            for row in rows:
                slot = keys.package_scan_slot("", row["region"], row["seq"])
                members.setdefault(slot.key, []).append((slot.field, _scans(row)))
        for slot, scans in await self._counted([slot for slot in slots if not slot.is_package]):
            members.setdefault(slot.key, []).append((slot.field, scans))
        return members

    async def _counted(self, slots: list[ScanSlot]) -> list[tuple[ScanSlot, Scans]]:
        """The counts Postgres has of the slots' own codes (the slots without a row have none)."""
        packages = [slot for slot in slots if slot.is_package]
        others = {slot.code: slot for slot in slots if not slot.is_package}
        counted = []
        if packages:
            by_place = {(slot.region, slot.seq): slot for slot in packages}
            rows = await self._pool.fetch(
                queries.PACKAGE_SCANS, [slot.region for slot in packages], [slot.seq for slot in packages]
            )
            counted += [(by_place[(row["region"], row["seq"])], _scans(row)) for row in rows]
        if others:
            rows = await self._pool.fetch(queries.CODE_SCANS, list(others))
            counted += [(others[row["code"]], _scans(row)) for row in rows]
        return counted

    async def sync(self) -> int:
        """Add the pending scans to Redis; on failure they stay pending for the next try."""
        if not self._cache.is_available:  # Redis failed a moment ago: the scans wait, nothing is tried
            return 0
        pending = [state for state in self._states.values() if state.pending]
        if not pending:
            return 0
        try:
            lost = await self._cache.add_scans(pending)
            if lost:  # their hashes are made whole from Postgres first, then the scans added
                await self._look_up([state.slot for state in lost])
                lost = await self._cache.add_scans(lost)
        except REDIS_ERRORS:  # logged by the cache, which now skips Redis for a while
            return 0
        except _POSTGRES_FAILURES as exc:
            logger.warning("scan hashes not rebuilt from postgres, scans stay pending: %r", exc)
            return 0
        lost_ids = {id(state) for state in lost}
        synced = [state for state in pending if id(state) not in lost_ids]
        self._unflushed.update((state.slot.code, state) for state in synced)
        if len(self._states) > MAX_STATES:
            self._states = {code: state for code, state in self._states.items() if state.pending}
        return len(synced)

    async def flush(self) -> int:
        """Write the totals of the codes synced since the last flush to Postgres, as Redis gave them."""
        states, self._unflushed = list(self._unflushed.values()), {}
        written = 0
        try:
            for start in range(0, len(states), FLUSH_CHUNK):
                chunk = states[start : start + FLUSH_CHUNK]
                await self._write(chunk)
                written += len(chunk)
        except _POSTGRES_FAILURES as exc:
            logger.warning("scan counts not flushed to postgres, retrying next time: %r", exc)
            for state in states[written:]:
                self._unflushed.setdefault(state.slot.code, state)
        self.flushed += written
        return written

    async def _write(self, states: list[ScanState]) -> None:
        counted = [state for state in states if state.first_at is not None]
        packages = [state for state in counted if state.slot.is_package]
        others = [state for state in counted if not state.slot.is_package]
        if packages:
            await self._pool.execute(
                queries.FLUSH_PACKAGE_SCANS, [s.slot.region for s in packages], [s.slot.seq for s in packages],
                [s.count for s in packages], [_timestamp(s.first_at) for s in packages],
            )  # fmt: skip
        if others:
            await self._pool.execute(
                queries.FLUSH_SCAN_COUNTS, [s.slot.code for s in others], [s.count for s in others],
                [_timestamp(s.first_at) for s in others],
            )  # fmt: skip

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


def _scans(row: asyncpg.Record) -> Scans:
    first_at: dt.datetime = row["first_at"]
    return Scans(row["count"], first_at.astimezone(CHINA_TZ).isoformat(timespec="seconds"))


def _timestamp(first_at: str | None) -> dt.datetime:
    return dt.datetime.fromisoformat(first_at or "")
