"""Documents from Postgres, in groups: the stored document when it is current, else built and stored.

A resolve that misses this worker's tier and Redis comes here, with a document key: a code other than a
package code (whose document is its batch code's, see resolver.scan.ranges). The codes that arrive while a group is
running are asked as the next group, in one statement (`cache.batching.Batcher`): the stored
documents of `code_documents` (schema/migrations/0007_documents.sql) that are still current. A code
without one is built from the tables as before (`queries.DOCUMENT_BY_CODE`, its own statement), then
stored with the others built meanwhile (one statement per group) before it is answered. Each is stored
with the version of its batch it was read with, so that a later change of the batch makes it
unservable at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import orjson

from cache.batching import Batcher
from resolver import queries
from resolver.scan import documents
from resolver.scan.documents import CHINA_TZ, build_document, cache_ttl_s

logger = logging.getLogger(__name__)

GROUP_MAX_CODES = 256  # codes in one statement; more wait for the next


@dataclass(frozen=True, slots=True)
class Loaded:
    """A code's document as Postgres gave it, its batch and the batch's version it shows, and how long it may be
    cached."""

    document: bytes
    batch_id: int
    ttl_s: int
    version: int


def build_fingerprint() -> str:
    """What a stored document depends on beside the data: the code that builds it (another release's
    documents.py builds documents anew)."""
    return hashlib.sha256(Path(documents.__file__).read_bytes()).hexdigest()[:16]


class PostgresDocuments:
    """`await documents.load(code)`: the code's Loaded, None if it was never issued. Raises Postgres's errors."""

    __slots__ = ("_build", "_lookups", "_new", "_pool", "_stores", "built", "stored")

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._build = build_fingerprint()
        self._lookups: Batcher[str, Loaded | None] = Batcher(self._look_up, max_group=GROUP_MAX_CODES)
        self._stores: Batcher[str, None] = Batcher(self._store, max_group=GROUP_MAX_CODES)
        self._new: dict[str, NewDocument] = {}  # built, waiting for their group's store
        self.stored = 0  # codes answered with a stored document
        self.built = 0  # codes whose document was built from the tables

    def __repr__(self) -> str:
        return f"PostgresDocuments(stored={self.stored}, built={self.built}, lookups={self._lookups!r})"

    async def load(self, code: str) -> Loaded | None:
        stored = await self._lookups.call(code)
        if stored is not None:
            return stored
        now = dt.datetime.now(CHINA_TZ)
        query = queries.DOCUMENT_BY_CODE if len(code) == 20 else queries.DOCUMENT_BY_LONG_CODE
        row = await self._pool.fetchrow(query, code)
        if row is None:
            return None
        self.built += 1
        body = orjson.dumps(build_document(row, today=now.date()))
        loaded = Loaded(body, row["batch_id"], cache_ttl_s(row, now.date(), now), row["document_version"])
        valid_until = now + dt.timedelta(seconds=loaded.ttl_s)
        self._new[code] = NewDocument(loaded.batch_id, loaded.version, valid_until, body)
        await self._stores.call(code)
        return loaded

    async def _look_up(self, codes: list[str]) -> dict[str, Loaded | None | BaseException]:
        """The codes' current stored documents; None for the others (never issued, or to be built)."""
        rows = await self._pool.fetch(queries.STORED_DOCUMENTS, codes, self._build)
        now = dt.datetime.now(CHINA_TZ)
        answers: dict[str, Loaded | None | BaseException] = dict.fromkeys(codes)
        for row in rows:
            ttl_s = max(1, int((row["valid_until"] - now).total_seconds()))
            answers[row["code"]] = Loaded(row["body"], row["batch_id"], ttl_s, row["version"])
        self.stored += len(rows)
        return answers

    async def _store(self, codes: list[str]) -> dict[str, None | BaseException]:
        """Best effort: the documents are answered whether or not they could be stored."""
        new = [self._new.pop(code) for code in codes]
        try:
            await self._pool.execute(
                queries.STORE_DOCUMENTS, codes, [n.batch_id for n in new], [n.version for n in new],
                [self._build] * len(new), [n.valid_until for n in new], [n.body for n in new],
            )  # fmt: skip
        except Exception as exc:
            logger.warning("%d documents built but not stored in postgres: %r", len(new), exc)
        return dict.fromkeys(codes)


@dataclass(frozen=True, slots=True)
class NewDocument:
    batch_id: int
    version: int
    valid_until: dt.datetime
    body: bytes
