"""Package codes by their ranges: the batch of a package code (type 4), with no row per code.

A labels request stores one range of sequence numbers (schema/migrations/0009_code_ranges.sql). A package
code's serial, unpermuted with the secret, is its sequence number (codegen.kernels.unpermute_one, under a
microsecond); the range holding that number names the batch, whose document is the code's. Each worker keeps
the ranges it has met, per region, sorted by first number. Ranges are never changed or deleted, so a range
once known stays right: only a code of a range this worker has not met yet asks Postgres (one index probe; the
probes of a moment go as one statement), once per range and worker. A code in no range was never issued.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache

import asyncpg

from cache.batching import Batcher
from codegen.format import CodeType, region_of, serial_of
from codegen.kernels import unpermute_one
from codegen.permute import RoundKeys, derive_round_keys
from resolver import queries

KEY_CACHE_SIZE = 4_096  # regions whose round keys stay derived
PROBE_MAX_CODES = 256  # codes in one Postgres probe; more wait for the next


@dataclass(frozen=True, slots=True)
class Located:
    """A package code's place: its region and sequence number, and the code of its batch."""

    region: str
    seq: int
    batch_code: str


class _RegionRanges:
    """The known ranges of one region, sorted by first sequence number (they never overlap)."""

    __slots__ = ("batch_codes", "ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []  # one past the last number of each range
        self.batch_codes: list[str] = []

    def find(self, seq: int) -> str | None:
        i = bisect.bisect_right(self.starts, seq) - 1
        return self.batch_codes[i] if i >= 0 and seq < self.ends[i] else None

    def add(self, first_seq: int, count: int, batch_code: str) -> None:
        i = bisect.bisect_left(self.starts, first_seq)
        if i < len(self.starts) and self.starts[i] == first_seq:
            return  # met twice (two probes of one moment)
        self.starts.insert(i, first_seq)
        self.ends.insert(i, first_seq + count)
        self.batch_codes.insert(i, batch_code)


class IssuedRanges:
    """`ranges.find(code)` from memory; `await ranges.locate(code)` from memory, else from Postgres."""

    __slots__ = ("_keys", "_pool", "_probes", "_regions", "probed")

    def __init__(self, pool: asyncpg.Pool, secret: bytes) -> None:
        self._pool = pool
        self._regions: dict[str, _RegionRanges] = {}
        self._probes: Batcher[tuple[str, int], tuple[int, int, str] | None] = Batcher(
            self._probe, max_group=PROBE_MAX_CODES
        )
        self.probed = 0  # codes asked of Postgres

        @lru_cache(maxsize=KEY_CACHE_SIZE)
        def keys(region: str) -> RoundKeys:
            return derive_round_keys(secret, CodeType.PACKAGE, region)

        self._keys = keys

    def __repr__(self) -> str:
        ranges = sum(len(known.starts) for known in self._regions.values())
        return f"IssuedRanges(regions={len(self._regions)}, ranges={ranges}, probed={self.probed})"

    def seq_of(self, code: str) -> int:
        """The sequence number of a canonical package code, issued or not."""
        return unpermute_one(serial_of(code), self._keys(region_of(code)))

    def find(self, code: str) -> Located | None:
        """Where a canonical package code belongs, if this worker knows its range."""
        region = region_of(code)
        known = self._regions.get(region)
        if known is None:
            return None
        seq = self.seq_of(code)
        batch_code = known.find(seq)
        return Located(region, seq, batch_code) if batch_code is not None else None

    async def locate(self, code: str) -> Located | None:
        """Where a canonical package code belongs; None if it was never issued. Raises Postgres's errors."""
        found = self.find(code)
        if found is not None:
            return found
        region, seq = region_of(code), self.seq_of(code)
        probed = await self._probes.call((region, seq))
        if probed is None:
            return None
        first_seq, count, batch_code = probed
        self._regions.setdefault(region, _RegionRanges()).add(first_seq, count, batch_code)
        return Located(region, seq, batch_code)

    async def _probe(
        self, places: list[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[int, int, str] | None | BaseException]:
        self.probed += len(places)
        rows = await self._pool.fetch(
            queries.PACKAGE_RANGES, [region for region, _ in places], [seq for _, seq in places]
        )
        found: dict[tuple[str, int], tuple[int, int, str] | None | BaseException] = dict.fromkeys(places)
        for row in rows:
            found[places[row["ord"] - 1]] = (row["first_seq"], row["count"], row["batch_code"])
        return found
