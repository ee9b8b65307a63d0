"""Brands (品牌推选挂钩, issue 14 item 4): members must be traced when chosen, and show whether they still are.

- `POST /api/v1/brands` (admin, or regulator of the brand's region) registers a brand of a region.
- `POST /api/v1/brands/{id}/members` (the same) adds a producer: 201; 409 `not_traced` (with the reasons of
  GET /api/v1/eligibility) for a producer not traced now, `outside_region` for a regional public brand's producer
  from outside its region. Adding a member twice answers 200 with the member.
- `GET /api/v1/brands/{id}` (public, as the eligibility it shows) lists the members with their current `traced`: a
  member whose codes lapsed shows false. JSON, or CSV for Excel.

"Traced" is hooks.py's: codes issued within the last TRACED_WINDOW_MONTHS (ELIGIBILITY_PRODUCER).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, Final, Literal

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from resolver.api.auth import Principal, authenticate, forbidden
from resolver.api.hooks import ELIGIBILITY_PRODUCER, TRACED_WINDOW_MONTHS, not_traced_reasons, region_or_404
from resolver.edge.bodies import Body, CreditCode, Name, RegionCode, read_json
from resolver.edge.problems import Problem
from resolver.edge.responses import ORJSONResponse
from resolver.edge.spreadsheet import Cell, csv_response, wants_csv
from resolver.scan.documents import CHINA_TZ
from resolver.state import worker

MAX_ID: Final = 2**63 - 1
VARY_ACCEPT: Final = {"Vary": "Accept"}
BRAND_KINDS: Final = ("regional_public", "enterprise")
BRAND_KIND_LABELS: Final = {"regional_public": "区域公用品牌", "enterprise": "企业品牌"}

# --- queries -------------------------------------------------------------------------------------

INSERT_BRAND = """
INSERT INTO brands (name, kind, region_code) VALUES ($1, $2, $3)
RETURNING id, name, kind, region_code, created_at
"""
BRAND = """
SELECT b.id, b.name, b.kind, b.region_code, r.name AS region_name, b.created_at
  FROM brands b JOIN regions r ON r.code = b.region_code
 WHERE b.id = $1
"""
# Whether a producer's county is the brand's region or under it.
IN_REGION = """
SELECT r.code = $2 OR r.prefecture_code = $2 OR r.province_code = $2 FROM regions r WHERE r.code = $1
"""
INSERT_MEMBER = """
INSERT INTO brand_members (brand_id, producer_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING added_at
"""
MEMBER_ADDED = "SELECT added_at FROM brand_members WHERE brand_id = $1 AND producer_id = $2"
MEMBERS = """
SELECT p.credit_code, p.name, p.kind, p.region_code, p.last_issued_at, m.added_at,
       coalesce(p.last_issued_at >= now() - make_interval(months => $2), false) AS is_traced
  FROM brand_members m JOIN producers p ON p.id = m.producer_id
 WHERE m.brand_id = $1
 ORDER BY m.added_at, p.credit_code
"""


class BrandIn(Body):
    name: Name
    kind: Literal["regional_public", "enterprise"]
    region_code: RegionCode


class MemberIn(Body):
    credit_code: CreditCode


def _member_reasons(row: asyncpg.Record | None) -> list[dict[str, str]]:
    """Why an ELIGIBILITY_PRODUCER row (None: no producer) is not traced; [] when it is (hooks' rule)."""
    if row is None:
        return not_traced_reasons(False, None, False)
    return not_traced_reasons(True, row["last_issued_at"], row["is_traced"])


def _may_manage(principal: Principal, region_code: str) -> bool:
    return principal.is_admin or principal.covers_region(region_code)


async def _brand_or_404(pool: asyncpg.Pool, brand_id: int) -> asyncpg.Record:
    row: asyncpg.Record | None = await pool.fetchrow(BRAND, brand_id) if brand_id <= MAX_ID else None
    if row is None:
        raise Problem(404, "unknown_brand", "品牌不存在", f"品牌 {brand_id} 不存在")
    return row


def _brand_json(row: asyncpg.Record, region_name: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "kind_label": BRAND_KIND_LABELS[row["kind"]],
        "region_code": row["region_code"],
        "region_name": region_name,
        "created_at": row["created_at"],
    }


async def create_brand(request: Request) -> Response:
    """POST /api/v1/brands (admin, or regulator of the region)"""
    principal = await authenticate(request)
    body = await read_json(request, BrandIn)
    if not _may_manage(principal, body.region_code):
        raise forbidden(f"只能登记本辖区的品牌（{body.region_code} 不在令牌的辖区内）")
    pool = worker(request).pool
    region = await region_or_404(pool, body.region_code)
    row = await pool.fetchrow(INSERT_BRAND, body.name, body.kind, body.region_code)
    assert row is not None
    return ORJSONResponse(_brand_json(row, region["name"]), status_code=201)


async def add_member(request: Request) -> Response:
    """POST /api/v1/brands/{id}/members (admin, or regulator of the brand's region)"""
    principal = await authenticate(request)
    pool = worker(request).pool
    brand = await _brand_or_404(pool, request.path_params["id"])
    if not _may_manage(principal, brand["region_code"]):
        raise forbidden(f"只能管理本辖区的品牌（品牌 {brand['id']} 不在令牌的辖区内）")
    body = await read_json(request, MemberIn)
    producer = await pool.fetchrow(ELIGIBILITY_PRODUCER, body.credit_code, TRACED_WINDOW_MONTHS)
    reasons = _member_reasons(producer)
    if producer is None or reasons:
        raise Problem(
            409, "not_traced", "该主体未实行追溯管理",
            f"{body.credit_code} 目前未实行追溯管理，不能推选为品牌成员", reasons=reasons,
        )  # fmt: skip
    if brand["kind"] == "regional_public" and not await pool.fetchval(
        IN_REGION, producer["region_code"], brand["region_code"]
    ):
        raise Problem(
            409, "outside_region", "不在品牌所属区域",
            f"区域公用品牌只吸纳 {brand['region_code']} 辖区内的主体（该主体在 {producer['region_code']}）",
        )  # fmt: skip
    added_at = await pool.fetchval(INSERT_MEMBER, brand["id"], producer["id"])
    is_new = added_at is not None
    if not is_new:
        added_at = await pool.fetchval(MEMBER_ADDED, brand["id"], producer["id"])
    member = {
        "credit_code": producer["credit_code"],
        "name": producer["name"],
        "kind": producer["kind"],
        "region_code": producer["region_code"],
        "traced": True,
        "reasons": [],
        "last_issued_at": producer["last_issued_at"],
        "added_at": added_at,
    }
    return ORJSONResponse(member, status_code=201 if is_new else 200)


async def get_brand(request: Request) -> Response:
    """GET /api/v1/brands/{id} (public): the brand and its members, each with its current `traced`."""
    pool = worker(request).pool
    brand = await _brand_or_404(pool, request.path_params["id"])
    rows = await pool.fetch(MEMBERS, brand["id"], TRACED_WINDOW_MONTHS)
    members = [
        {
            "credit_code": row["credit_code"],
            "name": row["name"],
            "kind": row["kind"],
            "region_code": row["region_code"],
            "traced": row["is_traced"],
            "reasons": _member_reasons(row),
            "last_issued_at": row["last_issued_at"],
            "added_at": row["added_at"],
        }
        for row in rows
    ]
    if wants_csv(request):
        return csv_response(MEMBER_COLUMNS, member_rows(members), filename=f"brand-{brand['id']}-members.csv")
    return ORJSONResponse(
        {
            **_brand_json(brand, brand["region_name"]),
            "traced_window_months": TRACED_WINDOW_MONTHS,
            "as_of": dt.datetime.now(CHINA_TZ),
            "members_traced": sum(1 for m in members if m["traced"]),
            "members": members,
        },
        headers=VARY_ACCEPT,
    )


MEMBER_COLUMNS: Final = (
    "统一社会信用代码", "生产经营主体", "主体类型", "行政区划代码", "已实行追溯", "原因", "最近获取追溯码", "加入时间",
)  # fmt: skip


def member_rows(members: list[dict[str, Any]]) -> Iterator[list[Cell]]:
    for m in members:
        last = m["last_issued_at"]
        yield [
            m["credit_code"], m["name"], m["kind"], m["region_code"], "是" if m["traced"] else "否",
            "；".join(r["message"] for r in m["reasons"]) or None,
            last.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S") if last else None,
            m["added_at"].astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S"),
        ]  # fmt: skip


ROUTES: list[BaseRoute] = [
    Route("/api/v1/brands", create_brand, methods=["POST"]),
    Route("/api/v1/brands/{id:int}", get_brand, methods=["GET"]),
    Route("/api/v1/brands/{id:int}/members", add_member, methods=["POST"]),
]
