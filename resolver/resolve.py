"""The scan path: parse and check the code, look in the cache, fall back to Postgres, answer.

`GET /api/v1/codes/{code}` answers the JSON document; `GET /t/{code}` the consumer page, or the
JSON document when the client asks for `application/json`. Each answer counts one consumer scan.

A warm scan is answered from this worker's memory with bytes made when the document was cached;
only the scan statistics are spliced in per request (bench/PROFILE.md shows where the time goes).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging

import asyncpg
import orjson
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import Receive, Scope, Send

from cache import keys
from cache.local import Entry, LocalTier, ScanState
from cache.singleflight import SingleFlight
from cache.store import DocumentCache, Scans
from codegen.format import MalformedCode, parse
from codegen.longform import parse_long
from resolver import pages
from resolver.problems import Problem
from resolver.ratelimit import Limiter
from resolver.scans import ScanCounter
from resolver.stored import Loaded, PostgresDocuments

logger = logging.getLogger(__name__)

POSTGRES_RETRY_AFTER_S = 5
JSON_TYPE = b"application/json"
HTML_TYPE = b"text/html; charset=utf-8"
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
    """Resolves codes to documents: this worker's tier, then Redis, then Postgres (each cold code once per worker),
    where a current stored document is read in one statement with the other codes asked meanwhile (resolver.stored)."""

    __slots__ = ("_cache", "_flight", "_local", "_postgres", "counter", "postgres_errors", "postgres_loads")

    def __init__(
        self, pool: asyncpg.Pool, cache: DocumentCache, local: LocalTier, counter: ScanCounter, *, public_url: str
    ) -> None:
        self._cache = cache
        self._local = local
        self._flight: SingleFlight[Loaded | None] = SingleFlight()
        self._postgres = PostgresDocuments(pool, public_url=public_url)
        self.counter = counter
        self.postgres_loads = 0
        self.postgres_errors = 0

    def __repr__(self) -> str:
        return f"Resolver(local={self._local!r}, cache={self._cache!r}, postgres={self._postgres!r})"

    @property
    def postgres(self) -> PostgresDocuments:
        return self._postgres

    async def resolve(self, code: str, *, place: str) -> tuple[Entry, ScanState]:
        """The cached entry of a canonical code and its scans with this one counted; Problem 404 if never issued."""
        entry = self._local.get(code)
        if entry is not None and self.counter.is_known(code):
            return entry, self.counter.count(code, place)
        fetched = await self._cache.fetch(code)
        if fetched is None and code in self._local and self.counter.is_known(code):
            # Redis missed or failed this scan while another scan of the code loaded it: no second Postgres query.
            return await self.resolve(code, place=place)
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

    async def _load(self, code: str) -> Loaded | None:
        self.postgres_loads += 1
        try:
            loaded = await self._postgres.load(code)
        except POSTGRES_ERRORS as exc:
            self.postgres_errors += 1
            logger.warning("postgres unavailable while resolving: %r", exc)
            raise store_unavailable() from exc
        if loaded is None:
            await self._cache.put_negative(code)
            return None
        await self._cache.fill(code, loaded.document, batch_id=loaded.batch_id, ttl_s=loaded.ttl_s, seed=loaded.scans)
        return loaded


def json_answer(entry: Entry, scans: ScanState) -> bytes:
    """The document with its `scans` member: the cached bytes and the statistics of this scan, nothing re-encoded."""
    places = scans.places_recent
    return b'%s,"scans":{"count":%d,"first_at":%s,"places_recent":%d,"warning":%s}}' % (
        entry.json_head, scans.shown_count, orjson.dumps(scans.first_at), places,
        b"true" if places >= keys.PLACES_WARNING else b"false",
    )  # fmt: skip


def page_answer(entry: Entry, scans: ScanState) -> bytes:
    """The consumer page: rendered once per cached document, the statistics of this scan put in their place."""
    if entry.page is None:
        before, _, after = pages.render_document(orjson.loads(entry.document)).partition(pages.SCANS_MARKER)
        entry.page = (before.encode(), after.encode())
    shown = Scans(scans.shown_count, scans.first_at, scans.places_recent)
    return b"".join((entry.page[0], pages.with_scans(pages.SCANS_MARKER, shown).encode(), entry.page[1]))


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


class ScanRoute:
    """The ASGI app of a scan route (`GET /api/v1/codes/{code}`, or `GET /t/{code}` with `is_page`).

    It answers with its bytes straight away: Starlette's Request and Response objects would cost more
    than a warm scan itself. The router still matches path and method (HEAD as GET, 405 with Allow),
    and the middleware still times and counts every answer.
    """

    __slots__ = ("is_page",)

    def __init__(self, *, is_page: bool) -> None:
        self.is_page = is_page

    def __repr__(self) -> str:
        return f"ScanRoute(is_page={self.is_page})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: State = scope["app"].state
        place = client_place(scope)
        as_page = self.is_page and not _wants_json(scope)
        try:
            entry, scans = await _resolve_limited(state.resolver, state.limiter, place, scope["path_params"]["code"])
        except Problem as problem:
            if as_page:
                page = pages.render_problem(problem)
                await HTMLResponse(page, status_code=problem.status, headers=problem.headers)(scope, receive, send)
            else:
                await problem.to_response()(scope, receive, send)
            return
        body = page_answer(entry, scans) if as_page else json_answer(entry, scans)
        headers = [(b"content-length", b"%d" % len(body)), (b"content-type", HTML_TYPE if as_page else JSON_TYPE)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _resolve_limited(resolver: Resolver, limiter: Limiter, place: str, text: str) -> tuple[Entry, ScanState]:
    """Resolve the code in `text`, counting a malformed or unknown code against the client's limit."""
    retry_after = limiter.retry_after_s(place)
    if retry_after:
        raise Problem(
            429, "too_many_requests", "请求过于频繁", "查询未登记追溯码过多，请稍后再试",
            headers={"Retry-After": str(retry_after)},
        )  # fmt: skip
    try:
        found = await resolver.resolve(canonical_code(text), place=place)
    except Problem as problem:
        limiter.record(place, is_bad=problem.status in (400, 404))
        raise
    limiter.record(place, is_bad=False)
    return found


def client_place(scope: Scope) -> str:
    """The client's network (IPv4 /24, IPv6 /48): scans from many of them in a short time flag a copied code."""
    client = scope.get("client")
    return _network_of(client[0] if client else "")


@functools.lru_cache(maxsize=65_536)
def _network_of(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _wants_json(scope: Scope) -> bool:
    accept = next((value for name, value in scope["headers"] if name == b"accept"), b"")
    return b"application/json" in accept and b"text/html" not in accept


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
