"""The four hooks (追溯"四挂钩"): coverage of a region against the 80 % line, certified products that are
not traced, and whether a producer may be chosen for a brand or shown at a fair.

A producer counts as traced while `producers.last_issued_at` (kept by batch registration) is within
the last `TRACED_WINDOW_MONTHS`. Coverage counts the enterprises and cooperatives of a region (the
policy's 企业和合作社), in one indexed pass over `producers_region_kind_idx`; a prefecture or province
code takes in every region whose roll-up names it, so a prefecture-level city without counties
(东莞 441900) counts the producers registered on it directly.
"""

from __future__ import annotations

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
from resolver.categories import CATEGORIES, CERTIFICATION_LABELS
from resolver.edge.problems import Problem, invalid
from resolver.edge.query import flag_param, int_param, region_param
from resolver.edge.responses import ORJSONResponse
from resolver.scan.documents import CHINA_TZ, china_today
from resolver.state import worker

# --- queries -------------------------------------------------------------------------------------

# Every region under $1 (itself, its counties, a province's prefectures) with its counted producers, each
# counted by an index-only scan of producers_region_kind_idx (region_code, kind) INCLUDE (last_issued_at).
# Aggregating inside the lateral, per region, is several times faster than joining and grouping.
COVERAGE_BY_REGION = """
SELECT r.code, r.name, r.level,
       EXISTS (SELECT FROM regions c WHERE c.parent_code = r.code) AS has_counties,
       n.registered, n.traced
  FROM regions r
  CROSS JOIN LATERAL (
      SELECT count(*) AS registered,
             count(*) FILTER (WHERE p.last_issued_at >= now() - make_interval(months => $3)) AS traced
        FROM producers p
       WHERE p.region_code = r.code AND p.kind = ANY ($2::text[])
  ) n
 WHERE r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1
 ORDER BY r.code
"""

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
UNLISTED_PAGE_DEFAULT = 500
UNLISTED_PAGE_MAX = 5_000

_REASON_MESSAGES = {
    "not_registered": "该主体未在追溯平台登记",
    "never_issued": "该主体已登记，但从未登记批次、获取追溯码",
    "lapsed": "该主体最近一次获取追溯码已超过 {months} 个月（{at}）",
}


Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class Coverage:
    """Registered and traced producers of one region (or a sum of regions) against the line."""

    registered: int
    traced: int

    @property
    def ratio(self) -> float | None:
        return self.traced / self.registered if self.registered else None

    @property
    def meets_line(self) -> bool:
        return self.registered > 0 and Fraction(self.traced, self.registered) >= COVERAGE_LINE

    def as_json(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "traced": self.traced,
            "ratio": self.ratio,
            "meets_line": self.meets_line,
        }


@dataclass(frozen=True, slots=True)
class CountyCoverage:
    code: str
    name: str
    level: int
    is_direct: bool  # producers registered on a prefecture that also has counties (市本级)
    coverage: Coverage


@dataclass(frozen=True, slots=True)
class RegionCoverage:
    code: str
    name: str
    level: int
    total: Coverage
    counties: list[CountyCoverage]


async def region_or_404(conn: Executor, code: str) -> asyncpg.Record:
    """The `regions` row of `code`; Problem 404 `unknown_region` when there is none (or it is not 6 digits)."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        raise Problem(404, "unknown_region", "行政区划不存在", f"{code[:32]!r} 不是 6 位行政区划代码（GB/T 2260）")
    row: asyncpg.Record | None = await conn.fetchrow(queries.REGION, code)
    if row is None:
        raise Problem(404, "unknown_region", "行政区划不存在", f"行政区划代码 {code} 不存在")
    return row


async def region_coverage(conn: Executor, region: asyncpg.Record) -> RegionCoverage:
    """Coverage of `region` (a REGION row) and of each county-level unit under it, in one query."""
    rows = await conn.fetch(COVERAGE_BY_REGION, region["code"], list(COUNTED_KINDS), TRACED_WINDOW_MONTHS)
    counties = []
    registered = traced = 0
    for row in rows:
        registered += row["registered"]
        traced += row["traced"]
        # Grouping rows (a province, a prefecture with counties) are listed only when producers sit on them.
        is_unit = row["level"] == 3 or (row["level"] == 2 and not row["has_counties"])
        if is_unit or row["registered"]:
            counties.append(
                CountyCoverage(
                    row["code"], row["name"], row["level"], not is_unit, Coverage(row["registered"], row["traced"])
                )
            )
    return RegionCoverage(region["code"], region["name"], region["level"], Coverage(registered, traced), counties)


async def unlisted_counts(conn: Executor, region_code: str) -> dict[str, int]:
    """Region code -> how many certifications in force there have no traced product (only regions with any)."""
    rows = await conn.fetch(UNLISTED_COUNTS, region_code, china_today(), TRACED_WINDOW_MONTHS)
    return {row["region_code"]: row["unlisted"] for row in rows}


def may_see_region(principal: Principal, region_code: str) -> bool:
    return principal.is_admin or principal.covers_region(region_code)


# --- routes ----------------------------------------------------------------------------------------


def _coverage_json(coverage: RegionCoverage, *, breakdown: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "region_code": coverage.code,
        "region_name": coverage.name,
        "level": coverage.level,
        **coverage.total.as_json(),
        "line": float(COVERAGE_LINE),
        "counted_kinds": list(COUNTED_KINDS),
        "traced_window_months": TRACED_WINDOW_MONTHS,
        "as_of": dt.datetime.now(CHINA_TZ),
    }
    if breakdown:
        body["counties"] = [
            {"region_code": c.code, "region_name": c.name, "level": c.level, "direct": c.is_direct,
             **c.coverage.as_json()}
            for c in coverage.counties
        ]  # fmt: skip
    return body


async def coverage_route(request: Request) -> Response:
    """GET /api/v1/regions/{code}/coverage[?breakdown=1] (public: aggregate figures only)"""
    breakdown = flag_param(request, "breakdown")
    pool = worker(request).pool
    region = await region_or_404(pool, request.path_params["code"])
    coverage = await region_coverage(pool, region)
    return ORJSONResponse(_coverage_json(coverage, breakdown=breakdown))


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


def _reasons(registered: bool, last_issued_at: dt.datetime | None, is_traced: bool) -> list[dict[str, str]]:
    if not registered:
        code = "not_registered"
    elif last_issued_at is None:
        code = "never_issued"
    elif not is_traced:
        code = "lapsed"
    else:
        return []
    at = last_issued_at.astimezone(CHINA_TZ).date().isoformat() if last_issued_at else ""
    return [{"code": code, "message": _REASON_MESSAGES[code].format(months=TRACED_WINDOW_MONTHS, at=at)}]


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
        "reasons": _reasons(producer is not None, last_issued_at, is_traced),
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
