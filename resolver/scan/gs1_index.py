"""Which entity a GS1 Digital Link names, from this worker's memory: the GTIN level, the batch of (GTIN, lot), the
package of a serial (a package code).

A lot resolves to the batch registered last with that GTIN and lot; a serial to the package when it is a package
code of that batch (or, without a lot, of a batch of that GTIN). What is not known walks up to the next less
specific level the resolver knows (resolver standard 2.5.9), inside the one request; a GTIN no product carries is
404. A warm Digital Link asks nothing of Redis or Postgres: the batch of (GTIN, lot) is kept with the batch's
version, and an entry is used only while the in-process tier has heard of no newer version of its batch (the change
feed, resolver.scan.changes, tells every worker within a second of a change that moves a batch or a product's
GTIN). A batch registered later with the same GTIN and lot, which changes no older batch, shows within INDEX_TTL_S.
What the batch then shows (a recall) is its document's business: the Resolver's tiers keep that current. The route's
default redirects are kept here too, by request path, on the same terms (`kept_answer`): a warm Digital Link is a
dictionary look-up.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import asyncpg

from cache.local import LocalTier
from cache.singleflight import SingleFlight
from codegen.format import CODE_LENGTH, CodeType, MalformedCode, parse, type_of
from resolver import queries
from resolver.db import POSTGRES_AWAY_ERRORS, within_request_wait
from resolver.edge.problems import Problem, store_unavailable
from resolver.scan.gs1_uri import DigitalLink
from resolver.scan.ranges import IssuedRanges

INDEX_TTL_S: Final = 60.0  # a batch of (GTIN, lot) is asked of Postgres again after this, changed or not
UNKNOWN_TTL_S: Final = 2.0  # an unknown GTIN or lot: short, so that a batch just registered shows at once
INDEX_CAPACITY: Final = 20_000  # entries of each map; the least recently used go first

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


class Level(enum.Enum):
    PRODUCT = "product"
    BATCH = "batch"
    PACKAGE = "package"


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as the index keeps it: its trace code, GTIN and lot, and the version of it that was read."""

    code: str
    gtin: str
    lot: str
    batch_id: int
    version: int


@dataclass(frozen=True, slots=True)
class Match:
    """The most specific level of `link` the resolver knows, with its batch and package code where it has them; and
    what it holds while it holds: the batch whose version it was read at (0: none), and for how long."""

    link: DigitalLink
    level: Level
    batch: Batch | None
    package_code: str | None
    watched: tuple[int, int]  # (batch id, version)
    ttl_s: float


@dataclass(frozen=True, slots=True)
class _Kept:
    """A warm answer (the headers of a redirect) and what it holds while (see Match)."""

    headers: list[tuple[bytes, bytes]]
    watched: tuple[int, int]
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Known:
    """Whether a GTIN is known, and the version of its newest batch that was read (batch 0: it has none)."""

    is_known: bool
    batch_id: int
    version: int


class _Recent(Generic[K, V]):
    """At most `capacity` values, each kept for the time it was put with; least recently used dropped first."""

    __slots__ = ("_capacity", "_items")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> tuple[V] | None:
        """A 1-tuple of the value (which may itself be None: known to be unknown), or None when not kept."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return (item[0],)

    def put(self, key: K, value: V, ttl_s: float) -> None:
        self._items[key] = (value, time.monotonic() + ttl_s)
        self._items.move_to_end(key)
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)


class DigitalLinkIndex:
    """`await index.match(link)`: the level a Digital Link resolves to; Problem 404 for a GTIN nobody registered."""

    __slots__ = (
        "_answers", "_codes", "_flight", "_gtins", "_local", "_lots", "_pool", "_ranges", "postgres_loads",
    )  # fmt: skip

    def __init__(self, pool: asyncpg.Pool, local: LocalTier, ranges: IssuedRanges) -> None:
        self._pool = pool
        self._local = local
        self._ranges = ranges
        self._gtins: _Recent[str, _Known] = _Recent(INDEX_CAPACITY)
        self._lots: _Recent[tuple[str, str], Batch | None] = _Recent(INDEX_CAPACITY)
        self._codes: _Recent[str, Batch | None] = _Recent(INDEX_CAPACITY)
        self._answers: dict[bytes, _Kept] = {}  # raw request path -> its default redirect, while it holds
        self._flight: SingleFlight[object] = SingleFlight()
        self.postgres_loads = 0

    def __repr__(self) -> str:
        return f"DigitalLinkIndex(gtins={len(self._gtins)}, lots={len(self._lots)}, loads={self.postgres_loads})"

    async def match(self, link: DigitalLink) -> Match:
        """The most specific level of `link` that is known. Problem 503 if Postgres is needed and away.

        What matched holds while its batch is at the version read, and for INDEX_TTL_S; a walk-up, which rests on a
        qualifier being unknown (a lot or labels registered later), for UNKNOWN_TTL_S."""
        batch = await self.lot_batch(link.gtin, link.lot) if link.lot is not None else None
        if link.serial is not None and (batch is not None or link.lot is None):
            batch_code = await self._package_batch(link.serial)
            if batch is not None and batch_code == batch.code:
                return Match(link, Level.PACKAGE, batch, link.serial, _watched(batch), INDEX_TTL_S)
            if batch_code is not None and link.lot is None:  # no lot to check: the package's batch must be the GTIN's
                package_batch = await self._code_batch(batch_code)
                if package_batch is not None and package_batch.gtin == link.gtin:
                    return Match(link, Level.PACKAGE, package_batch, link.serial, _watched(package_batch), INDEX_TTL_S)
        is_exact = link.serial is None and link.cpv is None and link.tpx is None
        if batch is not None:
            return Match(link, Level.BATCH, batch, None, _watched(batch), INDEX_TTL_S if is_exact else UNKNOWN_TTL_S)
        known = await self._gtin(link.gtin)
        if not known.is_known:
            raise Problem(404, "unknown_gtin", "未找到该商品", f"商品条码 {link.gtin} 未登记")
        is_exact = is_exact and link.lot is None
        return Match(
            link, Level.PRODUCT, None, None, (known.batch_id, known.version), INDEX_TTL_S if is_exact else UNKNOWN_TTL_S
        )

    def kept_answer(self, raw_path: bytes) -> list[tuple[bytes, bytes]] | None:
        """The headers of the default redirect of `raw_path` (a request without a query string), while it holds."""
        kept = self._answers.get(raw_path)
        if kept is None:
            return None
        if kept.expires_at < time.monotonic() or not self._local.is_current(*kept.watched):
            del self._answers[raw_path]
            return None
        return kept.headers

    def keep_answer(self, raw_path: bytes, match: Match, headers: list[tuple[bytes, bytes]]) -> None:
        """Keep the default redirect of `raw_path` for as long as `match` holds."""
        self._answers[raw_path] = _Kept(headers, match.watched, time.monotonic() + match.ttl_s)
        if len(self._answers) > INDEX_CAPACITY:
            del self._answers[next(iter(self._answers))]  # the oldest kept

    async def _gtin(self, gtin: str) -> _Known:
        """Whether a product carries `gtin`. Kept against the version of its newest batch, which a change of the
        product's GTIN raises; a product without batches is read again after INDEX_TTL_S."""
        kept = self._gtins.get(gtin)
        if kept is not None and self._local.is_current(kept[0].batch_id, kept[0].version):
            return kept[0]
        row = await self._load(f"g:{gtin}", lambda: self._pool.fetchrow(queries.GS1_GTIN, gtin))
        assert isinstance(row, asyncpg.Record)
        known = _Known(row["is_known"], row["batch_id"] or 0, row["version"])
        self._gtins.put(gtin, known, INDEX_TTL_S if known.is_known else UNKNOWN_TTL_S)
        return known

    async def lot_batch(self, gtin: str, lot: str) -> Batch | None:
        """The batch registered last with `gtin` and `lot`, None if there is none."""
        kept = self._lots.get((gtin, lot))
        if kept is not None and (kept[0] is None or self._is_current(kept[0])):
            return kept[0]
        row = await self._load(f"l:{gtin}/{lot}", lambda: self._pool.fetchrow(queries.GS1_LOT_BATCH, gtin, lot))
        assert isinstance(row, asyncpg.Record | None)
        if row is None:
            self._lots.put((gtin, lot), None, UNKNOWN_TTL_S)
            return None
        batch = Batch(row["trace_code"], gtin, lot, row["batch_id"], row["version"])
        self._lots.put((gtin, lot), batch, INDEX_TTL_S)
        return batch

    def _is_current(self, batch: Batch) -> bool:
        return self._local.is_current(batch.batch_id, batch.version)

    async def _package_batch(self, serial: str) -> str | None:
        """The code of the batch of `serial` when it is an issued package code, else None."""
        if len(serial) != CODE_LENGTH or not serial.isdigit():
            return None
        try:
            code = parse(serial)
        except MalformedCode:
            return None
        if type_of(code) is not CodeType.PACKAGE:
            return None
        found = self._ranges.find(code) or await from_postgres(self._ranges.locate(code))
        return found.batch_code if found is not None else None

    async def _code_batch(self, batch_code: str) -> Batch | None:
        kept = self._codes.get(batch_code)
        if kept is not None and (kept[0] is None or self._is_current(kept[0])):
            return kept[0]
        row = await self._load(f"c:{batch_code}", lambda: self._pool.fetchrow(queries.GS1_BATCH_BY_CODE, batch_code))
        assert isinstance(row, asyncpg.Record | None)
        batch = None if row is None else Batch(batch_code, row["gtin"], row["lot"], row["batch_id"], row["version"])
        self._codes.put(batch_code, batch, INDEX_TTL_S)
        return batch

    async def _load(self, key: str, call: Callable[[], Awaitable[T]]) -> object:
        """`await call()` once for the callers asking `key` at the same time, within the request wait."""

        async def load() -> object:
            self.postgres_loads += 1
            return await from_postgres(call())

        return await self._flight.do(key, load)


def _watched(batch: Batch) -> tuple[int, int]:
    return batch.batch_id, batch.version


async def from_postgres(call: Awaitable[T]) -> T:
    """`await call`; a Postgres away, or hanging past the request wait, is the one 503 (a page to a browser)."""
    try:
        return await within_request_wait(call)
    except POSTGRES_AWAY_ERRORS as exc:
        raise store_unavailable() from exc
