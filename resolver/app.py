"""The Starlette application: routes, error handlers, and the lifespan that opens Postgres and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from cache.local import LocalTier
from cache.store import DocumentCache, redis_client
from codegen import kernels
from resolver import db, queries
from resolver.api import (
    brands,
    catalog,
    designations,
    export,
    fairs,
    flow,
    gate,
    hooks,
    imports,
    inspections,
    labels,
    openapi,
    precheck,
    recall,
    registry,
)
from resolver.api.auth import TokenCache
from resolver.api.issuer import CodeIssuer
from resolver.console import regions
from resolver.edge import problems
from resolver.edge.responses import ORJSONResponse
from resolver.ops import metrics
from resolver.ops.settings import Settings
from resolver.ops.tasks import Background
from resolver.scan import gs1, resolve
from resolver.scan.changes import ChangeFeed
from resolver.scan.gs1_index import DigitalLinkIndex
from resolver.scan.ranges import IssuedRanges
from resolver.scan.ratelimit import Limiter
from resolver.scan.scans import ScanCounter
from resolver.state import Worker, attach, worker
from schema.migrate import ensure_event_partitions

logger = logging.getLogger(__name__)

PARTITION_CHECK_INTERVAL_S = 6 * 3_600  # event partitions are made months ahead; checking 4 times a day is plenty
DOCUMENT_CLEANUP_INTERVAL_S = 600  # expired rows of code_documents (no document lives more than an hour) go
HEALTH_TIMEOUT_S = 1.0
SHUTDOWN_STEP_S = 10.0

QueryLogger = Callable[[asyncpg.connection.LoggedQuery], None]


async def livez(request: Request) -> Response:
    """GET /livez: the process answers. No I/O: it is also the ceiling the benchmarks compare with."""
    return PlainTextResponse("ok")


async def healthz(request: Request) -> Response:
    """GET /healthz: ok when Postgres and Redis both answer within HEALTH_TIMEOUT_S, degraded when either does not
    (asked at once, so that the answer comes within HEALTH_TIMEOUT_S whatever either does)."""
    state = worker(request)
    postgres, redis_state = await asyncio.gather(
        _answers_within(state.pool.fetchval("SELECT 1", timeout=HEALTH_TIMEOUT_S)),
        _answers_within(state.cache.ping()),
    )
    status = "ok" if postgres and redis_state else "degraded"
    return ORJSONResponse(
        {"status": status, "postgres": "ok" if postgres else "down", "redis": "ok" if redis_state else "down"}
    )


async def _answers_within(check: Awaitable[object]) -> bool:
    """Whether `check` answered, and truly (a ping's False is no answer), within HEALTH_TIMEOUT_S."""
    try:
        return await db.within(check, HEALTH_TIMEOUT_S) is not False
    except db.POSTGRES_CALL_ERRORS:
        return False


async def _keep_event_partitions(pool: asyncpg.Pool) -> None:
    while True:
        await asyncio.sleep(PARTITION_CHECK_INTERVAL_S)
        try:
            async with pool.acquire() as conn:
                await ensure_event_partitions(conn, today=dt.date.today())
        except db.POSTGRES_CALL_ERRORS as exc:
            logger.warning("could not check event partitions: %r", exc)


async def _forget_expired_documents(pool: asyncpg.Pool) -> None:
    """Delete the stored documents past their time (resolver.scan.stored); they are never served, only kept."""
    while True:
        await asyncio.sleep(DOCUMENT_CLEANUP_INTERVAL_S)
        try:
            await pool.execute(queries.FORGET_EXPIRED_DOCUMENTS)
        except db.POSTGRES_CALL_ERRORS as exc:
            logger.warning("could not delete expired stored documents: %r", exc)


async def _close(background: Background, redis: aioredis.Redis, pool: asyncpg.Pool) -> None:
    """Stop the worker's tasks (flushing scan counts) and close its connections, each within a bound: a
    connection stuck in an operation must not keep the worker from exiting."""
    try:
        await asyncio.wait_for(background.close(), SHUTDOWN_STEP_S)
    except TimeoutError:
        logger.warning("background tasks did not finish within %.0f s", SHUTDOWN_STEP_S)
    await redis.aclose()
    try:
        await asyncio.wait_for(pool.close(), SHUTDOWN_STEP_S)
    except TimeoutError:
        logger.warning("postgres connections still busy after %.0f s: terminating them", SHUTDOWN_STEP_S)
        pool.terminate()


def build_worker(settings: Settings, app_metrics: metrics.Metrics, pool: asyncpg.Pool, redis: aioredis.Redis) -> Worker:
    """The worker's objects on an open pool and Redis client; no I/O, no task started (the lifespan starts them)."""
    cache = DocumentCache(redis)
    local = LocalTier(settings.local_cache_size)
    issuer = CodeIssuer(settings.secret)
    ranges = IssuedRanges(pool, settings.secret)
    return Worker(
        settings=settings,
        metrics=app_metrics,
        pool=pool,
        redis=redis,
        cache=cache,
        local=local,
        background=Background(),
        issuer=issuer,
        limiter=Limiter(settings.bad_lookup_limit),
        ranges=ranges,
        resolver=resolve.Resolver(pool, cache, local, ScanCounter(pool, cache), ranges, public_url=settings.public_url),
        token_cache=TokenCache(redis),
        gate_vouchers=gate.VoucherSupply(issuer, pool),
        gate_groups=gate.GroupCommit(pool),
        label_slots=asyncio.Semaphore(labels.MAX_CONCURRENT_ISSUES),
        market_regions={},
        gs1=DigitalLinkIndex(pool, local, ranges),
    )


def create_app(settings: Settings, *, query_logger: QueryLogger | None = None) -> Starlette:
    """The application for `settings`, whose database and Redis URLs must be set (see resolver.ops.cli).

    `query_logger`, when given, sees every query the pool sends (tests count Postgres round trips with it).
    """
    if settings.database_url is None or settings.redis_url is None:
        raise ValueError("create_app needs database_url and redis_url; the command line starts embedded ones")
    database_url, redis_url = settings.database_url, settings.redis_url
    app_metrics = metrics.Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await db.create_pool(database_url, query_logger=query_logger)
        redis = redis_client(redis_url)
        built = build_worker(settings, app_metrics, pool, redis)
        background, cache, local = built.background, built.cache, built.local
        if not await cache.ping():
            logger.warning("redis at start-up does not answer: serving from postgres until it does")
        background.spawn(asyncio.to_thread(kernels.warm))  # the first labels or package scan need not load the kernels
        background.spawn(_keep_event_partitions(pool))
        background.spawn(_forget_expired_documents(pool))
        changes = ChangeFeed(pool, local)
        try:  # before the first answer: a change Redis missed within the last hour must not be served
            await changes.poll()
        except db.POSTGRES_CALL_ERRORS as exc:
            logger.warning("changes not read from postgres at start-up: %r", exc)
        background.spawn(changes.run())
        background.spawn(built.resolver.counter.run())
        background.spawn(built.limiter.run(cache))
        background.spawn(built.token_cache.listen())
        app_metrics.sources = metrics.Sources(local, cache, built.resolver, built.limiter)
        background.spawn(app_metrics.run())
        if settings.local_cache_size:
            background.spawn(cache.listen_for_invalidations(local))
        attach(app, built)
        # Everything made so far lives as long as the worker: keep it out of the collector's full passes, which
        # otherwise walk it every few hundred milliseconds under load (30-76 ms pauses measured in bench/).
        gc.freeze()
        try:
            yield
        finally:
            await _close(background, redis, pool)

    app = Starlette(
        routes=[
            Route("/livez", livez),
            # The scan routes next: the router tries each route in turn, and these are most of the traffic.
            Route("/t/{code:path}", resolve.ScanRoute(is_page=True), methods=["GET"], name="code_page"),
            Route("/api/v1/codes/{code:path}", resolve.ScanRoute(is_page=False), methods=["GET"], name="code_document"),
            *gs1.ROUTES,  # GS1 Digital Links: the scans of labels that carry them
            Route("/healthz", healthz),
            Route("/metrics", app_metrics.endpoint),
            *registry.ROUTES,
            *gate.ROUTES,
            *recall.ROUTES,
            *inspections.ROUTES,
            *flow.ROUTES,
            *labels.ROUTES,
            *hooks.ROUTES,
            *designations.ROUTES,
            *precheck.ROUTES,
            *brands.ROUTES,
            *fairs.ROUTES,
            *catalog.ROUTES,
            *imports.ROUTES,
            *export.ROUTES,
            *regions.ROUTES,
            *openapi.ROUTES,
        ],
        exception_handlers={
            problems.Problem: problems.handle_problem,
            HTTPException: problems.handle_http_exception,
            ClientDisconnect: problems.handle_client_disconnect,
            **dict.fromkeys(db.POSTGRES_AWAY_ERRORS, problems.handle_store_unavailable),
            Exception: problems.handle_unexpected,
        },
        middleware=[Middleware(metrics.MetricsMiddleware, metrics=app_metrics)],
        lifespan=lifespan,
    )
    return app


def app_from_env() -> Starlette:
    """The factory the ASGI server calls in each worker: settings from the environment."""
    return create_app(Settings.from_env())
