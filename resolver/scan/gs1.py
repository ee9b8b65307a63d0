"""GS1 Digital Link: /01/{gtin}/10/{lot} to a batch's page, its linkset, and the resolver description.

A GS1-Conformant resolver (GS1-Conformant Resolver standard 1.1 / 1.2) for one key path, a GTIN with a
batch or lot:
- no `linkType`: 307 to the default link, the consumer page `/t/{code}`;
- `linkType=linkset` (or `all`, its older name), or an `Accept` header that prefers
  `application/linkset+json` or `application/json` to HTML: 200 with the RFC 9264 linkset;
- `linkType=gs1:...` (or the full vocabulary URI): 307 to that link, the one whose media type `Accept`
  prefers; 404 when the batch has no link of that type.
Every answer names the links and the linkset in its `Link` header (RFC 8288). The batch is looked up
in one Postgres round trip, answered uncached: the consumer page it redirects to is what counts the scan
and uses the cache, and reading Postgres here means a recall shows in the linkset at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote_to_bytes

import asyncpg
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from codegen.digitallink import LOT_MAX_LENGTH, is_cset82
from codegen.gtin import InvalidGtin, normalise_gtin
from resolver.categories import CERTIFICATION_LABELS
from resolver.db import POSTGRES_AWAY_ERRORS
from resolver.edge.negotiate import HTML_MEDIA_TYPE, JSON_MEDIA_TYPE, MediaRange, media_ranges, quality
from resolver.edge.problems import Problem, store_unavailable
from resolver.edge.responses import ORJSONResponse, PageResponse
from resolver.scan import pages
from resolver.scan.documents import china_today, status_of
from resolver.state import worker

# The batch that GTIN $1 and lot $2 name, with what its links say about it, in one round trip. Should
# products of several producers share a GTIN, the most recently registered matching batch wins.
# is_known_gtin tells an unknown lot from an unknown GTIN. Joining on producer_id as well lets the
# batches (producer_id, created_at) index serve the join; certifications count while valid on $3 and
# are read for the chosen batch only, outside the LIMIT.
LOOKUP_BATCH: Final = """
SELECT EXISTS (SELECT 1 FROM products WHERE gtin = $1) AS is_known_gtin,
       m.trace_code, m.lot, m.status, m.expires_on, m.has_certificate, m.product_name,
       ARRAY(SELECT DISTINCT c.kind
               FROM certifications c
              WHERE c.producer_id = m.producer_id AND (c.product_id IS NULL OR c.product_id = m.product_id)
                AND c.valid_to >= $3
              ORDER BY c.kind) AS certification_kinds
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
        SELECT b.trace_code, b.lot, b.status, b.expires_on, b.certificate IS NOT NULL AS has_certificate,
               b.producer_id, b.product_id, pd.name AS product_name
          FROM products pd
          JOIN batches b ON b.producer_id = pd.producer_id AND b.product_id = pd.id
         WHERE pd.gtin = $1 AND b.lot = $2
         ORDER BY b.created_at DESC, b.id DESC
         LIMIT 1) AS m ON true
"""

GS1_VOCABULARY: Final = "https://gs1.org/voc/"
# Spellings of the GS1 vocabulary a client may put in `linkType`; `gs1:` is the compact form.
_VOCABULARY_SPELLINGS: Final = ("gs1:", GS1_VOCABULARY, "http://gs1.org/voc/", "https://ref.gs1.org/voc/")
DEFAULT_LINK: Final = GS1_VOCABULARY + "defaultLink"
PIP: Final = GS1_VOCABULARY + "pip"
TRACEABILITY: Final = GS1_VOCABULARY + "traceability"
CERTIFICATION_INFO: Final = GS1_VOCABULARY + "certificationInfo"
RECALL_STATUS: Final = GS1_VOCABULARY + "recallStatus"
LINKSET: Final = "linkset"  # the linkType that asks for the linkset
LINKSET_KEYWORDS: Final = frozenset({LINKSET, "all"})  # `all`: its name in GS1 Digital Link 1.1

LINKSET_MEDIA_TYPE: Final = "application/linkset+json"
JSON_LD_CONTEXT: Final = "https://ref.gs1.org/standards/resolver/linkset-context"
JSON_LD_CONTEXT_REL: Final = "http://www.w3.org/ns/json-ld#context"
LANGUAGE: Final = "zh"  # every target is in Chinese, so Accept-Language has nothing to choose between

GTIN_AI: Final = "01"
LOT_AI: Final = "10"
CERTIFICATES_SECTION: Final = "#certifications"  # the page's 认证与登记 section

DESCRIPTION_MAX_AGE_S: Final = 86_400  # 1 day: the description changes only with a release
PREFLIGHT_MAX_AGE_S: Final = 86_400
_METHODS: Final = "GET, HEAD, OPTIONS"
_CORS: Final = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Link"}
_PREFLIGHT: Final = {
    **_CORS,
    "Allow": _METHODS,
    "Access-Control-Allow-Methods": _METHODS,
    "Access-Control-Allow-Headers": "Accept, Accept-Language",
    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
}

TITLE_PAGE: Final = "产品追溯信息"
TITLE_DOCUMENT: Final = "追溯数据（JSON）"
TITLE_CERTIFICATIONS: Final = "认证信息"
TITLE_CERTIFICATIONS_JSON: Final = "认证信息（JSON）"
TITLE_RECALL_JSON: Final = "召回状态（JSON）"
CERTIFICATE_OF_CONFORMITY: Final = "承诺达标合格证"
RECALL_TITLES: Final = {
    "active": "召回状态：未召回",
    "expired": "召回状态：未召回（已过保质期）",
    "recalled": "召回状态：已召回",
}


class LinksetResponse(ORJSONResponse):
    media_type = LINKSET_MEDIA_TYPE


@dataclass(frozen=True, slots=True)
class Link:
    """One link of a batch: its relation type (a GS1 vocabulary URI), target, title and target media type."""

    rel: str
    href: str
    title: str
    media_type: str | None = None  # None for the default link, which carries a title only

    def as_target(self) -> dict[str, object]:
        """The RFC 9264 target object, with only the attributes both linkset schemas allow."""
        target: dict[str, object] = {"href": self.href, "title": self.title}
        if self.media_type is not None:
            target["type"] = self.media_type
            target["hreflang"] = [LANGUAGE]
        return target

    def as_header(self) -> str:
        """The RFC 8288 link-value; the Chinese title goes in `title*` (RFC 8187), headers being Latin-1."""
        value = f'<{self.href}>; rel="{self.rel}"'
        if self.media_type is not None:
            value += f'; type="{self.media_type}"; hreflang="{LANGUAGE}"'
        return value + f"; title*=UTF-8''{quote(self.title, safe='')}"


def wants_linkset(ranges: Sequence[MediaRange]) -> bool:
    """Whether the client names a JSON linkset (or plain JSON, GS1's recommendation) above HTML."""
    json_q = max(quality(ranges, LINKSET_MEDIA_TYPE, explicit=True), quality(ranges, JSON_MEDIA_TYPE, explicit=True))
    return json_q > quality(ranges, HTML_MEDIA_TYPE)


def _prefers_html(ranges: Sequence[MediaRange]) -> bool:
    html_q = quality(ranges, HTML_MEDIA_TYPE, explicit=True)
    return html_q > 0 and not wants_linkset(ranges)


def _gtin(text: str) -> str:
    try:
        return normalise_gtin(text)
    except InvalidGtin as exc:
        raise Problem(
            400, "invalid_gtin", "商品条码（GTIN）错误", exc.message, headers=_CORS, reason=exc.reason
        ) from None


def _lot(request: Request) -> str:
    """The lot (AI 10) of the request path, percent-decoded: `%2F` belongs to the lot, a bare `/` does not."""
    decoded: str = request.path_params["lot"]
    raw: bytes | None = request.scope.get("raw_path")
    if raw is None:  # raw_path is optional in ASGI: then a lot cannot hold a slash
        lot = decoded.removesuffix("/")
        is_one_segment = "/" not in lot
    else:
        if raw.endswith(b"/"):  # tolerate a trailing slash (resolver standard 2.13)
            raw, decoded = raw[:-1], decoded.removesuffix("/")
        lot = unquote_to_bytes(raw.rsplit(b"/", 1)[-1]).decode("utf-8", "replace") if decoded else ""
        is_one_segment = lot == decoded
    if not is_one_segment:  # e.g. a serial number (AI 21) after the lot: not a path this resolver serves
        raise Problem(404, "unsupported_path", "不支持的链接", "本服务只解析 /01/{GTIN}/10/{批号}", headers=_CORS)
    if not is_cset82(lot, LOT_MAX_LENGTH):
        raise Problem(
            400,
            "invalid_lot",
            "批号格式错误",
            f"批号（AI 10）应为1至{LOT_MAX_LENGTH}个 GS1 可编码字符（字母、数字及 !\"%&'()*+,-./:;<=>?_）",
            headers=_CORS,
        )
    return lot


def _link_type(text: str | None) -> str | None:
    """The requested link type as a full vocabulary URI, `linkset`, or None for the default link."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.lower() in LINKSET_KEYWORDS:
        return LINKSET
    for spelling in _VOCABULARY_SPELLINGS:
        if text.startswith(spelling):
            return GS1_VOCABULARY + text.removeprefix(spelling)
    return text


def _compact(rel: str) -> str:
    return "gs1:" + rel.removeprefix(GS1_VOCABULARY)


async def _lookup(pool: asyncpg.Pool, gtin: str, lot: str, today: dt.date) -> asyncpg.Record:
    try:
        row = await pool.fetchrow(LOOKUP_BATCH, gtin, lot, today)
    except POSTGRES_AWAY_ERRORS as exc:  # here, not the app's handler: a phone's browser gets the page of it
        raise store_unavailable() from exc
    assert row is not None  # the outer SELECT has no FROM filter: always one row
    if row["trace_code"] is None:
        if row["is_known_gtin"]:
            raise Problem(404, "unknown_lot", "未找到该批次", f"商品 {gtin} 没有批号为 {lot} 的批次", headers=_CORS)
        raise Problem(404, "unknown_gtin", "未找到该商品", f"商品条码 {gtin} 未登记", headers=_CORS)
    return row


def _certification_title(row: asyncpg.Record) -> str:
    names = [CERTIFICATION_LABELS.get(kind, kind) for kind in row["certification_kinds"]]
    if row["has_certificate"]:
        names.append(CERTIFICATE_OF_CONFORMITY)
    return f"{TITLE_CERTIFICATIONS}：{'、'.join(names) if names else '暂无'}"


def batch_links(row: asyncpg.Record, *, public_url: str, today: dt.date) -> list[Link]:
    """The links of the batch in `row` (a LOOKUP_BATCH row): the HTML one of each type first."""
    code = row["trace_code"]
    page = f"{public_url}/t/{code}"
    document = f"{public_url}/api/v1/codes/{code}"
    return [
        Link(DEFAULT_LINK, page, TITLE_PAGE),
        Link(PIP, page, TITLE_PAGE, HTML_MEDIA_TYPE),
        Link(TRACEABILITY, document, TITLE_DOCUMENT, JSON_MEDIA_TYPE),
        Link(CERTIFICATION_INFO, page + CERTIFICATES_SECTION, _certification_title(row), HTML_MEDIA_TYPE),
        Link(CERTIFICATION_INFO, document, TITLE_CERTIFICATIONS_JSON, JSON_MEDIA_TYPE),
        Link(RECALL_STATUS, page, RECALL_TITLES[status_of(row, today)], HTML_MEDIA_TYPE),
        Link(RECALL_STATUS, document, TITLE_RECALL_JSON, JSON_MEDIA_TYPE),
    ]


def linkset(anchor: str, item_description: str, links: Sequence[Link]) -> dict[str, object]:
    """The RFC 9264 JSON linkset of one link context, as the GS1 linkset schema wants it."""
    relations: dict[str, list[dict[str, object]]] = {}
    for link in links:
        relations.setdefault(link.rel, []).append(link.as_target())
    return {"linkset": [{"anchor": anchor, "itemDescription": item_description, **relations}]}


def _with_query(href: str, query: str) -> str:
    """`href` with the request's query string passed on (resolver standard 2.12), before any fragment."""
    if not query:
        return href
    base, hash_, fragment = href.partition("#")
    return f"{base}{'&' if '?' in base else '?'}{query}{hash_}{fragment}"


async def digital_link(request: Request) -> Response:
    """GET /01/{gtin}/10/{lot}: 307 to a link of the batch, or its linkset; problem details otherwise."""
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=_PREFLIGHT)
    ranges = media_ranges(request.headers.get("accept"))
    try:
        return await _resolve(request, ranges)
    except Problem as problem:
        if _prefers_html(ranges):  # a phone camera's browser: the same Chinese error page as /t/{code}
            return PageResponse(pages.render_problem(problem), status_code=problem.status, headers=problem.headers)
        raise


async def _resolve(request: Request, ranges: Sequence[MediaRange]) -> Response:
    gtin = _gtin(request.path_params["gtin"])
    lot = _lot(request)
    link_type = _link_type(request.query_params.get("linkType"))
    today = china_today()
    state = worker(request)
    row = await _lookup(state.pool, gtin, lot, today)
    public_url = state.settings.public_url
    anchor = f"{public_url}/{GTIN_AI}/{gtin}/{LOT_AI}/{quote(lot, safe='')}"
    links = batch_links(row, public_url=public_url, today=today)
    link_header = [f'<{anchor}?linkType=linkset>; rel="linkset"; type="{LINKSET_MEDIA_TYPE}"']
    link_header += [link.as_header() for link in links]
    headers = {**_CORS, "Vary": "Accept"}
    if link_type == LINKSET or (link_type is None and wants_linkset(ranges)):
        link_header.append(f'<{JSON_LD_CONTEXT}>; rel="{JSON_LD_CONTEXT_REL}"; type="application/ld+json"')
        body = linkset(anchor, f"{row['product_name']}（批号 {row['lot']}）", links)
        return LinksetResponse(body, headers={**headers, "Link": ", ".join(link_header)})
    headers["Link"] = ", ".join(link_header)
    candidates = [link for link in links if link.rel == (link_type or DEFAULT_LINK)]
    if not candidates:
        available = sorted({_compact(link.rel) for link in links})
        raise Problem(
            404,
            "unknown_link_type",
            "没有该类型的链接",
            f"该批次没有 {link_type} 类型的链接，可用类型：{'、'.join(available)}",
            headers=headers,
            link_types=available,
        )
    # The first of the best: without an Accept header the HTML link, for a JSON client the JSON one.
    target = max(candidates, key=lambda link: quality(ranges, link.media_type or HTML_MEDIA_TYPE))
    return RedirectResponse(_with_query(target.href, request.url.query), status_code=307, headers=headers)


async def resolver_description(request: Request) -> Response:
    """GET /.well-known/gs1resolver: the resolver description file of the GS1-Conformant resolver standard."""
    if request.method == "OPTIONS":
        return Response(status_code=204, headers=_PREFLIGHT)
    public_url = worker(request).settings.public_url
    description = {
        "name": "tracecode 农产品质量安全追溯 GS1 数字链接解析服务",
        "resolverRoot": public_url,
        "supportedPrimaryKeys": [GTIN_AI],
        "supportedLinkType": [{"namespace": GS1_VOCABULARY, "prefix": "gs1:"}],
        "linkTypeDefaultCanBeLinkset": False,
        "jsonLdContextLocation": JSON_LD_CONTEXT,
    }
    headers: Mapping[str, str] = {**_CORS, "Cache-Control": f"public, max-age={DESCRIPTION_MAX_AGE_S}"}
    return ORJSONResponse(description, headers=headers)


ROUTES: list[BaseRoute] = [
    Route("/01/{gtin}/10/{lot:path}", digital_link, methods=["GET", "OPTIONS"]),
    Route("/.well-known/gs1resolver", resolver_description, methods=["GET", "OPTIONS"]),
]
