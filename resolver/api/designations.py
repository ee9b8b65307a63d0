"""Designations (重大创建认定, 四挂钩 issue 14 item 2): national quality-safety counties, demonstration zones and the
like, each with the day of its review, and the keep-or-revoke list at that day.

- `POST /api/v1/designations` (admin, regulator of the region) registers one.
- `GET /api/v1/designations?region=&at=` (admin, regulator: its region) lists them with the region's coverage as it
  stood at `at`, or by default at each one's review day (today when that is still to come: no figure of the future),
  and the verdict: keep when 80 % of the producers and of their products were traced (hooks.Coverage.meets_line),
  else revoke (从2020年4月1日起，没有达到80%追溯比例的一律取消认定).

Coverage is computed once per (region, day) of the list, all in one read-only repeatable-read transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated, Any, Final, Literal

import asyncpg
from pydantic import AfterValidator, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from resolver import queries
from resolver.api.auth import authenticate, forbidden
from resolver.api.hooks import (
    RegionCoverage,
    at_param,
    coverage_json,
    may_see_region,
    region_coverage,
    region_or_404,
)
from resolver.edge.bodies import Body, Name, RegionCode, read_json
from resolver.edge.problems import invalid
from resolver.edge.query import region_param
from resolver.edge.responses import ORJSONResponse
from resolver.edge.spreadsheet import Cell, csv_response, wants_csv
from resolver.scan.documents import china_today
from resolver.state import worker

EARLIEST_DESIGNATION_DATE = dt.date(1990, 1, 1)
LATEST_DESIGNATION_DATE = dt.date(2100, 12, 31)
STATEMENT_TIMEOUT_S = 30.0
VARY_ACCEPT: Final = {"Vary": "Accept"}
KIND_LABELS: Final = {
    "quality_safety_county": "国家农产品质量安全县",
    "demonstration_zone": "示范区（现代农业示范区、绿色发展先行区、产业园）",
    "other": "其他创建认定",
}
VERDICT_LABELS: Final = {"keep": "保留", "revoke": "撤销"}

# --- queries -------------------------------------------------------------------------------------

_COLUMNS = """
    d.id, d.region_code, r.name AS region_name, d.kind, d.name, d.designated_on, d.review_on, d.created_at
"""
INSERT_DESIGNATION = f"""
WITH d AS (
    INSERT INTO designations (region_code, kind, name, designated_on, review_on) VALUES ($1, $2, $3, $4, $5)
    RETURNING *
)
SELECT {_COLUMNS} FROM d JOIN regions r ON r.code = d.region_code
"""
# $1: a region (and those under it), or NULL for all.
LIST_DESIGNATIONS = f"""
SELECT {_COLUMNS}
  FROM designations d JOIN regions r ON r.code = d.region_code
 WHERE $1::char(6) IS NULL OR r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1
 ORDER BY d.review_on, d.id
"""

# --- bodies --------------------------------------------------------------------------------------


def _designation_date(value: dt.date) -> dt.date:
    if not EARLIEST_DESIGNATION_DATE <= value <= LATEST_DESIGNATION_DATE:
        raise ValueError(f"must be between {EARLIEST_DESIGNATION_DATE} and {LATEST_DESIGNATION_DATE}")
    return value


DesignationDate = Annotated[dt.date, AfterValidator(_designation_date)]


class DesignationIn(Body):
    region_code: RegionCode
    kind: Literal["quality_safety_county", "demonstration_zone", "other"]
    name: Name
    designated_on: DesignationDate
    review_on: DesignationDate

    @model_validator(mode="after")
    def _ordered(self) -> DesignationIn:
        if self.review_on < self.designated_on:
            raise ValueError("review_on is before designated_on")
        return self


# --- routes ----------------------------------------------------------------------------------------


def designation_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "region_code": row["region_code"],
        "region_name": row["region_name"],
        "kind": row["kind"],
        "kind_label": KIND_LABELS[row["kind"]],
        "name": row["name"],
        "designated_on": row["designated_on"],
        "review_on": row["review_on"],
        "created_at": row["created_at"],
    }


async def create_designation(request: Request) -> Response:
    """POST /api/v1/designations (admin, or regulator of the region)"""
    principal = await authenticate(request)
    body = await read_json(request, DesignationIn)
    if not may_see_region(principal, body.region_code):
        raise forbidden(f"无权在行政区划 {body.region_code} 登记创建认定")
    pool = worker(request).pool
    region = await pool.fetchrow(queries.REGION, body.region_code)
    if region is None or region["level"] == 1:
        raise invalid("region_code must be a prefecture- or county-level GB/T 2260 code", field="region_code")
    row: asyncpg.Record | None = await pool.fetchrow(
        INSERT_DESIGNATION, body.region_code, body.kind, body.name, body.designated_on, body.review_on
    )
    assert row is not None  # an INSERT ... RETURNING answers its row
    return ORJSONResponse(designation_json(row), status_code=201)


async def review_designations(rows: list[asyncpg.Record], conn: asyncpg.pool.PoolConnectionProxy,
                              *, at: dt.date | None, today: dt.date) -> list[dict[str, Any]]:  # fmt: skip
    """Each designation of `rows` with its region's coverage at `at` (else at its review day, not after `today`),
    and its verdict; a (region, day) shared by several designations is computed once."""
    computed: dict[tuple[str, dt.date], RegionCoverage] = {}
    items = []
    for row in rows:
        day = at or min(row["review_on"], today)
        key = (row["region_code"], day)
        if key not in computed:
            region = await region_or_404(conn, row["region_code"])
            computed[key] = await region_coverage(conn, region, at=day)
        coverage = computed[key]
        meets_line = coverage.total.meets_line
        items.append(
            {
                **designation_json(row),
                "at": day,
                "coverage": coverage_json(coverage),
                "meets_line": meets_line,
                "verdict": "keep" if meets_line else "revoke",
            }
        )
    return items


async def list_designations(request: Request) -> Response:
    """GET /api/v1/designations[?region=&at=] (admin; a regulator its region, by default its whole scope)"""
    principal = await authenticate(request)
    region: str | None = region_param(request) if request.query_params.get("region") else None
    if region is None and principal.role == "regulator":
        region = principal.scope
    if region is None and not principal.is_admin:
        raise forbidden("只有管理员或监管部门可以查看创建认定")
    if region is not None and not may_see_region(principal, region):
        raise forbidden(f"只能查看本辖区的创建认定（{region} 不在令牌的辖区内）")
    at = at_param(request)
    today = china_today()
    async with worker(request).pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(LIST_DESIGNATIONS, region, timeout=STATEMENT_TIMEOUT_S)
        items = await review_designations(rows, conn, at=at, today=today)
    if wants_csv(request):
        name = f"designations-{region or 'all'}-{(at or today):%Y%m%d}.csv"
        return csv_response(DESIGNATION_COLUMNS, designation_rows(items), filename=name)
    return ORJSONResponse({"at": at, "count": len(items), "items": items}, headers=VARY_ACCEPT)


DESIGNATION_COLUMNS: Final = (
    "编号", "行政区划代码", "行政区划", "类型", "名称", "认定日期", "复核日期", "核查日期", "登记主体", "已追溯主体",
    "主体追溯比例", "登记产品", "已追溯产品", "产品追溯比例", "达到80%", "结论",
)  # fmt: skip


def _percent(ratio: float | None) -> Cell:
    return None if ratio is None else round(ratio * 100, 1)


def designation_rows(items: list[dict[str, Any]]) -> Iterator[list[Cell]]:
    for item in items:
        c = item["coverage"]
        yield [
            item["id"], item["region_code"], item["region_name"], item["kind_label"], item["name"],
            item["designated_on"].isoformat(), item["review_on"].isoformat(), item["at"].isoformat(),
            c["registered"], c["traced"], _percent(c["ratio"]), c["products_registered"], c["products_traced"],
            _percent(c["product_ratio"]), "是" if item["meets_line"] else "否", VERDICT_LABELS[item["verdict"]],
        ]  # fmt: skip


ROUTES: list[BaseRoute] = [
    Route("/api/v1/designations", create_designation, methods=["POST"]),
    Route("/api/v1/designations", list_designations, methods=["GET"]),
]
