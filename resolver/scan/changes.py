"""Changes of batches' documents, read from Postgres by every worker twice a second: a recall holds whatever Redis does.

Every write that changes what a batch's documents show raises the batch's version in `document_versions`
(migrations 0007 and 0010), in its own transaction. Redis tells the workers at once (cache.store's invalidation
messages) when it can; this feed makes sure within CHANGES_POLL_S when it cannot: Redis down, frozen,
partitioned from the worker that changed the batch, restarted, or a message lost. Each poll hands the batches'
new versions to the in-process tier, which drops their older documents and, from then on, neither keeps nor
serves a document older than that, from itself or from Redis (resolver.scan.resolve). Postgres's stored documents are
checked against the version already (resolver.scan.stored).

A poll reads the changes of the transactions from its watermark on, in one index range scan, and moves the
watermark to the oldest transaction still running (see the migration): no change is missed, however long its
transaction ran. A worker's first poll reads the changes of the last VERSIONS_KEPT_S instead, which covers every
copy a cache may still hold; versions heard of longer ago than that are forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from cache.keys import DOCUMENT_TTL_S
from cache.local import LocalTier
from resolver import queries
from resolver.db import POSTGRES_CALL_ERRORS

logger = logging.getLogger(__name__)

CHANGES_POLL_S = 0.5  # a change reaches every worker within this (and the poll's own time) whatever Redis does
POLL_TIMEOUT_S = 2.0  # a hung Postgres holds the feed this long, then it tries again
VERSIONS_KEPT_S = 2 * DOCUMENT_TTL_S  # no cached document lives longer: older changes need not be remembered


class ChangeFeed:
    """`await feed.poll()` once, or `await feed.run()` until cancelled."""

    __slots__ = ("_heard", "_local", "_pool", "_watermark", "polls")

    def __init__(self, pool: asyncpg.Pool, local: LocalTier) -> None:
        self._pool = pool
        self._local = local
        self._watermark: int | None = None  # transaction id from which the next poll reads; None: not polled yet
        self._heard: dict[int, float] = {}  # batch -> when its last change was read, oldest first
        self.polls = 0

    def __repr__(self) -> str:
        return f"ChangeFeed(watermark={self._watermark}, polls={self.polls}, remembered={len(self._heard)})"

    async def poll(self) -> int:
        """Hand the changes since the last poll to the tier; the number of batches read. Raises Postgres's errors."""
        if self._watermark is None:
            rows = await self._pool.fetch(queries.CHANGES_WITHIN, VERSIONS_KEPT_S, timeout=POLL_TIMEOUT_S)
        else:
            rows = await self._pool.fetch(queries.CHANGES_FROM, self._watermark, timeout=POLL_TIMEOUT_S)
        now = time.monotonic()
        changed = [(row["batch_id"], row["version"]) for row in rows if row["batch_id"] is not None]
        for batch_id, version in changed:
            self._local.changed(batch_id, version)
            self._heard.pop(batch_id, None)
            self._heard[batch_id] = now
        self._watermark = rows[0]["horizon"]
        self.polls += 1
        forgotten = []
        for batch_id, heard_at in self._heard.items():
            if now - heard_at <= VERSIONS_KEPT_S:
                break
            forgotten.append(batch_id)
        for batch_id in forgotten:
            del self._heard[batch_id]
        self._local.forget_versions(forgotten)
        return len(changed)

    async def run(self) -> None:
        """Poll every CHANGES_POLL_S until cancelled; a failed poll is logged and tried again at the next."""
        while True:
            try:
                await self.poll()
            except POSTGRES_CALL_ERRORS as exc:
                logger.warning("changes not read from postgres, trying again in %.1f s: %r", CHANGES_POLL_S, exc)
            await asyncio.sleep(CHANGES_POLL_S)
