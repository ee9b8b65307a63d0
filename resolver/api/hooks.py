"""The four hooks (追溯"四挂钩"): coverage of a region against the 80 % line, certified products that are
not traced, and whether a producer may be chosen for a brand or shown at a fair.

A producer counts as traced while `producers.last_issued_at` (kept by batch registration) is within
the last `TRACED_WINDOW_MONTHS`. Coverage counts the enterprises and cooperatives of a region (the
policy's 企业和合作社), in one indexed pass over `producers_region_kind_idx`; a prefecture or province
code takes in every region whose roll-up names it, so a prefecture-level city without counties
(东莞 441900) counts the producers registered on it directly.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from codegen.creditcode import is_valid_credit_code, normalise_credit_code
from resolver import queries
from resolver.api.auth import Principal, authenticate, forbidden
from resolver.categories import CATEGORIES, CERTIFICATION_LABELS, PRODUCER_TAG_LABELS
from resolver.edge.problems import Problem, invalid
from resolver.edge.query import date_param, flag_param, int_param, region_param
from resolver.edge.responses import ORJSONResponse
from resolver.scan.documents import CHINA_TZ, china_today
from resolver.state import worker

# --- queries -------------------------------------------------------------------------------------

# Every region under $1 (itself, its counties, a province's prefectures) with its counted producers (kinds $2) and
# their products, and the producers of each tag of $3 with theirs; traced within [$5, $4). Each region aggregates
# inside its own lateral, several times faster than joining and grouping. Undated, producers are counted by an
# index-only scan of producers_region_kind_idx (region_code, kind) INCLUDE (last_issued_at); dated, only those
# registered before $4, each traced by one probe of producer_issue_days. A product is traced by one probe of
# batches_product_time_idx either way.
_COVERAGE = """
SELECT r.code, r.name, r.level,
       EXISTS (SELECT FROM regions c WHERE c.parent_code = r.code) AS has_counties,
       n.registered, n.traced, pr.registered AS products_registered, pr.traced AS products_traced,
       t.registered AS tag_registered, t.traced AS tag_traced,
       t.products_registered AS tag_products_registered, t.products_traced AS tag_products_traced
  FROM regions r
  CROSS JOIN LATERAL (
      SELECT count(*) AS registered, count(*) FILTER (WHERE {traced}) AS traced
        FROM producers p
       WHERE p.region_code = r.code AND p.kind = ANY ($2::text[]) {registered}
  ) n
  CROSS JOIN LATERAL (
      SELECT coalesce(sum(pp.registered), 0)::bigint AS registered, coalesce(sum(pp.traced), 0)::bigint AS traced
        FROM producers p
       CROSS JOIN LATERAL (
           SELECT count(*) AS registered, count(*) FILTER (WHERE {product_traced}) AS traced
             FROM products pd WHERE pd.producer_id = p.id {product_registered}
       ) pp
       WHERE p.region_code = r.code AND p.kind = ANY ($2::text[]) {registered}
  ) pr
  CROSS JOIN LATERAL (
      SELECT array_agg(x.registered ORDER BY tag.i) AS registered, array_agg(x.traced ORDER BY tag.i) AS traced,
             array_agg(x.products_registered ORDER BY tag.i) AS products_registered,
             array_agg(x.products_traced ORDER BY tag.i) AS products_traced
        FROM unnest($3::text[]) WITH ORDINALITY AS tag (name, i)
       CROSS JOIN LATERAL (
           SELECT count(*) AS registered, count(*) FILTER (WHERE {traced}) AS traced,
                  coalesce(sum(pp.registered), 0)::bigint AS products_registered,
                  coalesce(sum(pp.traced), 0)::bigint AS products_traced
             FROM producers p
            CROSS JOIN LATERAL (
                SELECT count(*) AS registered, count(*) FILTER (WHERE {product_traced}) AS traced
                  FROM products pd WHERE pd.producer_id = p.id {product_registered}
            ) pp
            WHERE p.region_code = r.code AND p.tags <> '{{}}' AND p.tags @> ARRAY[tag.name] {registered}
       ) x
  ) t
 WHERE r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1
 ORDER BY r.code
"""
_PRODUCT_TRACED = (
    "EXISTS (SELECT FROM batches b WHERE b.product_id = pd.id AND b.created_at >= $5 AND b.created_at < $4)"
)

COVERAGE_BY_REGION = _COVERAGE.format(
    traced="p.last_issued_at >= $5", registered="", product_traced=_PRODUCT_TRACED, product_registered=""
)

# As it stood at $4 (the end of a day): producers and products registered before it, issue days within [$5, $4).
COVERAGE_BY_REGION_AT = _COVERAGE.format(
    traced="""EXISTS (SELECT FROM producer_issue_days i WHERE i.producer_id = p.id
                         AND i.issued_on >= ($5 AT TIME ZONE 'Asia/Shanghai')::date
                         AND i.issued_on < ($4 AT TIME ZONE 'Asia/Shanghai')::date)""",
    registered="AND p.created_at < $4",
    product_traced=_PRODUCT_TRACED,
    product_registered="AND pd.created_at < $4",
)

# A certification in force (status valid, and valid_to not before $2 = today) whose product (or, for a
# producer-wide one, whose producer) has had no codes issued within the window: it would be lost on renewal.
_UNLISTED_FROM = """
  FROM regions r
  JOIN producers p ON p.region_code = r.code
  JOIN certifications c ON c.producer_id = p.id
  LEFT JOIN products pd ON pd.id = c.product_id
  CROSS JOIN LATERAL (
      SELECT CASE WHEN c.product_id IS NULL THEN p.last_issued_at
                  ELSE (SELECT max(b.created_at) FROM batches b WHERE b.product_id = c.product_id) END AS at
  ) last
 WHERE (r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)
   AND c.status = 'valid' AND c.valid_to >= $2
   AND (last.at IS NULL OR last.at < now() - make_interval(months => $3))
"""

UNLISTED_CERTIFICATIONS = f"""
SELECT c.id, c.kind, c.number, c.valid_from, c.valid_to,
       p.credit_code, p.name AS producer_name, p.region_code, r.name AS region_name,
       pd.id AS product_id, pd.name AS product_name, pd.category, last.at AS last_issued_at
{_UNLISTED_FROM}
   AND c.id > $4
 ORDER BY c.id
 LIMIT $5
"""

UNLISTED_COUNTS = f"""
SELECT p.region_code, count(*) AS unlisted
{_UNLISTED_FROM}
 GROUP BY p.region_code
"""

ELIGIBILITY_PRODUCER = """
SELECT p.id, p.credit_code, p.name, p.kind, p.region_code, r.name AS region_name, p.last_issued_at,
       coalesce(p.last_issued_at >= now() - make_interval(months => $2), false) AS is_traced
  FROM producers p JOIN regions r ON r.code = p.region_code
 WHERE p.credit_code = $1
"""

ELIGIBILITY_PRODUCTS = """
SELECT pd.name, pd.category, max(b.created_at) AS last_issued_at,
       coalesce(max(b.created_at) >= now() - make_interval(months => $2), false) AS is_traced
  FROM products pd
  LEFT JOIN batches b ON b.product_id = pd.id
 WHERE pd.producer_id = $1
 GROUP BY pd.id
 ORDER BY pd.name, pd.category
"""

ELIGIBILITY_CERTIFICATIONS = """
SELECT c.kind, c.number, c.valid_from, c.valid_to, pd.name AS product_name
  FROM certifications c LEFT JOIN products pd ON pd.id = c.product_id
 WHERE c.producer_id = $1 AND c.status = 'valid' AND c.valid_to >= $2
 ORDER BY c.kind, c.number
"""

# --- the rules -----------------------------------------------------------------------------------

TRACED_WINDOW_MONTHS = 12
COVERAGE_LINE = Fraction(4, 5)  # 80 %: the designation line of the policy
COUNTED_KINDS = ("enterprise", "cooperative")  # 企业和合作社: the producers the line is measured on
TAG_LINE = Fraction(1)  # 100 %: leading enterprises and state farms must all be traced
STATEMENT_TIMEOUT_S = 30.0
EARLIEST_COVERAGE_DATE = dt.date(2000, 1, 1)
UNLISTED_PAGE_DEFAULT = 500
UNLISTED_PAGE_MAX = 5_000

NOT_TRACED_MESSAGES = {  # why a producer is not traced: eligibility and brand members
    "not_registered": "该主体未在追溯平台登记",
    "never_issued": "该主体已登记，但从未登记批次、获取追溯码",
    "lapsed": "该主体最近一次获取追溯码已超过 {months} 个月（{at}）",
}


Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


def _meets(part: int, whole: int, line: Fraction) -> bool:
    """Whether part/whole reaches the line; with none to measure, only a 100 % line is met (none left out)."""
    return Fraction(part, whole) >= line if whole else line == 1


@dataclass(frozen=True, slots=True)
class Coverage:
    """Registered and traced producers and products of one region (or a sum of regions) against a line."""

    registered: int
    traced: int
    products_registered: int = 0
    products_traced: int = 0
    line: Fraction = COVERAGE_LINE

    @property
    def ratio(self) -> float | None:
        return self.traced / self.registered if self.registered else None

    @property
    def product_ratio(self) -> float | None:
        return self.products_traced / self.products_registered if self.products_registered else None

    @property
    def meets_line(self) -> bool:
        """Both ratios at the line (the 80 % line needs producers and products to measure)."""
        return _meets(self.traced, self.registered, self.line) and _meets(
            self.products_traced, self.products_registered, self.line
        )

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(
            self.registered + other.registered,
            self.traced + other.traced,
            self.products_registered + other.products_registered,
            self.products_traced + other.products_traced,
            self.line,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "traced": self.traced,
            "ratio": self.ratio,
            "products_registered": self.products_registered,
            "products_traced": self.products_traced,
            "product_ratio": self.product_ratio,
            "meets_line": self.meets_line,
        }


@dataclass(frozen=True, slots=True)
class CountyCoverage:
    code: str
    name: str
    level: int
    is_direct: bool  # producers registered on a prefecture that also has counties (市本级)
    coverage: Coverage
    tags: dict[str, Coverage]


@dataclass(frozen=True, slots=True)
class RegionCoverage:
    code: str
    name: str
    level: int
    total: Coverage
    counties: list[CountyCoverage]
    tags: dict[str, Coverage]  # tag -> its producers' figures against TAG_LINE
    at: dt.date | None  # None: now


async def region_or_404(conn: Executor, code: str) -> asyncpg.Record:
    """The `regions` row of `code`; Problem 404 `unknown_region` when there is none (or it is not 6 digits)."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        raise Problem(404, "unknown_region", "行政区划不存在", f"{code[:32]!r} 不是 6 位行政区划代码（GB/T 2260）")
    row: asyncpg.Record | None = await conn.fetchrow(queries.REGION, code)
    if row is None:
        raise Problem(404, "unknown_region", "行政区划不存在", f"行政区划代码 {code} 不存在")
    return row


def window(at: dt.date | None) -> tuple[dt.datetime, dt.datetime]:
    """[since, until): the traced window ending now, or at the end of day `at` (China time)."""
    if at is None:
        until = dt.datetime.now(CHINA_TZ)
    else:
        until = dt.datetime.combine(at + dt.timedelta(days=1), dt.time(), CHINA_TZ)
    return _months_before(until, TRACED_WINDOW_MONTHS), until


def _months_before(value: dt.datetime, months: int) -> dt.datetime:
    """`value` so many calendar months earlier, as Postgres subtracts an interval (31 March - 1 month: 28/29 Feb)."""
    month_index = value.year * 12 + value.month - 1 - months
    year, month = divmod(month_index, 12)
    day = min(value.day, calendar.monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def _tag_figures(row: asyncpg.Record) -> dict[str, Coverage]:
    return {
        tag: Coverage(
            row["tag_registered"][i],
            row["tag_traced"][i],
            row["tag_products_registered"][i],
            row["tag_products_traced"][i],
            TAG_LINE,
        )
        for i, tag in enumerate(PRODUCER_TAG_LABELS)
    }


async def region_coverage(conn: Executor, region: asyncpg.Record, *, at: dt.date | None = None) -> RegionCoverage:
    """Coverage of `region` (a REGION row) and of each county-level unit under it, in one query: now, or as it
    stood at the end of day `at`."""
    since, until = window(at)
    query = COVERAGE_BY_REGION if at is None else COVERAGE_BY_REGION_AT
    rows = await conn.fetch(
        query, region["code"], list(COUNTED_KINDS), list(PRODUCER_TAG_LABELS), until, since, timeout=STATEMENT_TIMEOUT_S
    )
    counties = []
    total = Coverage(0, 0)
    tags = {tag: Coverage(0, 0, line=TAG_LINE) for tag in PRODUCER_TAG_LABELS}
    for row in rows:
        coverage = Coverage(row["registered"], row["traced"], row["products_registered"], row["products_traced"])
        row_tags = _tag_figures(row)
        total += coverage
        tags = {tag: tags[tag] + row_tags[tag] for tag in tags}
        # Grouping rows (a province, a prefecture with counties) are listed only when producers sit on them.
        is_unit = row["level"] == 3 or (row["level"] == 2 and not row["has_counties"])
        if is_unit or row["registered"]:
            counties.append(CountyCoverage(row["code"], row["name"], row["level"], not is_unit, coverage, row_tags))
    return RegionCoverage(region["code"], region["name"], region["level"], total, counties, tags, at)


async def unlisted_counts(conn: Executor, region_code: str) -> dict[str, int]:
    """Region code -> how many certifications in force there have no traced product (only regions with any)."""
    rows = await conn.fetch(UNLISTED_COUNTS, region_code, china_today(), TRACED_WINDOW_MONTHS)
    return {row["region_code"]: row["unlisted"] for row in rows}


def may_see_region(principal: Principal, region_code: str) -> bool:
    return principal.is_admin or principal.covers_region(region_code)


# --- routes ----------------------------------------------------------------------------------------


def _tags_json(tags: dict[str, Coverage]) -> dict[str, Any]:
    return {
        tag: {"label": PRODUCER_TAG_LABELS[tag], **figures.as_json(), "line": float(figures.line)}
        for tag, figures in tags.items()
    }


def coverage_json(coverage: RegionCoverage, *, breakdown: bool = False) -> dict[str, Any]:
    """The coverage answer: the counted producers and their products against the 80 % line, each tag's producers
    against its 100 % line, and with `breakdown` each county-level unit's."""
    body: dict[str, Any] = {
        "region_code": coverage.code,
        "region_name": coverage.name,
        "level": coverage.level,
        **coverage.total.as_json(),
        "line": float(COVERAGE_LINE),
        "counted_kinds": list(COUNTED_KINDS),
        "traced_window_months": TRACED_WINDOW_MONTHS,
        "tags": _tags_json(coverage.tags),
        "at": coverage.at,
        "as_of": dt.datetime.now(CHINA_TZ) if coverage.at is None else window(coverage.at)[1],
    }
    if breakdown:
        body["counties"] = [
            {"region_code": c.code, "region_name": c.name, "level": c.level, "direct": c.is_direct,
             **c.coverage.as_json(), "tags": _tags_json(c.tags)}
            for c in coverage.counties
        ]  # fmt: skip
    return body


def at_param(request: Request) -> dt.date | None:
    """`?at=YYYY-MM-DD`, a day not after today (China time); None when absent or empty."""
    if not request.query_params.get("at"):
        return None
    return date_param(request, "at", earliest=EARLIEST_COVERAGE_DATE, latest=china_today())


async def coverage_route(request: Request) -> Response:
    """GET /api/v1/regions/{code}/coverage[?breakdown=1][&at=YYYY-MM-DD] (public: aggregate figures only)"""
    breakdown = flag_param(request, "breakdown")
    at = at_param(request)
    pool = worker(request).pool
    region = await region_or_404(pool, request.path_params["code"])
    coverage = await region_coverage(pool, region, at=at)
    return ORJSONResponse(coverage_json(coverage, breakdown=breakdown))


async def unlisted_route(request: Request) -> Response:
    """GET /api/v1/certifications/unlisted?region=...[&after=id&limit=n] (admin, or regulator of the region)"""
    principal = await authenticate(request)
    code = region_param(request)
    if not may_see_region(principal, code):
        raise forbidden(f"只能查看本辖区的认证产品（{code} 不在令牌的辖区内）")
    after = int_param(request, "after", default=0, low=0, high=2**62)
    limit = int_param(request, "limit", default=UNLISTED_PAGE_DEFAULT, low=1, high=UNLISTED_PAGE_MAX)
    pool = worker(request).pool
    region = await region_or_404(pool, code)
    rows = await pool.fetch(UNLISTED_CERTIFICATIONS, code, china_today(), TRACED_WINDOW_MONTHS, after, limit)
    items = [_unlisted_item(row) for row in rows]
    return ORJSONResponse(
        {
            "region_code": region["code"],
            "region_name": region["name"],
            "traced_window_months": TRACED_WINDOW_MONTHS,
            "as_of": dt.datetime.now(CHINA_TZ),
            "count": len(items),
            "items": items,
            "next_after": items[-1]["id"] if len(items) == limit else None,
        }
    )


def _unlisted_item(row: asyncpg.Record) -> dict[str, Any]:
    category = row["category"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "kind_label": CERTIFICATION_LABELS.get(row["kind"], row["kind"]),
        "number": row["number"],
        "valid_from": row["valid_from"],
        "valid_to": row["valid_to"],
        "producer": {
            "credit_code": row["credit_code"],
            "name": row["producer_name"],
            "region_code": row["region_code"],
            "region_name": row["region_name"],
        },
        "product": None
        if row["product_id"] is None
        else {
            "id": row["product_id"],
            "name": row["product_name"],
            "category": category,
            "category_label": CATEGORIES[category].label if category in CATEGORIES else category,
        },
        "reason": "never_issued" if row["last_issued_at"] is None else "lapsed",
        "last_issued_at": row["last_issued_at"],
    }


def not_traced_reasons(registered: bool, last_issued_at: dt.datetime | None, is_traced: bool) -> list[dict[str, str]]:
    """Why a producer is not traced (not registered, never issued codes, lapsed); [] when it is."""
    if not registered:
        code = "not_registered"
    elif last_issued_at is None:
        code = "never_issued"
    elif not is_traced:
        code = "lapsed"
    else:
        return []
    at = last_issued_at.astimezone(CHINA_TZ).date().isoformat() if last_issued_at else ""
    return [{"code": code, "message": NOT_TRACED_MESSAGES[code].format(months=TRACED_WINDOW_MONTHS, at=at)}]


async def eligibility_route(request: Request) -> Response:
    """GET /api/v1/eligibility/{credit_code} (public): traced or not, and why, for brand and fair organisers."""
    credit_code = normalise_credit_code(request.path_params["credit_code"])
    if not is_valid_credit_code(credit_code):
        raise invalid("not a valid unified social credit code (GB 32100-2015 check character)", field="credit_code")
    pool = worker(request).pool
    async with pool.acquire() as conn:
        producer = await conn.fetchrow(ELIGIBILITY_PRODUCER, credit_code, TRACED_WINDOW_MONTHS)
        products = [] if producer is None else await conn.fetch(
            ELIGIBILITY_PRODUCTS, producer["id"], TRACED_WINDOW_MONTHS
        )  # fmt: skip
        certifications = [] if producer is None else await conn.fetch(
            ELIGIBILITY_CERTIFICATIONS, producer["id"], china_today()
        )  # fmt: skip
    is_traced = producer is not None and producer["is_traced"]
    last_issued_at = producer["last_issued_at"] if producer is not None else None
    body: dict[str, Any] = {
        "credit_code": credit_code,
        "registered": producer is not None,
        "traced": is_traced,
        "reasons": not_traced_reasons(producer is not None, last_issued_at, is_traced),
        "last_issued_at": last_issued_at,
        "traced_window_months": TRACED_WINDOW_MONTHS,
        "as_of": dt.datetime.now(CHINA_TZ),
        # Brands are chosen from traced producers; fairs show traced products (see "products").
        "eligible": {"brand": is_traced, "fair": any(p["is_traced"] for p in products)},
    }
    if producer is not None:
        body["producer"] = {
            "name": producer["name"],
            "kind": producer["kind"],
            "region_code": producer["region_code"],
            "region_name": producer["region_name"],
        }
        body["products"] = [
            {"name": p["name"], "category": p["category"], "last_issued_at": p["last_issued_at"],
             "traced": p["is_traced"]}
            for p in products
        ]  # fmt: skip
        body["certifications"] = [
            {"kind": c["kind"], "number": c["number"], "valid_from": c["valid_from"], "valid_to": c["valid_to"],
             "product_name": c["product_name"]}
            for c in certifications
        ]  # fmt: skip
    return ORJSONResponse(body)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/regions/{code}/coverage", coverage_route, methods=["GET"]),
    Route("/api/v1/certifications/unlisted", unlisted_route, methods=["GET"]),
    Route("/api/v1/eligibility/{credit_code}", eligibility_route, methods=["GET"]),
]
