"""The in-process tier in front of Redis: recently resolved documents of this worker, and its scan counts.

Documents are kept by document key: a package code's is its batch code (every package code of a batch
answers the batch's document with its own code put in), any other code's is the code itself. Documents
are dropped on the invalidation messages that every change publishes (see
`cache.store.DocumentCache.invalidate_batch`), on the changes this worker reads from Postgres twice a
second whatever Redis does (resolver.scan.changes: they also say each batch's version, and a copy older than
that is not kept or served, from here or from Redis), and after LOCAL_TTL_S in any case. While this
worker is not subscribed (start-up, lost Redis connection) the tier is off and empty, because it could
miss a message: every scan then goes to Redis.

Scans are counted here and added to Redis's counters a few times a second, then flushed to Postgres
(resolver.scan.scans), so a warm scan makes no I/O at all; the count shown is Redis's at the last sync plus
this worker's scans since.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from cache.keys import ScanSlot

LOCAL_CAPACITY = 20_000  # documents per worker: about 40 MB at 2 KB each
LOCAL_TTL_S = 60.0  # a safety net only: changes reach the tier through invalidation messages


@dataclass(slots=True)
class ScanState:
    """One code's counter in this worker: Redis's figures at the last sync, this worker's scans since
    (`pending`), and those of its scans that are in Redis but not yet in Postgres (`unflushed`, added to the
    pair's `epoch`; added again if the pair is rebuilt before they are flushed)."""

    slot: ScanSlot
    doc_key: str  # where the code's document is kept (see the module docstring)
    count: int  # at the last sync
    first_at: str | None
    places: int  # distinct networks in the current window, at the last sync
    pending: int = 0
    unflushed: int = 0
    epoch: str = ""
    pending_places: set[str] = field(default_factory=set)
    synced_at: float = field(default_factory=time.monotonic)  # when `count` was last read from Redis or Postgres

    @property
    def shown_count(self) -> int:
        return self.count + self.pending

    @property
    def places_recent(self) -> int:
        return max(self.places, len(self.pending_places))


@dataclass(slots=True)
class Entry:
    """A cached document, kept as the parts of its answers that do not change from scan to scan.

    `document` is the JSON object without the members of the code it answers (code, type, url), which every
    answer puts in front of `members`, its own code's.
    """

    document: bytes
    batch_id: int
    version: int  # the batch's version the document shows
    expires_at: float
    members: bytes = field(init=False)  # the document's members, without the braces
    page: tuple[bytes | int, ...] | None = None  # the consumer page, encoded, with holes (see resolver.scan.pages)

    def __post_init__(self) -> None:
        self.members = self.document[1:-1]


class LocalTier:
    """Documents by code, least recently used dropped first, with an index by batch for invalidation, and the
    newest version of each recently changed batch that this worker has heard of."""

    __slots__ = ("_batches", "_capacity", "_entries", "_versions", "hits", "is_enabled", "misses")

    def __init__(self, capacity: int = LOCAL_CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._batches: dict[int, set[str]] = {}
        self._versions: dict[int, int] = {}  # batch -> its newest version heard of (recently changed ones only)
        self.is_enabled = False
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"LocalTier(enabled={self.is_enabled}, size={len(self._entries)}, hits={self.hits})"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, code: str) -> bool:
        entry = self._entries.get(code)
        return entry is not None and entry.expires_at >= time.monotonic()

    def get(self, code: str) -> Entry | None:
        entry = self._entries.get(code)
        if entry is None or entry.expires_at < time.monotonic():
            self.misses += 1
            return None
        self._entries.move_to_end(code)
        self.hits += 1
        return entry

    def is_current(self, batch_id: int, version: int) -> bool:
        """Whether a document showing `version` of the batch is as new as any version this worker heard of."""
        return version >= self._versions.get(batch_id, 0)

    def changed(self, batch_id: int, version: int) -> None:
        """The batch is at `version` now: its older documents go, and no older one is kept again."""
        if version > self._versions.get(batch_id, 0):
            self._versions[batch_id] = version
            self.drop_batch(batch_id)

    def forget_versions(self, batch_ids: list[int]) -> None:
        """Stop remembering these batches' versions (changed longer ago than any cached copy lives)."""
        for batch_id in batch_ids:
            self._versions.pop(batch_id, None)

    def put(self, code: str, document: bytes, batch_id: int, version: int) -> Entry:
        entry = Entry(document, batch_id, version, time.monotonic() + LOCAL_TTL_S)
        if not self.is_enabled or self._capacity == 0 or not self.is_current(batch_id, version):
            return entry
        self._entries[code] = entry
        self._entries.move_to_end(code)
        self._batches.setdefault(batch_id, set()).add(code)
        while len(self._entries) > self._capacity:
            old_code, old = self._entries.popitem(last=False)
            self._unindex(old_code, old.batch_id)
        return entry

    def drop_batch(self, batch_id: int) -> None:
        for code in self._batches.pop(batch_id, ()):
            self._entries.pop(code, None)

    def disable(self) -> None:
        """Off and empty: used while invalidation messages might be missed."""
        self.is_enabled = False
        self._entries.clear()
        self._batches.clear()

    def _unindex(self, code: str, batch_id: int) -> None:
        codes = self._batches.get(batch_id)
        if codes is not None:
            codes.discard(code)
            if not codes:
                del self._batches[batch_id]
