"""Prometheus metrics at /metrics: requests and latencies by route, cache hits per tier, store errors.

Kept by prometheus_client. Under `tracecode serve` every worker writes its figures to files of its
own in PROMETHEUS_MULTIPROC_DIR (made fresh at each start, resolver.ops.server), and /metrics sums
the files of every worker of the run, those that exited too: a counter never goes down while the
server runs, whatever Redis or a worker does. Without that directory (one process: tests, an app
built in-process) each app counts in a registry of its own.

Per request the middleware adds to plain ints (0.3 us); the worker writes what they grew by into
prometheus_client's values every SYNC_INTERVAL_S and before it answers /metrics, so a scrape sees
its own worker exactly and the others at most SYNC_INTERVAL_S late. prometheus_client's own
per-request updates in multiprocess mode (a labelled Counter.inc and Histogram.observe, each a
locked write to a memory-mapped file) cost 2.8 to 5.4 us, 4 to 10 % of the 50 to 70 us of server
CPU that a warm resolve takes (bench/resolve.py): too much for the scan path. A worker killed
outright loses its last SYNC_INTERVAL_S of figures; what it wrote stays summed.

tracecode_workers counts the live workers. Neither granian nor uvicorn tells the application when a
worker dies, so a scrape drops the workers whose process is gone (mark_process_dead); a pid that a
new process took before that scrape counts until that process exits.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import time
from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resolver.ops.server import METRICS_DIR_VAR

if TYPE_CHECKING:
    from cache.local import LocalTier
    from cache.store import DocumentCache
    from resolver.scan.ratelimit import Limiter
    from resolver.scan.resolve import Resolver

logger = logging.getLogger(__name__)

BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SYNC_INTERVAL_S = 1.0  # how late another worker's figures may be in a scrape
LIVE_WORKERS_FILES = "gauge_livesum_*.db"  # prometheus_client's file per process of a livesum gauge


class _Latency(Histogram):
    """A histogram that takes many observations at once (prometheus_client's `observe` takes one)."""

    def add(self, counts: Sequence[float], total_s: float) -> None:
        """Add `counts` observations per bucket (+Inf last), of `total_s` seconds in all."""
        for value, n in zip(self._buckets, counts, strict=True):
            if n:
                value.inc(n)
        self._sum.inc(total_s)


@dataclass(frozen=True, slots=True)
class Sources:
    """The worker's objects that count how resolves were answered, read at each sync."""

    local: LocalTier
    cache: DocumentCache
    resolver: Resolver
    limiter: Limiter

    def tiers(self) -> Iterator[tuple[str, int]]:
        local, cache, resolver = self.local, self.cache, self.resolver
        yield from (
            ("local_hits", local.hits), ("local_misses", local.misses),
            ("redis_hits", cache.hits), ("redis_misses", cache.misses),
            ("postgres_loads", resolver.postgres_loads),
            ("postgres_stored", resolver.postgres.stored), ("postgres_built", resolver.postgres.built),
        )  # fmt: skip

    def errors(self) -> Iterator[tuple[str, int]]:
        yield from (("redis", self.cache.errors), ("postgres", self.resolver.postgres_errors))


class Metrics:
    """One worker's figures: plain counts per request, written into prometheus_client's values by `sync`."""

    __slots__ = (
        "_cache", "_directory", "_errors", "_latency", "_limited", "_requests", "_written", "buckets", "registry",
        "requests", "seconds", "sources",
    )  # fmt: skip

    def __init__(self) -> None:
        directory = os.environ.get(METRICS_DIR_VAR)
        if directory and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(f"prometheus_client was imported before {METRICS_DIR_VAR} was set: figures get lost")
        self._directory = Path(directory) if directory else None
        self.registry = CollectorRegistry()
        own = None if self._directory else self.registry  # in multiprocess mode the registry reads the files
        if self._directory:
            MultiProcessCollector(self.registry, path=str(self._directory))  # type: ignore[no-untyped-call]
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)  # (method, route, status)
        self.seconds: defaultdict[str, float] = defaultdict(float)  # route -> total seconds
        self.buckets: dict[str, list[int]] = {}  # route -> counts per bucket (+Inf last)
        self.sources: Sources | None = None
        self._written: dict[Hashable, float] = {}  # what sync wrote of each count
        self._requests = Counter(
            "tracecode_requests",
            "HTTP requests by method, route template and status.",
            ("method", "route", "status"),
            registry=own,
        )
        self._latency = _Latency(
            "tracecode_request_duration_seconds", "Request latency by route template.", ("route",),
            buckets=BUCKETS_S, registry=own,
        )  # fmt: skip
        self._cache = Counter("tracecode_cache", "Resolves answered per tier.", ("tier",), registry=own)
        self._errors = Counter("tracecode_store_errors", "Errors talking to a store.", ("store",), registry=own)
        self._limited = Counter(
            "tracecode_rate_limited", "Resolves refused to clients walking the code space.", registry=own
        )
        workers = Gauge("tracecode_workers", "Live workers.", registry=own, multiprocess_mode="livesum")
        workers.set(1)

    def __repr__(self) -> str:
        return f"Metrics(pid={os.getpid()}, directory={self._directory}, routes={len(self.buckets)})"

    def observe(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        self.requests[(method, route, status)] += 1
        self.seconds[route] += elapsed_s
        counts = self.buckets.get(route)
        if counts is None:
            counts = self.buckets[route] = [0] * (len(BUCKETS_S) + 1)
        counts[bisect.bisect_left(BUCKETS_S, elapsed_s)] += 1

    def sync(self) -> None:
        """Write what every count grew by since the last call into prometheus_client's values."""
        for (method, route, status), n in self.requests.items():
            if grown := self._grown(("requests", method, route, status), n):
                self._requests.labels(method, route, str(status)).inc(grown)
        for route, counts in self.buckets.items():
            grown_counts = [self._grown(("bucket", route, i), n) for i, n in enumerate(counts)]
            if any(grown_counts):
                self._latency.labels(route).add(grown_counts, self._grown(("seconds", route), self.seconds[route]))
        if self.sources is not None:
            for tier, n in self.sources.tiers():
                self._cache.labels(tier).inc(self._grown(("tier", tier), n))
            for store, n in self.sources.errors():
                self._errors.labels(store).inc(self._grown(("errors", store), n))
            self._limited.inc(self._grown(("limited",), self.sources.limiter.limited))

    def _grown(self, key: Hashable, now: float) -> float:
        grown = now - self._written.get(key, 0)
        self._written[key] = now
        return grown

    async def run(self) -> None:
        """Sync every SYNC_INTERVAL_S until cancelled, and once more then."""
        try:
            while True:
                await asyncio.sleep(SYNC_INTERVAL_S)
                self.sync()
        finally:
            self.sync()

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics (Prometheus text format): every worker's figures, this one's up to now."""
        self.sync()
        if self._directory:
            _forget_exited_workers(self._directory)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def _forget_exited_workers(directory: Path) -> None:
    """Drop the live gauges of workers whose process is gone (their counters stay in the sum)."""
    for path in directory.glob(LIVE_WORKERS_FILES):
        pid = int(path.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.info("worker %d has exited: dropped from tracecode_workers", pid)
            mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # a process of another user took the pid: it lives


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template (so codes do not become labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - started)
