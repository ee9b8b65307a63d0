"""GS1 Digital Link: a GS1-Conformant resolver (GS1-Conformant Resolver standard 1.1 / 1.2) for GTINs, their lots
and their package codes, the product page, and the resolver description.

`/01/{gtin}[/10/{lot}][/21/{serial}]` (resolver.scan.gs1_uri checks it; 400 if it is not a conformant Digital Link)
resolves to the most specific level the resolver knows (resolver.scan.gs1_index: an unknown lot or serial walks
up to the next level in the same request; an unknown GTIN is 404):
- no `linkType`: 307 to the default link of that level: the product page `/p/{gtin}`, or the consumer page
  `/t/{code}` of the batch or of the package code;
- `linkType=linkset` (or `all`, its name in GS1 Digital Link 1.1), or an `Accept` header that prefers
  `application/linkset+json` or `application/json` to HTML: 200 with the RFC 9264 linkset of every level of the
  request the resolver knows, most specific first, and a `Link` to its JSON-LD context (in the body too when
  `Accept` prefers `application/ld+json`);
- `linkType=gs1:...` (or the full vocabulary URI): 307 to that link at the most specific level that has one, the
  one whose media type `Accept` prefers; 404 when no level has one.
A redirect passes the request's query string on, but for `linkType`, which was the resolver's to read. Every
answer (problems, redirects, preflights) carries the CORS headers; every answer about a known entity a `Link` to
its linkset. A warm default redirect is the answer to the same path a moment ago, kept in this worker's memory while
the batch it rests on stays at the version read (resolver.scan.gs1_index); the linkset reads the batch's document
from the scan path's tiers (resolver.scan.resolve.Resolver.document) and the product from Postgres, so a recall
shows in it at once. No answer here counts a scan: the consumer page it leads to does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from resolver import queries
from resolver.categories import CATEGORIES, PRODUCER_KIND_LABELS
from resolver.edge.clients import client_of, host_of
from resolver.edge.negotiate import HTML_MEDIA_TYPE, JSON_MEDIA_TYPE, MediaRange, accept_of, media_ranges, quality
from resolver.edge.problems import Problem
from resolver.edge.responses import ORJSONResponse, PageResponse
from resolver.scan import gs1_links, pages
from resolver.scan.documents import china_today
from resolver.scan.gs1_index import Level, Match, from_postgres
from resolver.scan.gs1_links import (
    GS1_VOCABULARY,
    JSON_LD_CONTEXT,
    JSON_LD_CONTEXT_REL,
    LINKSET_MEDIA_TYPE,
    Context,
    Link,
)
from resolver.scan.gs1_uri import GTIN_AI, DigitalLink, checked_gtin, parse_path
from resolver.state import Worker, app_worker, worker

LINKSET: Final = "linkset"  # the linkType that asks for the linkset
LINKSET_KEYWORDS: Final = frozenset({LINKSET, "all"})  # `all`: its name in GS1 Digital Link 1.1
LINK_TYPE_PARAMETER: Final = "linkType"
PRODUCTS_SHOWN: Final = 5  # products of one GTIN on its page (several producers may share a GTIN)
BATCHES_SHOWN: Final = 50  # batches of each, recalled ones first, then the newest
DESCRIPTION_MAX_AGE_S: Final = 86_400  # 1 day: the description changes only with a release
PREFLIGHT_MAX_AGE_S: Final = 86_400
MAX_REMEMBERED_ACCEPTS: Final = 256  # distinct Accept values whose linkset preference is remembered
JSON_LD_MEDIA_TYPE: Final = "application/ld+json"
RESOLVER_NAME: Final = "tracecode 农产品质量安全追溯 GS1 数字链接解析服务"

_METHODS: Final = "GET, HEAD, OPTIONS"
CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": _METHODS,
    "Access-Control-Expose-Headers": "Link, Location",
}
_PREFLIGHT: Final = {
    **CORS_HEADERS,
    "Allow": _METHODS,
    "Access-Control-Allow-Headers": "Accept, Accept-Language",
    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
}
_REDIRECT_HEADERS: Final = [(name.lower().encode(), value.encode()) for name, value in CORS_HEADERS.items()] + [
    (b"vary", b"Accept"),
    (b"content-length", b"0"),
]
_PATH_START: Final = len(f"/{GTIN_AI}/")
_CONTEXT_LINK: Final = gs1_links.header_value(JSON_LD_CONTEXT, JSON_LD_CONTEXT_REL, media_type=JSON_LD_MEDIA_TYPE)


class LinksetResponse(ORJSONResponse):
    media_type = LINKSET_MEDIA_TYPE


class JsonLdResponse(ORJSONResponse):
    media_type = JSON_LD_MEDIA_TYPE


@dataclass(frozen=True, slots=True)
class _Request:
    """What a Digital Link request asks, read before any I/O."""

    link: DigitalLink
    link_type: str | None  # a full vocabulary URI, LINKSET, or None for the default link
    passed_on: str  # the query string without linkType, for the redirect target


class DigitalLinkRoute:
    """The ASGI app of `/01/{path}`: GET, HEAD (as GET, without a body) and OPTIONS (the CORS preflight); the router
    answers other methods 405.

    A default redirect, the common answer, is sent without Starlette's Request and Response objects.
    """

    __slots__ = ("_linkset_types",)

    def __init__(self) -> None:
        self._linkset_types: dict[bytes | None, str | None] = {}

    def __repr__(self) -> str:
        return "DigitalLinkRoute()"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            await Response(status_code=204, headers=_PREFLIGHT)(scope, receive, send)
            return
        accept = accept_of(scope)
        try:
            await self._answer(scope, receive, send, accept)
        except Problem as problem:
            await _problem_response(problem, accept, method)(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, accept: bytes | None) -> None:
        state = app_worker(scope["app"])
        client = client_of(host_of(scope))
        _check_limit(state, client)
        raw, query = _raw_path(scope), scope["query_string"]
        linkset_type = self._linkset_type(accept)
        is_default = not query and linkset_type is None
        if is_default:
            kept = state.gs1.kept_answer(raw)
            if kept is not None:  # warm: the answer of a moment ago, still holding
                await _send_redirect(send, kept)
                return
        asked, match = await _match(state, client, raw, query)
        public_url = state.settings.public_url
        anchor = public_url + _anchor_path(match)
        linkset_link = gs1_links.header_value(f"{anchor}?linkType={LINKSET}", LINKSET, media_type=LINKSET_MEDIA_TYPE)
        if asked.link_type is None and linkset_type is None:
            headers = _redirect_headers(_with_query(public_url + _default_path(match), asked.passed_on), linkset_link)
            if is_default:
                state.gs1.keep_answer(raw, match, headers)
            await _send_redirect(send, headers)
            return
        answer_headers = {**CORS_HEADERS, "Vary": "Accept", "Link": linkset_link}
        if asked.link_type in (None, LINKSET):
            contexts = [await _context(state, match, level) for level in _levels(match)]
            linkset_headers = {**answer_headers, "Link": f"{linkset_link}, {_CONTEXT_LINK}"}
            body = gs1_links.linkset(contexts)
            if linkset_type == JSON_LD_MEDIA_TYPE:  # the context in the body (resolver standard 2.10)
                response: Response = JsonLdResponse({"@context": JSON_LD_CONTEXT, **body}, headers=linkset_headers)
            else:
                response = LinksetResponse(body, headers=linkset_headers)
            if scope["method"] == "HEAD":
                response.body = b""  # the headers GET would send, content-length included
            await response(scope, receive, send)
            return
        target = await _requested_link(state, match, asked.link_type, media_ranges(accept))
        if target is None:
            raise Problem(
                404, "unknown_link_type", "没有该类型的链接",
                f"没有 {asked.link_type} 类型的链接；全部链接见 {anchor}?linkType={LINKSET}", headers=answer_headers,
            )  # fmt: skip
        await _send_redirect(send, _redirect_headers(_with_query(target.href, asked.passed_on), linkset_link))

    def _linkset_type(self, accept: bytes | None) -> str | None:
        """The linkset's media type the client names above HTML (None: it does not); remembered per header."""
        if accept in self._linkset_types:
            return self._linkset_types[accept]
        linkset_type = preferred_linkset_type(media_ranges(accept))
        if len(self._linkset_types) >= MAX_REMEMBERED_ACCEPTS:
            del self._linkset_types[next(iter(self._linkset_types))]
        self._linkset_types[accept] = linkset_type
        return linkset_type


def preferred_linkset_type(ranges: Sequence[MediaRange]) -> str | None:
    """`application/linkset+json` when `ranges` name it or plain JSON (GS1's recommendation) explicitly above HTML,
    `application/ld+json` when they name JSON-LD above those; None when HTML comes first (a redirect)."""
    json_q = max(quality(ranges, LINKSET_MEDIA_TYPE, explicit=True), quality(ranges, JSON_MEDIA_TYPE, explicit=True))
    json_ld_q = quality(ranges, JSON_LD_MEDIA_TYPE, explicit=True)
    if max(json_q, json_ld_q) <= quality(ranges, HTML_MEDIA_TYPE):
        return None
    return JSON_LD_MEDIA_TYPE if json_ld_q > json_q else LINKSET_MEDIA_TYPE


def _check_limit(state: Worker, client: str) -> None:
    """Problem 429 for a client past its limit of malformed and unknown lookups (resolver.scan.ratelimit)."""
    retry_after = state.limiter.retry_after_s(client)
    if retry_after:
        raise Problem(
            429, "too_many_requests", "请求过于频繁", "查询未登记的数字链接过多，请稍后再试",
            headers={"Retry-After": str(retry_after)},
        )  # fmt: skip


def _raw_path(scope: Scope) -> bytes:
    """The request's path after `/01/`, percent-encoded as it came (`%2F` belongs to a value)."""
    raw: bytes = scope.get("raw_path") or quote(scope["path"]).encode()  # raw_path is optional in ASGI
    return raw.partition(b"?")[0][_PATH_START:]  # servers differ on whether raw_path holds the query


async def _match(state: Worker, client: str, raw: bytes, query: bytes) -> tuple[_Request, Match]:
    """What the request asks and the level it names; a malformed Digital Link or an unknown GTIN counts against the
    client's limit, as a malformed or unknown code does on the scan routes."""
    try:
        link_type, passed_on = _split_query(query.decode("latin-1"))
        asked = _Request(parse_path(raw), link_type, passed_on)
        return asked, await state.gs1.match(asked.link)
    except Problem as problem:
        if problem.status in (400, 404):
            state.limiter.record_bad(client)
        raise


def _split_query(query: str) -> tuple[str | None, str]:
    """The requested link type (None: the default link) and the rest of the query string, as it came."""
    if not query or LINK_TYPE_PARAMETER not in query:
        return None, query
    link_type = None
    kept = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if unquote(name) == LINK_TYPE_PARAMETER:
            link_type = unquote(value).strip() or None
        else:
            kept.append(pair)
    if link_type is not None:
        link_type = LINKSET if link_type.lower() in LINKSET_KEYWORDS else gs1_links.expand(link_type)
    return link_type, "&".join(kept)


def _with_query(href: str, query: str) -> str:
    """`href` with the request's query string passed on (resolver standard 2.12), before any fragment."""
    if not query:
        return href
    base, hash_, fragment = href.partition("#")
    return f"{base}{'&' if '?' in base else '?'}{query}{hash_}{fragment}"


def _redirect_headers(location: str, link: str) -> list[tuple[bytes, bytes]]:
    return [(b"location", location.encode()), (b"link", link.encode()), *_REDIRECT_HEADERS]


async def _send_redirect(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    """307 with `headers` (the location, the `Link` to the linkset, CORS); no body, for GET as for HEAD."""
    await send({"type": "http.response.start", "status": 307, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _problem_response(problem: Problem, accept: bytes | None, method: str) -> Response:
    """The problem with the CORS headers: as the Chinese error page to a browser, as problem details otherwise."""
    problem.headers = {**CORS_HEADERS, **(problem.headers or {})}
    ranges = media_ranges(accept)
    if quality(ranges, HTML_MEDIA_TYPE, explicit=True) > 0 and preferred_linkset_type(ranges) is None:
        response: Response = PageResponse(pages.render_problem(problem), problem.status, problem.headers)
    else:
        response = problem.to_response()
    if method == "HEAD":
        response.body = b""
    return response


# --- the levels of a match --------------------------------------------------------------------------------------


def _levels(match: Match) -> list[Level]:
    """The levels of the request that the resolver knows, most specific first (resolver standard 2.5.9, rule 4)."""
    if match.level is Level.PACKAGE:
        return [Level.PACKAGE, Level.BATCH, Level.PRODUCT] if match.link.lot else [Level.PACKAGE, Level.PRODUCT]
    if match.level is Level.BATCH:
        return [Level.BATCH, Level.PRODUCT]
    return [Level.PRODUCT]


def _anchor_path(match: Match, level: Level | None = None) -> str:
    """The canonical path of `match` at `level` (its own by default): the subject of that level's links."""
    level = level or match.level
    if level is Level.PACKAGE:
        return match.link.path()
    if level is Level.BATCH:
        return match.link.path(serial=False)
    return match.link.path(lot=False, serial=False)


def _default_path(match: Match) -> str:
    if match.level is Level.PACKAGE:
        return f"/t/{match.package_code}"
    if match.level is Level.BATCH:
        assert match.batch is not None
        return f"/t/{match.batch.code}"
    return f"/p/{match.link.gtin}"


async def _context(state: Worker, match: Match, level: Level) -> Context:
    """The links of one level of `match`, as they stand: the batch's document from the tiers, the product from
    Postgres."""
    public_url = state.settings.public_url
    anchor = public_url + _anchor_path(match, level)
    today = china_today()
    if level is Level.PRODUCT:
        rows = await from_postgres(state.pool.fetch(queries.GS1_PRODUCTS, match.link.gtin, today, 0, PRODUCTS_SHOWN))
        certifications = [c for row in rows for c in row["certifications"]]
        links = gs1_links.product_links(
            public_url, match.link.gtin, certifications=certifications,
            recalled=sum(row["recalled"] for row in rows), today=today,
        )  # fmt: skip
        return Context(anchor, "、".join(dict.fromkeys(row["product_name"] for row in rows)), links)
    assert match.batch is not None
    document = orjson.loads((await state.resolver.document(match.batch.code)).document)
    name, lot = document["product"]["name"], document["batch"]["lot"]
    if level is Level.PACKAGE:
        assert match.package_code is not None
        description = f"{name}（批号 {lot}，追溯码 {match.package_code}）"
        return Context(anchor, description, gs1_links.code_links(public_url, match.package_code, document, today=today))
    return Context(
        anchor, f"{name}（批号 {lot}）", gs1_links.code_links(public_url, match.batch.code, document, today=today)
    )


async def _requested_link(state: Worker, match: Match, rel: str, ranges: Sequence[MediaRange]) -> Link | None:
    """The link of type `rel` at the most specific level that has one, the one `ranges` prefer; None if none has."""
    for level in _levels(match):
        candidates = (await _context(state, match, level)).of_type(rel)
        if candidates:
            # The first of the best: without an Accept header the HTML link, for a JSON client the JSON one.
            return max(candidates, key=lambda link: quality(ranges, link.media_type or HTML_MEDIA_TYPE))
    return None


# --- the product page and the resolver description ----------------------------------------------------------


async def product_page(request: Request) -> Response:
    """GET /p/{gtin}: the product of a GTIN in Chinese: producer, certifications, batches (recalled ones first)."""
    try:
        gtin = checked_gtin(request.path_params["gtin"])
        today = china_today()
        rows = await from_postgres(
            worker(request).pool.fetch(queries.GS1_PRODUCTS, gtin, today, BATCHES_SHOWN, PRODUCTS_SHOWN)
        )
        if not rows:
            raise Problem(404, "unknown_gtin", "未找到该商品", f"商品条码 {gtin} 未登记")
    except Problem as problem:
        return PageResponse(pages.render_problem(problem), problem.status, problem.headers)
    products = [_product_view(row) for row in rows]
    return PageResponse(pages.render_product(gtin, products))


def _product_view(row: asyncpg.Record) -> dict[str, Any]:
    category = CATEGORIES.get(row["category"])
    return {
        **dict(row),
        "category_label": category.label if category else row["category"],
        "kind_label": PRODUCER_KIND_LABELS.get(row["producer_kind"], ""),
    }


async def resolver_description(request: Request) -> Response:
    """GET /.well-known/gs1resolver: the resolver description file of the GS1-Conformant resolver standard (3)."""
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=_PREFLIGHT)
    description = {
        "name": RESOLVER_NAME,
        "resolverRoot": worker(request).settings.public_url,
        "supportedPrimaryKeys": [GTIN_AI],
        "supportedLinkType": [{"namespace": GS1_VOCABULARY, "prefix": "gs1:"}],
        "linkTypeDefaultCanBeLinkset": False,
        "jsonLdContextLocation": JSON_LD_CONTEXT,
    }
    headers = {**CORS_HEADERS, "Cache-Control": f"public, max-age={DESCRIPTION_MAX_AGE_S}"}
    return ORJSONResponse(description, headers=headers)


ROUTES: list[BaseRoute] = [
    Route("/01/{path:path}", DigitalLinkRoute(), methods=["GET", "OPTIONS"], name="digital_link"),
    Route("/p/{gtin}", product_page, methods=["GET"], name="product_page"),
    Route("/.well-known/gs1resolver", resolver_description, methods=["GET", "OPTIONS"]),
]
