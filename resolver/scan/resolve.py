"""The scan path: parse and check the code, look in the cache, fall back to Postgres, answer.

`GET /api/v1/codes/{code}` answers the JSON document; `GET /t/{code}` the consumer page, or the
JSON document when the client's Accept header prefers `application/json`. Each answer counts one consumer scan.

A warm scan is answered from this worker's memory with bytes made when the document was cached;
only the scan statistics are spliced in per request (bench/PROFILE.md shows where the time goes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg
import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from cache import keys
from cache.keys import ScanSlot
from cache.local import Entry, LocalTier, ScanState
from cache.singleflight import SingleFlight
from cache.store import NO_SCANS, DocumentCache, Fetched, Scans
from codegen.format import CODE_LENGTH, CodeType, MalformedCode, parse, type_of
from codegen.longform import parse_long
from resolver.db import POSTGRES_AWAY_ERRORS, within_request_wait
from resolver.edge.clients import client_of, host_of, place_of
from resolver.edge.negotiate import HTML_MEDIA_TYPE, JSON_MEDIA_TYPE, Offers, accept_of
from resolver.edge.problems import Problem, store_unavailable
from resolver.edge.responses import PAGE_SECURITY_RAW_HEADERS, PageResponse
from resolver.scan import pages
from resolver.scan.ranges import IssuedRanges
from resolver.scan.ratelimit import Limiter
from resolver.scan.scans import ScanCounter
from resolver.scan.stored import Loaded, PostgresDocuments
from resolver.state import app_worker, worker

logger = logging.getLogger(__name__)

T = TypeVar("T")

JSON_TYPE = b"application/json"
HTML_TYPE = b"text/html; charset=utf-8"
PAGE_OFFERS = Offers(HTML_MEDIA_TYPE, JSON_MEDIA_TYPE)  # GET /t/{code}: the page unless JSON is preferred


class Resolver:
    """Resolves codes to documents: this worker's tier, then Redis, then Postgres (each cold document once per
    worker), where a current stored document is read in one statement with the others asked meanwhile
    (resolver.scan.stored). A package code's document is its batch's (resolver.scan.ranges), its scan counters
    its own."""

    __slots__ = (
        "_cache", "_flight", "_local", "_postgres", "counter", "postgres_errors", "postgres_loads", "ranges",
        "url_prefix",
    )  # fmt: skip

    def __init__(
        self,
        pool: asyncpg.Pool,
        cache: DocumentCache,
        local: LocalTier,
        counter: ScanCounter,
        ranges: IssuedRanges,
        *,
        public_url: str,
    ) -> None:
        self.url_prefix = url_prefix(public_url)
        self._cache = cache
        self._local = local
        self._flight: SingleFlight[Loaded | None] = SingleFlight()
        self._postgres = PostgresDocuments(pool)
        self.counter = counter
        self.ranges = ranges
        self.postgres_loads = 0
        self.postgres_errors = 0

    def __repr__(self) -> str:
        return f"Resolver(local={self._local!r}, cache={self._cache!r}, postgres={self._postgres!r})"

    @property
    def postgres(self) -> PostgresDocuments:
        return self._postgres

    async def resolve(self, code: str, *, place: str) -> tuple[Entry, ScanState]:
        """The cached entry of a canonical code's document and its scans with this one counted; Problem 404 if
        never issued, 503 if Postgres is needed and away."""
        known = self.counter.state(code)
        if known is not None:  # scanned here before: its counter is here, its document maybe
            entry = self._local.get(known.doc_key)
            is_fresh = self.counter.is_fresh(known)
            if entry is not None and is_fresh:
                return entry, self.counter.count(known.slot, known.doc_key, place)  # warm: no I/O
            # The document, and the counters if other workers' scans may have passed this worker's view.
            fetched = await self._cache.fetch(
                known.doc_key if entry is None else None, None if is_fresh else known.slot
            )
            if entry is None:
                entry = await self._entry(code, known.doc_key, fetched)
            scans = fetched.scans if fetched is not None else None
            return entry, self.counter.count(known.slot, known.doc_key, place, scans)
        doc_key, slot = await self._place(code)
        entry = self._local.get(doc_key)
        if entry is not None and self.counter.is_unscanned(slot):
            return entry, self.counter.count(slot, doc_key, place, NO_SCANS)  # a first scan: no I/O either
        fetched = await self._cache.fetch(None if entry is not None else doc_key, slot)  # None without Redis
        if entry is None:
            entry = await self._entry(code, doc_key, fetched)
        scans = None
        if fetched is not None:
            scans = fetched.scans
            self.counter.learn(slot.bits_key, fetched.scanned)
        if scans is None and self.counter.state(code) is None:  # Redis lost the code's counters, or is away
            scans = await self._postgres_call(self.counter.current(slot))
        return entry, self.counter.count(slot, doc_key, place, scans)

    async def document(self, batch_code: str) -> Entry:
        """The cached entry of a batch code's document from the same tiers, counting no scan (the GS1 linkset
        reads it); Problem 404 if never issued, 503 if Postgres is needed and away."""
        entry = self._local.get(batch_code)
        if entry is not None:
            return entry
        return await self._entry(batch_code, batch_code, await self._cache.fetch(batch_code, None))

    async def _place(self, code: str) -> tuple[str, ScanSlot]:
        """Where a code's document (its key) and scan counters are kept; Problem 404 for a package code in no
        issued range."""
        if len(code) != CODE_LENGTH or type_of(code) is not CodeType.PACKAGE:
            return code, keys.code_scan_slot(code)
        found = self.ranges.find(code) or await self._postgres_call(self.ranges.locate(code))
        if found is None:
            raise _unknown(code)
        return found.batch_code, keys.package_scan_slot(code, found.region, found.seq)

    async def _entry(self, code: str, doc_key: str, fetched: Fetched | None) -> Entry:
        """The document of `doc_key`: the one Redis just gave, unless it is older than the batch's version this
        worker knows (a change Redis could not be told of, resolver.scan.changes), else from Postgres."""
        if fetched is not None and fetched.document is not None:
            if fetched.document == keys.NEGATIVE:
                raise _unknown(code)
            if self._local.is_current(fetched.batch_id, fetched.version):
                return self._local.put(doc_key, fetched.document, fetched.batch_id, fetched.version)
        entry = self._local.get(doc_key)  # loaded by another scan while this one asked Redis
        if entry is not None:
            return entry
        loaded = await self._flight.do(doc_key, lambda: self._load(doc_key))
        if loaded is None:
            raise _unknown(code)
        return self._local.put(doc_key, loaded.document, loaded.batch_id, loaded.version)

    async def _load(self, doc_key: str) -> Loaded | None:
        self.postgres_loads += 1
        loaded = await self._postgres_call(self._postgres.load(doc_key))
        if loaded is None:
            await self._cache.put_negative(doc_key)
            return None
        await self._cache.fill(
            doc_key, loaded.document, batch_id=loaded.batch_id, version=loaded.version, ttl_s=loaded.ttl_s
        )
        return loaded

    async def _postgres_call(self, call: Awaitable[T]) -> T:
        """`await call`; a Postgres that is away, or hangs longer than REQUEST_WAIT_S, is counted (/metrics) and
        answered as the one 503, as a page on a page route (see ScanRoute)."""
        try:
            return await within_request_wait(call)
        except POSTGRES_AWAY_ERRORS as exc:
            self.postgres_errors += 1
            logger.warning("postgres unavailable while resolving: %r", exc)
            raise store_unavailable() from exc


def code_type(code: str) -> CodeType:
    """The type of a canonical code; the national long form names a production batch."""
    return type_of(code) if len(code) == CODE_LENGTH else CodeType.PRODUCTION_BATCH


def json_answer(entry: Entry, code: str, scans: ScanState, url_prefix: bytes) -> bytes:
    """The document of `code` with its `scans` member: the cached bytes, the code's own members in front and the
    statistics of this scan, nothing re-encoded. `url_prefix` is JSON's `"{public_url}/t/` (an open string)."""
    places = scans.places_recent
    encoded = code.encode()
    return _JSON_ANSWER % (
        encoded, _TYPE_NAMES[code_type(code)], url_prefix, encoded, entry.members, scans.shown_count,
        orjson.dumps(scans.first_at), places, b"true" if places >= keys.PLACES_WARNING else b"false",
    )  # fmt: skip


def page_answer(entry: Entry, code: str, scans: ScanState) -> bytes:
    """The consumer page: rendered once per cached document, the code and the statistics of this scan put in."""
    if entry.page is None:
        entry.page = pages.page_parts(orjson.loads(entry.document))
    shown = Scans(scans.shown_count, scans.first_at, scans.places_recent)
    return pages.fill(entry.page, code, code_type(code), shown)


def url_prefix(public_url: str) -> bytes:
    """`"{public_url}/t/` as JSON, the string left open for a code (see json_answer)."""
    return orjson.dumps(f"{public_url}/t/")[:-1]


_TYPE_NAMES = {code_type: code_type.api_name.encode() for code_type in CodeType}
_JSON_ANSWER = (
    b'{"code":"%s","type":"%s","url":%s%s",%s,"scans":{"count":%d,"first_at":%s,"places_recent":%d,"warning":%s}}'
)


def _unknown(code: str) -> Problem:
    return Problem(404, "unknown_code", "未找到该追溯码", f"追溯码 {code} 未登记，请核对后重试")


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
        state = app_worker(scope["app"])
        host = host_of(scope)
        place, client = place_of(host), client_of(host)
        as_page = self.is_page and PAGE_OFFERS.preferred(accept_of(scope)) == HTML_MEDIA_TYPE
        resolver = state.resolver
        try:
            code, entry, scans = await _resolve_limited(
                resolver, state.limiter, client, place, scope["path_params"]["code"]
            )
        except Problem as problem:
            if as_page:
                page = pages.render_problem(problem)
                await PageResponse(page, status_code=problem.status, headers=problem.headers)(scope, receive, send)
            else:
                await problem.to_response()(scope, receive, send)
            return
        body = page_answer(entry, code, scans) if as_page else json_answer(entry, code, scans, resolver.url_prefix)
        headers = [(b"content-length", b"%d" % len(body)), (b"content-type", HTML_TYPE if as_page else JSON_TYPE)]
        if as_page:
            headers += PAGE_SECURITY_RAW_HEADERS
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _resolve_limited(
    resolver: Resolver, limiter: Limiter, client: str, place: str, text: str
) -> tuple[str, Entry, ScanState]:
    """The canonical code in `text`, resolved; a malformed or unknown code counts against the client's limit."""
    retry_after = limiter.retry_after_s(client)
    if retry_after:
        raise Problem(
            429, "too_many_requests", "请求过于频繁", "查询未登记追溯码过多，请稍后再试",
            headers={"Retry-After": str(retry_after)},
        )  # fmt: skip
    try:
        code = canonical_code(text)
        entry, scans = await resolver.resolve(code, place=place)
    except Problem as problem:
        if problem.status in (400, 404):
            limiter.record_bad(client)
        raise
    return code, entry, scans


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
    state = worker(request)
    cache = state.cache
    state.local.drop_batch(batch_id)  # this worker at once; the others on the published message
    await cache.invalidate_batch(batch_id, always_publish=is_thorough)
    if not is_thorough:
        return

    async def again() -> None:
        await asyncio.sleep(keys.REINVALIDATE_AFTER_S)
        try:
            await cache.invalidate_batch(batch_id, always_publish=True)
        except Exception as exc:  # a background task has no caller to tell
            logger.warning("second invalidation of batch %d failed: %r", batch_id, exc)

    state.background.spawn(again())
