"""Per-client limits on the public resolve paths, counted on bad lookups only.

A client (its network, see resolve.client_place) that makes at least MIN_BAD lookups of malformed
or never-issued codes in a window, and for whom they are at least BAD_SHARE of its lookups, is
walking the code space: it is answered 429 for COOLDOWN_S. Genuine scanning, however heavy, asks
for codes that exist (a market's few mistyped codes are a small share) and is never limited.
Counted per worker, in memory: no I/O on the scan path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

WINDOW_S = 60.0
MIN_BAD = 30  # bad lookups in a window before a client can be limited
BAD_SHARE = 0.5  # ... and they must be at least this share of its lookups
COOLDOWN_S = 60.0
MAX_CLIENTS = 100_000  # windows kept per worker; expired ones are swept beyond this


@dataclass(slots=True)
class _Window:
    started: float
    lookups: int = 0
    bad: int = 0
    blocked_until: float = 0.0


class Limiter:
    __slots__ = ("_clients", "limited")

    def __init__(self) -> None:
        self._clients: dict[str, _Window] = {}
        self.limited = 0  # answers refused, for the metrics

    def __repr__(self) -> str:
        return f"Limiter(clients={len(self._clients)}, limited={self.limited})"

    def retry_after_s(self, client: str) -> int:
        """Seconds until `client` may ask again; 0 when it is not limited."""
        window = self._clients.get(client)
        if window is None or window.blocked_until == 0.0:
            return 0
        left = window.blocked_until - time.monotonic()
        if left <= 0:
            window.blocked_until = 0.0
            return 0
        self.limited += 1
        return int(left) + 1

    def record(self, client: str, *, is_bad: bool) -> None:
        now = time.monotonic()
        window = self._clients.get(client)
        if window is None or now - window.started > WINDOW_S:
            if window is not None and window.blocked_until > now:
                window.started, window.lookups, window.bad = now, 0, 0
            else:
                if len(self._clients) >= MAX_CLIENTS:
                    self._sweep(now)
                window = self._clients[client] = _Window(now)
        window.lookups += 1
        if is_bad:
            window.bad += 1
            if window.bad >= MIN_BAD and window.bad >= BAD_SHARE * window.lookups:
                window.blocked_until = now + COOLDOWN_S

    def _sweep(self, now: float) -> None:
        self._clients = {
            client: w for client, w in self._clients.items() if now - w.started <= WINDOW_S or w.blocked_until > now
        }
