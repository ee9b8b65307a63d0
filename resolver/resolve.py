"""The scan path: parse and check the code, look in the cache, fall back to Postgres, answer.

`GET /api/v1/codes/{code}` answers the JSON document; `GET /t/{code}` the consumer page, or the
JSON document when the client asks for `application/json`. Each answer counts one consumer scan.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from cache import keys
from cache.local import Entry, LocalTier
from cache.singleflight import SingleFlight
from cache.store import DocumentCache, Scans
from codegen.format import MalformedCode, parse
from codegen.longform import parse_long
from resolver import pages, queries
from resolver.documents import CHINA_TZ, build_document, cache_ttl_s
from resolver.problems import Problem
from resolver.ratelimit import Limiter
from resolver.scans import ScanCounter

logger = logging.getLogger(__name__)

POSTGRES_RETRY_AFTER_S = 5
T = TypeVar("T")
# Postgres is away (down, restarting, shutting down, out of connections) rather than refusing the request.
POSTGRES_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection cut in the middle of an operation (seen when Postgres stops)
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


class Resolver:
    """Resolves codes to documents: this worker's tier, then Redis, then Postgres (each cold code once per worker)."""

    __slots__ = ("_cache", "_flight", "_local", "_pool", "_public_url", "counter", "postgres_errors", "postgres_loads")

    def __init__(
        self, pool: asyncpg.Pool, cache: DocumentCache, local: LocalTier, counter: ScanCounter, *, public_url: str
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._local = local
        self._flight: SingleFlight[Loaded | None] = SingleFlight()
        self._public_url = public_url
        self.counter = counter
        self.postgres_loads = 0
        self.postgres_errors = 0

    def __repr__(self) -> str:
        return f"Resolver(local={self._local!r}, cache={self._cache!r}, postgres_loads={self.postgres_loads})"

    async def resolve(self, code: str, *, place: str) -> tuple[Entry, Scans]:
        """The cached entry of a canonical code and its scans with this one counted; Problem 404 if never issued."""
        entry = self._local.get(code)
        if entry is not None and self.counter.is_known(code):
            return entry, self.counter.count(code, place)
        fetched = await self._cache.fetch(code)
        if fetched is not None:
            if fetched.document == keys.NEGATIVE:
                raise _unknown(code)
            entry = self._local.put(code, fetched.document, fetched.batch_id)
            return entry, self.counter.count(code, place, fetched.scans)
        loaded = await self._flight.do(code, lambda: self._load(code))
        if loaded is None:
            raise _unknown(code)
        entry = self._local.put(code, loaded.document, loaded.batch_id)
        return entry, self.counter.count(code, place, loaded.scans)

    async def document(self, code: str, *, place: str) -> bytes:
        """The JSON document with its scan statistics."""
        entry, scans = await self.resolve(code, place=place)
        return with_scans(entry.document, scans)

    async def page(self, code: str, *, place: str) -> str:
        """The consumer page: rendered once per cached document, the scan statistics filled in per request."""
        entry, scans = await self.resolve(code, place=place)
        if entry.page is None:
            entry.page = pages.render_document(orjson.loads(entry.document))
        return pages.with_scans(entry.page, scans)

    async def _load(self, code: str) -> Loaded | None:
        self.postgres_loads += 1
        query = queries.DOCUMENT_BY_CODE if len(code) == 20 else queries.DOCUMENT_BY_LONG_CODE
        try:
            row = await self._pool.fetchrow(query, code)
        except POSTGRES_ERRORS as exc:
            self.postgres_errors += 1
            logger.warning("postgres unavailable while resolving: %r", exc)
            raise store_unavailable() from exc
        if row is None:
            await self._cache.put_negative(code)
            return None
        now = dt.datetime.now(CHINA_TZ)
        body = orjson.dumps(build_document(code, row, public_url=self._public_url, today=now.date()))
        first_at = row["scan_first_at"]
        seed = Scans(row["scan_count"] or 0, first_at.astimezone(CHINA_TZ).isoformat() if first_at else None)
        await self._cache.fill(code, body, batch_id=row["batch_id"], ttl_s=cache_ttl_s(row, now.date(), now), seed=seed)
        return Loaded(body, row["batch_id"], seed)


@dataclass(frozen=True, slots=True)
class Loaded:
    document: bytes
    batch_id: int
    scans: Scans


def with_scans(document: bytes, scans: Scans) -> bytes:
    """The document bytes with its `scans` member appended: the cached bytes are reused, not re-encoded."""
    stats = {"count": scans.count, "first_at": scans.first_at, "places_recent": scans.places,
             "warning": scans.is_suspicious}  # fmt: skip
    return b"".join((document[:-1], b',"scans":', orjson.dumps(stats), b"}"))


def _unknown(code: str) -> Problem:
    return Problem(404, "unknown_code", "未找到该追溯码", f"追溯码 {code} 未登记，请核对后重试")


def store_unavailable() -> Problem:
    return Problem(
        503,
        "store_unavailable",
        "服务暂不可用",
        "追溯数据暂时无法读取，请稍后再试",
        headers={"Retry-After": str(POSTGRES_RETRY_AFTER_S)},
    )


def canonical_code(text: str) -> str:
    """The printed code or national long form in `text`; Problem 400 for anything else, before any I/O."""
    try:
        return parse(text)
    except MalformedCode as exc:
        long_code = parse_long(text)
        if long_code is not None:
            return long_code
        raise Problem(400, "malformed_code", "追溯码格式错误", exc.message, reason=exc.reason) from None


def client_place(request: Request) -> str:
    """The client's network (IPv4 /24, IPv6 /48): scans from many of them in a short time flag a copied code."""
    return _network_of(request.client.host if request.client else "")


@functools.lru_cache(maxsize=65_536)
def _network_of(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


async def _limited(request: Request, place: str, answer: Callable[[str], Awaitable[T]]) -> T:
    """Run `answer(code)` for the path's code, counting a malformed or unknown code against the client's limit."""
    limiter: Limiter = request.app.state.limiter
    retry_after = limiter.retry_after_s(place)
    if retry_after:
        raise Problem(
            429, "too_many_requests", "请求过于频繁", "查询未登记追溯码过多，请稍后再试",
            headers={"Retry-After": str(retry_after)},
        )  # fmt: skip
    try:
        result = await answer(canonical_code(request.path_params["code"]))
    except Problem as problem:
        limiter.record(place, is_bad=problem.status in (400, 404))
        raise
    limiter.record(place, is_bad=False)
    return result


async def code_document(request: Request) -> Response:
    """GET /api/v1/codes/{code}"""
    place = client_place(request)
    resolver: Resolver = request.app.state.resolver
    try:
        body = await _limited(request, place, lambda code: resolver.document(code, place=place))
    except Problem as problem:  # answered here: the exception machinery of the middleware costs more than the scan
        return problem.to_response()
    return Response(body, media_type="application/json")


async def code_page(request: Request) -> Response:
    """GET /t/{code}: the consumer page, or the document for `Accept: application/json`."""
    if _wants_json(request):
        return await code_document(request)
    place = client_place(request)
    resolver: Resolver = request.app.state.resolver
    try:
        page = await _limited(request, place, lambda code: resolver.page(code, place=place))
    except Problem as problem:
        return HTMLResponse(pages.render_problem(problem), status_code=problem.status, headers=problem.headers)
    return HTMLResponse(page)


async def refresh_chain(request: Request, batch_id: int) -> None:
    """A new event joined the batch's chain (gate entry, trade, labels), committed already: drop its cached
    documents, best effort; if Redis cannot be told they show the old chain until their TTL."""
    try:
        await invalidate_batch(request, batch_id, is_thorough=False)
    except Exception as exc:
        logger.warning("cached documents of batch %d not invalidated: %r", batch_id, exc)


async def invalidate_batch(request: Request, batch_id: int, *, is_thorough: bool = True) -> None:
    """Drop the batch's cached documents everywhere. Raises when Redis cannot be told: the caller decides.

    Thorough (recall, registry changes): every worker is told even if Redis held nothing, and the drop is
    repeated a moment later, because a load in flight may have read the old state before the change
    committed. Not thorough (a new event in the chain: gate entry, trade, labels): once, and workers are
    told only if Redis held documents of the batch; a chain missing its newest event for a while is
    acceptable, and a busy gate must not pay twice for it.
    """
    cache: DocumentCache = request.app.state.cache
    request.app.state.local.drop_batch(batch_id)  # this worker at once; the others on the published message
    await cache.invalidate_batch(batch_id, always_publish=is_thorough)
    if not is_thorough:
        return

    async def again() -> None:
        await asyncio.sleep(keys.REINVALIDATE_AFTER_S)
        try:
            await cache.invalidate_batch(batch_id, always_publish=True)
        except Exception as exc:  # a background task has no caller to tell
            logger.warning("second invalidation of batch %d failed: %r", batch_id, exc)

    request.app.state.background.spawn(again())
