"""One worker's objects: built once in the app's lifespan (resolver.app), reached through `worker(request)`.

Starlette's `app.state` holds one entry, the Worker; everything a route uses is a typed field of it, so
`mypy --strict` sees each route's dependencies. The fields never change; what they hold may (the caches
fill, `market_regions` learns markets).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request

if TYPE_CHECKING:  # the modules below read the Worker through this one: names for mypy, no import cycle
    import asyncpg
    import redis.asyncio as aioredis

    from cache.local import LocalTier
    from cache.store import DocumentCache
    from resolver.api.auth import TokenCache
    from resolver.api.gate import GroupCommit, VoucherSupply
    from resolver.api.issuer import CodeIssuer
    from resolver.ops.metrics import Metrics
    from resolver.ops.settings import Settings
    from resolver.ops.tasks import Background
    from resolver.scan.gs1_index import DigitalLinkIndex
    from resolver.scan.ranges import IssuedRanges
    from resolver.scan.ratelimit import Limiter
    from resolver.scan.resolve import Resolver


@dataclass(frozen=True, slots=True)
class Worker:
    """The objects of one worker process, made when it starts and closed when it stops.

    `settings` and `metrics` are made by create_app, before the lifespan (the metrics middleware counts from
    the first request); the rest by the lifespan, once Postgres and Redis are open.
    """

    settings: Settings
    metrics: Metrics
    pool: asyncpg.Pool
    redis: aioredis.Redis
    cache: DocumentCache  # Redis, the tier every worker shares
    local: LocalTier  # this worker's in-process tier
    background: Background  # tasks cancelled at shut-down
    issuer: CodeIssuer
    limiter: Limiter  # malformed and unknown lookups per client
    ranges: IssuedRanges  # package code ranges of this worker's scans
    resolver: Resolver
    gs1: DigitalLinkIndex  # the entities GS1 Digital Links name, in memory (resolver.scan.gs1_index)
    token_cache: TokenCache  # tokens checked lately, dropped when revoked (its listener among `background`)
    gate_vouchers: VoucherSupply  # market entry voucher codes reserved ahead of the gate scans
    gate_groups: GroupCommit  # gate scans sent to Postgres in groups
    label_slots: asyncio.Semaphore  # label issuances at once (resolver.api.labels.MAX_CONCURRENT_ISSUES)
    market_regions: dict[int, str]  # market id -> its county, learnt on first use (markets never move)


def worker(request: Request) -> Worker:
    """The worker that serves `request`."""
    return app_worker(request.app)


def app_worker(app: Starlette) -> Worker:
    """The worker of `app`; RuntimeError before its lifespan has built it."""
    try:
        built: Worker = app.state.worker
    except AttributeError:
        raise RuntimeError("the worker is built in the app's lifespan, which has not run") from None
    return built


def attach(app: Starlette, built: Worker) -> None:
    """Make `built` the worker of `app` (its lifespan does, before the first request)."""
    app.state.worker = built
