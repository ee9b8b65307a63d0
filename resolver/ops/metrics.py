"""Prometheus metrics at /metrics: requests and latencies by route, cache hits per tier, store errors.

Each worker counts in memory (a few dictionary updates per request) and publishes its figures to
Redis every PUBLISH_INTERVAL_S; /metrics adds up every live worker's figures, so a scrape that
reaches any worker sees the whole instance. Without Redis it shows the answering worker alone.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cache.keys import KEY_PREFIX
from cache.store import REDIS_ERRORS
from resolver.state import worker

if TYPE_CHECKING:
    from resolver.state import Worker

logger = logging.getLogger(__name__)

BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PUBLISH_INTERVAL_S = 5.0
WORKER_TTL_S = 15  # a worker that stopped publishing drops out of the sum
WORKERS_KEY = KEY_PREFIX + "metrics:workers"


def _worker_key(worker: str) -> str:
    return f"{KEY_PREFIX}metrics:{worker}"


class Metrics:
    """One worker's figures. `gauges` are read from the live objects at publish time."""

    __slots__ = ("buckets", "gauges", "requests", "seconds", "worker")

    def __init__(self) -> None:
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)  # (method, route, status)
        self.seconds: defaultdict[str, float] = defaultdict(float)  # route -> total seconds
        self.buckets: dict[str, list[int]] = {}  # route -> counts per bucket (+Inf last)
        self.gauges: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Metrics(worker={self.worker!r}, routes={len(self.buckets)})"

    def observe(self, method: str, route: str, status: int, elapsed_s: float) -> None:
        self.requests[(method, route, status)] += 1
        self.seconds[route] += elapsed_s
        counts = self.buckets.get(route)
        if counts is None:
            counts = self.buckets[route] = [0] * (len(BUCKETS_S) + 1)
        counts[bisect.bisect_left(BUCKETS_S, elapsed_s)] += 1

    def snapshot(self, state: Worker) -> dict[str, Any]:
        local, cache, resolver = state.local, state.cache, state.resolver
        return {
            "requests": [[m, r, s, n] for (m, r, s), n in self.requests.items()],
            "seconds": dict(self.seconds),
            "buckets": self.buckets,
            "cache": {
                "local_hits": local.hits,
                "local_misses": local.misses,
                "redis_hits": cache.hits,
                "redis_misses": cache.misses,
                "postgres_loads": resolver.postgres_loads,
                "postgres_stored": resolver.postgres.stored,
                "postgres_built": resolver.postgres.built,
            },  # fmt: skip
            "errors": {"redis": cache.errors, "postgres": resolver.postgres_errors},
            "limited": state.limiter.limited,
        }


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


async def publish(metrics: Metrics, redis: aioredis.Redis, state: Worker) -> None:
    """Publish this worker's figures until cancelled."""
    while True:
        await asyncio.sleep(PUBLISH_INTERVAL_S)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.set(_worker_key(metrics.worker), orjson.dumps(metrics.snapshot(state)), ex=WORKER_TTL_S)
                pipe.sadd(WORKERS_KEY, metrics.worker)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            logger.debug("metrics not published: %r", exc)


async def _all_snapshots(request: Request) -> list[dict[str, Any]]:
    state = worker(request)
    own = state.metrics.snapshot(state)
    try:
        redis = state.redis
        workers = [w.decode() if isinstance(w, bytes) else w for w in await redis.smembers(WORKERS_KEY)]
        others = [w for w in workers if w != state.metrics.worker]
        values = await redis.mget([_worker_key(w) for w in others]) if others else []
        gone = [w for w, v in zip(others, values, strict=True) if v is None]
        if gone:
            await redis.srem(WORKERS_KEY, *gone)
        return [own, *(orjson.loads(v) for v in values if v is not None)]
    except REDIS_ERRORS:
        return [own]


def _render(snapshots: list[dict[str, Any]]) -> str:
    requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
    seconds: defaultdict[str, float] = defaultdict(float)
    buckets: dict[str, list[int]] = {}
    cache: defaultdict[str, int] = defaultdict(int)
    errors: defaultdict[str, int] = defaultdict(int)
    limited = 0
    for snap in snapshots:
        for method, route, status, n in snap["requests"]:
            requests[(method, route, status)] += n
        for route, total in snap["seconds"].items():
            seconds[route] += total
        for route, counts in snap["buckets"].items():
            summed = buckets.setdefault(route, [0] * len(counts))
            for i, n in enumerate(counts):
                summed[i] += n
        for name, n in snap["cache"].items():
            cache[name] += n
        for name, n in snap["errors"].items():
            errors[name] += n
        limited += snap["limited"]
    lines = [
        "# HELP tracecode_workers Workers whose figures are included.",
        "# TYPE tracecode_workers gauge",
        f"tracecode_workers {len(snapshots)}",
        "# HELP tracecode_requests_total HTTP requests by method, route template and status.",
        "# TYPE tracecode_requests_total counter",
    ]
    lines += [
        f'tracecode_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}'
        for (m, r, s), n in sorted(requests.items())
    ]
    lines += [
        "# HELP tracecode_request_duration_seconds Request latency by route template.",
        "# TYPE tracecode_request_duration_seconds histogram",
    ]
    for route, counts in sorted(buckets.items()):
        running = 0
        for bound, n in zip((*BUCKETS_S, "+Inf"), counts, strict=True):
            running += n
            lines.append(f'tracecode_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {running}')
        lines.append(f'tracecode_request_duration_seconds_sum{{route="{route}"}} {seconds[route]:.6f}')
        lines.append(f'tracecode_request_duration_seconds_count{{route="{route}"}} {running}')
    lines += ["# HELP tracecode_cache_total Resolves answered per tier.", "# TYPE tracecode_cache_total counter"]
    lines += [f'tracecode_cache_total{{tier="{name}"}} {n}' for name, n in sorted(cache.items())]
    lines += [
        "# HELP tracecode_store_errors_total Errors talking to a store.",
        "# TYPE tracecode_store_errors_total counter",
    ]
    lines += [f'tracecode_store_errors_total{{store="{name}"}} {n}' for name, n in sorted(errors.items())]
    lines += [
        "# HELP tracecode_rate_limited_total Resolves refused to clients walking the code space.",
        "# TYPE tracecode_rate_limited_total counter",
        f"tracecode_rate_limited_total {limited}",
    ]
    return "\n".join(lines) + "\n"


async def metrics_route(request: Request) -> Response:
    """GET /metrics (Prometheus text format)"""
    return Response(_render(await _all_snapshots(request)), media_type="text/plain; version=0.0.4")
