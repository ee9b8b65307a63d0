"""Per-client limits on the public resolve paths: an absolute count of bad lookups, shared by all workers.

A client (its IPv4 address, or its IPv6 /64: resolver.edge.clients.client_of) that makes `max_bad`
(TRACECODE_BAD_LOOKUP_LIMIT, MAX_BAD by default) lookups of malformed or never-issued codes within WINDOW_S
is walking the code space: every lookup it makes is answered 429 for COOLDOWN_S. Valid lookups neither
reset nor dilute the count (walking the code space between real scans does not help), and other clients,
even on the same network, are never refused.

Each worker counts in memory, so a lookup makes no I/O for the limit, and adds its counts to the shared ones
in Redis every SYNC_INTERVAL_S, reading the totals back: a client that crosses the line on any mix of
workers is refused by every worker it has asked within one sync. Without Redis, each worker limits on its
own counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from cache.keys import SCAN_SYNC_INTERVAL_S
from cache.store import REDIS_ERRORS, DocumentCache

logger = logging.getLogger(__name__)

WINDOW_S = 60  # bad lookups are counted per client in windows of this length
MAX_BAD = 30  # bad lookups in a window that get a client refused
COOLDOWN_S = 60.0
SYNC_INTERVAL_S = SCAN_SYNC_INTERVAL_S
MAX_CLIENTS = 100_000  # clients counted per worker; expired ones are swept beyond this
MAX_SYNCED = 1_000  # clients whose totals one sync reads (those with new counts first)


@dataclass(slots=True)
class _Window:
    started: float
    bad: int = 0


class Limiter:
    """`limiter.retry_after_s(client)` before a lookup, `limiter.record_bad(client)` after a bad one."""

    __slots__ = ("_blocked", "_pending", "_windows", "limited", "max_bad")

    def __init__(self, max_bad: int = MAX_BAD) -> None:
        """`max_bad`: bad lookups in a window that get a client refused; 0 refuses nobody."""
        self.max_bad = max_bad
        self._windows: dict[str, _Window] = {}  # this worker's own counts
        self._pending: dict[str, int] = {}  # bad lookups not yet added to the shared counts
        self._blocked: dict[str, float] = {}  # client -> refused until (monotonic)
        self.limited = 0  # answers refused, for the metrics

    def __repr__(self) -> str:
        return f"Limiter(clients={len(self._windows)}, blocked={len(self._blocked)}, limited={self.limited})"

    def retry_after_s(self, client: str) -> int:
        """Seconds until `client` may ask again; 0 when it is not refused."""
        until = self._blocked.get(client)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[client]
            return 0
        self.limited += 1
        return int(left) + 1

    def record_bad(self, client: str) -> None:
        """Count a lookup of a malformed or never-issued code."""
        if not self.max_bad:
            return
        now = time.monotonic()
        window = self._windows.get(client)
        if window is None or now - window.started > WINDOW_S:
            if len(self._windows) >= MAX_CLIENTS:
                self._sweep(now)
            window = self._windows[client] = _Window(now)
        window.bad += 1
        self._pending[client] = self._pending.get(client, 0) + 1
        if window.bad >= self.max_bad:
            self._block(client, now)

    async def sync(self, cache: DocumentCache) -> int:
        """Add this worker's new counts to the shared ones, read the totals of every client it counted in the
        current window, and refuse those over the line; the number of clients synced. Without Redis the new
        counts are dropped (the worker's own still hold)."""
        now = time.monotonic()
        pending, self._pending = self._pending, {}
        for client, window in self._windows.items():
            if len(pending) >= MAX_SYNCED:
                break
            if now - window.started <= WINDOW_S and client not in self._blocked:
                pending.setdefault(client, 0)  # counted here before: others may have counted it since
        if not pending or not cache.is_available:
            return 0
        try:
            totals = await cache.add_bad_lookups(pending, window_s=WINDOW_S)
        except REDIS_ERRORS:  # logged by the cache
            return 0
        now = time.monotonic()
        for client, total in totals.items():
            if total >= self.max_bad:
                self._block(client, now)
        return len(totals)

    async def run(self, cache: DocumentCache) -> None:
        """Sync every SYNC_INTERVAL_S until cancelled."""
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            await self.sync(cache)

    def _block(self, client: str, now: float) -> None:
        if client not in self._blocked:
            logger.info("client %s refused for %.0f s: %d or more bad lookups", client, COOLDOWN_S, self.max_bad)
        self._blocked[client] = max(self._blocked.get(client, 0.0), now + COOLDOWN_S)

    def _sweep(self, now: float) -> None:
        self._windows = {client: w for client, w in self._windows.items() if now - w.started <= WINDOW_S}
        self._blocked = {client: until for client, until in self._blocked.items() if until > now}
