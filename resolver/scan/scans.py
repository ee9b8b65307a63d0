"""Consumer scan counts: counted in the worker, added to Redis a few times a second, flushed to Postgres.

A warm scan makes no I/O: it raises this worker's pending count. Every SCAN_SYNC_INTERVAL_S the pending
scans of every code are added to Redis's counters in one round trip (which also returns the totals of
every worker), and every FLUSH_INTERVAL_S each worker adds the scans it synced since to Postgres's totals
(`package_scans` for package codes, `scan_counts` for the others): each scan is written there once, by
the worker that counted it.

Losing Redis loses no scan: a pair Redis lost is rebuilt from Postgres (with a new epoch), and each
worker adds again the scans it had added to the lost one and not yet flushed. A worker that dies loses
the scans it counted since its last flush (FLUSH_INTERVAL_S at most).

Redis keeps a code's counters in a scan pair (cache.keys.ScanSlot): a package code's is a member of its
block's hash and a bit of its bitmap, so a code never scanned costs nothing anywhere. A pair that Redis lost
(restarted, evicted, expired) is made whole again from Postgres before anything is shown from it or added to
it: the first scan of a block asks Postgres once (one index range scan for the whole block), and its other
codes then need Redis alone. Without Redis, a code's counts come from Postgres, and its scans wait in the
worker until Redis is back.

The worker keeps copies of the bitmaps of the blocks it scans, read again at every sync: the first scan of a
code whose bit is clear in a copy younger than SCANNED_BITS_FRESH_S is the code's first scan anywhere, bar
another worker's scans since the copy was read, and is answered without asking Redis. That is the scan users
make most (one package, one buyer).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import asyncpg

from cache import keys
from cache.batching import Batcher
from cache.keys import SCAN_SYNC_INTERVAL_S, ScanSlot
from cache.local import ScanState
from cache.store import NO_SCANS, REDIS_ERRORS, DocumentCache, Scans, is_scanned
from resolver import queries
from resolver.db import POSTGRES_CALL_ERRORS
from resolver.scan.documents import CHINA_TZ

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
FLUSH_CHUNK = 1_000  # codes per Postgres statement
FLUSH_TIMEOUT_S = 10.0  # a flush waits this long for Postgres; its scans wait for the next when it gives up
# Counters kept per worker; beyond this the idle ones are forgotten and read again from Redis when scanned again.
# Most codes are scanned once: keeping 50,000 of them cost a tenth of the first-scan rate (the collector's passes).
MAX_STATES = 10_000
LOOKUP_MAX_CODES = 256  # codes whose counts are asked of Postgres in one statement
COUNT_FRESH_S = 2 * SCAN_SYNC_INTERVAL_S  # a code scanned here shows Redis's total read this recently
MAX_BITMAPS = 4_096  # copies of scan bitmaps kept per worker: 2 MB of package blocks
MAX_BITMAPS_READ = 256  # bitmaps read again per sync: those of the blocks in use


class ScanCounter:
    """This worker's scan counters."""

    __slots__ = (
        "_bitmaps", "_cache", "_generation", "_lookups", "_pending", "_pool", "_resend", "_states", "_unflushed",
        "_used", "flushed", "rebuilt",
    )  # fmt: skip

    def __init__(self, pool: asyncpg.Pool, cache: DocumentCache) -> None:
        self._pool = pool
        self._cache = cache
        self._states: dict[str, ScanState] = {}
        self._pending: dict[str, ScanState] = {}  # counted since the last sync, by code
        self._unflushed: dict[str, ScanState] = {}  # synced since the last flush, by code
        self._bitmaps: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # bits_key -> (bitmap, read at)
        self._used: set[str] = set()  # bitmaps that answered a scan since the last sync
        self._generation = ""  # Redis's, as the last sync saw it
        self._resend = False  # Redis lost data: offer every unflushed scan again (each pair takes what it lacks)
        self._lookups: Batcher[ScanSlot, Scans] = Batcher(self._look_up, max_group=LOOKUP_MAX_CODES)
        self.flushed = 0  # codes whose scans this worker wrote to Postgres
        self.rebuilt = 0  # scan pairs made whole again from Postgres by this worker

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
        elif current is not None:  # never lower: a pair Redis lost is short of scans until every worker re-adds its own
            state.count, state.places = max(state.count, current.count), current.places
            state.synced_at = time.monotonic()
            state.first_at = min(filter(None, (state.first_at, current.first_at)), default=None)
        state.pending += 1
        self._pending[slot.code] = state
        if state.first_at is None:
            state.first_at = _now_text()
        if len(state.pending_places) < keys.MAX_PLACES:
            state.pending_places.add(place)
        return state

    def is_fresh(self, state: ScanState) -> bool:
        """Whether the state's figures are recent enough to be shown as they are: other workers' scans of the code
        reach Redis within a sync, and this worker's view of them must not lag much more."""
        return time.monotonic() - state.synced_at <= COUNT_FRESH_S

    def is_unscanned(self, slot: ScanSlot) -> bool:
        """Whether `slot`'s code was never scanned, as far as this worker's copy of its bitmap says (one read
        within SCANNED_BITS_FRESH_S); False when it does not know."""
        copy = self._bitmaps.get(slot.bits_key)
        if copy is None or time.monotonic() - copy[1] > keys.SCANNED_BITS_FRESH_S:
            return False
        self._used.add(slot.bits_key)
        return not is_scanned(copy[0], slot.bit)

    def learn(self, bits_key: str, bits: bytes | None) -> None:
        """Keep a bitmap just read from Redis (None: the pair was lost)."""
        if bits is None:
            self._bitmaps.pop(bits_key, None)
            return
        self._bitmaps[bits_key] = (bits, time.monotonic())
        self._bitmaps.move_to_end(bits_key)
        if len(self._bitmaps) > MAX_BITMAPS:
            self._bitmaps.popitem(last=False)

    async def current(self, slot: ScanSlot) -> Scans:
        """The code's totals when Redis has none to give: its scan hash is made whole again from Postgres (with the
        others asked meanwhile), or, without Redis, its counts are read from Postgres. Raises Postgres's errors."""
        return await self._lookups.call(slot)

    async def _look_up(self, slots: list[ScanSlot]) -> dict[ScanSlot, Scans | BaseException]:
        if self._cache.is_available:
            members = await self._members(slots)
            try:
                scans, bitmaps = await self._cache.rebuild_scans(members, slots)
            except REDIS_ERRORS:  # logged by the cache: answer from Postgres alone
                pass
            else:
                self.rebuilt += len(bitmaps)
                for bits_key, bits in bitmaps.items():
                    self.learn(bits_key, bits)
                return dict(scans)
        counted = {slot: scans for slot, scans in await self._counted(slots)}
        return {slot: counted.get(slot, NO_SCANS) for slot in slots}

    async def _members(self, slots: list[ScanSlot]) -> dict[str, tuple[bytes, list[tuple[str, Scans]]]]:
        """Every counted code of the slots' scan pairs, by hash: the pair's bitmap and its members (whole blocks
        of package codes)."""
        blocks = {(slot.region, slot.seq - slot.seq % keys.PACKAGE_SCAN_BLOCK) for slot in slots if slot.is_package}
        counted: list[tuple[ScanSlot, Scans]] = []
        if blocks:
            rows = await self._pool.fetch(
                queries.PACKAGE_SCAN_BLOCKS, [region for region, _ in blocks], [first for _, first in blocks],
                keys.PACKAGE_SCAN_BLOCK,
            )  # fmt: skip
            counted += [(keys.package_scan_slot("", row["region"], row["seq"]), _scans(row)) for row in rows]
        counted += await self._counted([slot for slot in slots if not slot.is_package])
        bitmaps: dict[str, bytearray] = {}
        members: dict[str, list[tuple[str, Scans]]] = {}
        for slot, scans in counted:
            bits = bitmaps.setdefault(slot.key, bytearray())
            if len(bits) <= slot.bit >> 3:
                bits.extend(bytes((slot.bit >> 3) + 1 - len(bits)))
            bits[slot.bit >> 3] |= 0x80 >> (slot.bit & 7)
            members.setdefault(slot.key, []).append((slot.field, scans))
        return {key: (bytes(bitmaps[key]), rows) for key, rows in members.items()}

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
        """Add the pending scans to Redis, and read again the bitmaps of the blocks in use; on failure the scans
        stay pending for the next try. The number of codes synced."""
        if not self._cache.is_available and not await self._cache.ping():  # Redis failed, not back yet: scans wait
            return 0
        pending, self._pending = list(self._pending.values()), {}
        if self._resend:  # scans added to pairs Redis lost, not yet in Postgres: a rebuilt pair lacks them
            pending += [state for code, state in self._unflushed.items() if not state.pending]
            self._resend = False
        read = self._in_use(pending)
        if not pending and not read:
            return 0
        try:
            lost, bitmaps, generation = await self._cache.add_scans(pending, read)
            if lost:  # their pairs are made whole from Postgres first, then the scans added
                self._resend = True  # the other unflushed scans of those pairs are missing too
                await self._look_up([state.slot for state in lost])
                lost, _, generation = await self._cache.add_scans(lost)
            if self._generation and generation != self._generation:
                self._resend = True
            self._generation = generation
        except REDIS_ERRORS:  # logged by the cache, which now skips Redis for a while
            return 0
        except POSTGRES_CALL_ERRORS as exc:
            logger.warning("scan pairs not rebuilt from postgres, scans stay pending: %r", exc)
            return 0
        finally:
            for state in pending:  # failed, lost, or counted again during the round trip
                if state.pending:
                    self._pending.setdefault(state.slot.code, state)
        for bits_key, bits in bitmaps.items():
            self.learn(bits_key, bits)
        lost_ids = {id(state) for state in lost}
        synced = [state for state in pending if id(state) not in lost_ids]
        self._unflushed.update((state.slot.code, state) for state in synced)
        if len(self._states) > MAX_STATES:
            self._states = {code: state for code, state in self._states.items() if state.pending or state.unflushed}
        return len(synced)

    async def flush(self) -> int:
        """Add the scans synced since the last flush to Postgres's totals; on failure they wait for the next. The
        number of codes written."""
        states, self._unflushed = list(self._unflushed.values()), {}
        flushing = [(state, state.unflushed) for state in states if state.unflushed and state.first_at is not None]
        written = 0
        try:
            for start in range(0, len(flushing), FLUSH_CHUNK):
                chunk = flushing[start : start + FLUSH_CHUNK]
                await self._write(chunk)
                for state, scans in chunk:
                    state.unflushed -= scans  # synced meanwhile: still to flush
                written += len(chunk)
        except POSTGRES_CALL_ERRORS as exc:
            logger.warning("scan counts not flushed to postgres, retrying next time: %r", exc)
        for state in states:
            if state.unflushed:
                self._unflushed.setdefault(state.slot.code, state)
        self.flushed += written
        return written

    async def _write(self, chunk: list[tuple[ScanState, int]]) -> None:
        packages = [(s, n) for s, n in chunk if s.slot.is_package]
        others = [(s, n) for s, n in chunk if not s.slot.is_package]
        async with self._pool.acquire(timeout=FLUSH_TIMEOUT_S) as conn, conn.transaction():
            if packages:
                await conn.execute(
                    queries.ADD_PACKAGE_SCANS, _array(s.slot.region for s, _ in packages),
                    _array(str(s.slot.seq) for s, _ in packages), _array(str(n) for _, n in packages),
                    _array(s.first_at or "" for s, _ in packages), timeout=FLUSH_TIMEOUT_S,
                )  # fmt: skip
            if others:
                await conn.execute(
                    queries.ADD_SCAN_COUNTS, [s.slot.code for s, _ in others], [n for _, n in others],
                    [_timestamp(s.first_at) for s, _ in others], timeout=FLUSH_TIMEOUT_S,
                )  # fmt: skip

    def _in_use(self, pending: list[ScanState]) -> list[str]:
        """The bitmaps to read again: those that answered a scan since the last sync, and those of the codes
        about to be synced, where this worker keeps a copy."""
        used, self._used = self._used, set()
        used.update(state.slot.bits_key for state in pending)
        return [bits_key for bits_key in used if bits_key in self._bitmaps][:MAX_BITMAPS_READ]

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


_clock: list[Any] = [0, ""]  # the second and its ISO 8601 text (China time) last made


def _now_text() -> str:
    """Now as ISO 8601 to the second, China time; made once a second (a first scan asks for it)."""
    now = time.time()
    if int(now) != _clock[0]:
        _clock[:] = [int(now), dt.datetime.fromtimestamp(int(now), CHINA_TZ).isoformat()]
    text: str = _clock[1]
    return text


def _scans(row: asyncpg.Record) -> Scans:
    first_at: dt.datetime = row["first_at"]
    return Scans(row["count"], first_at.astimezone(CHINA_TZ).isoformat(timespec="seconds"))


def _array(items: Iterable[str]) -> str:
    """A PostgreSQL array literal of items that need no quoting (digits, ISO 8601 times)."""
    return "{" + ",".join(items) + "}"


def _timestamp(first_at: str | None) -> dt.datetime:
    return dt.datetime.fromisoformat(first_at or "")
