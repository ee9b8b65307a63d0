"""Fairs (农业展会挂钩, issue 14 item 5): which exhibitor products a fair admits, and which batch at its door.

The rule is the fair's kind, read from the policy (青农质〔2019〕21号, 四挂钩 (四)):
- `national` (全国农业展会): only traced products are admitted (追溯管理作为参展的前置条件).
- `provincial` (全省农牧展会): the same. The policy ties the review of 全国或全省 fairs alike; only overseas
  fairs are softened to a priority.
- `overseas` (境外展会): every product is admitted, traced ones first (优先支持): the answer lists them first and
  numbers every row with `rank`.

A product is traced when a batch of it was registered within hooks.TRACED_WINDOW_MONTHS. A recalled batch is
never admitted at the door.

- `POST /api/v1/fairs` (admin, or a regulator: fairs are organised at every level) registers a fair.
- `POST /api/v1/fairs/{id}/exhibitors` (admin, regulator): a JSON list of {credit_code, product_name}, or CSV with
  those columns (UTF-8, Excel's BOM accepted, read as resolver.api.imports reads files) -> a row per exhibitor
  product with `admitted`, `traced`, `rank` and `reasons` ({code, message}). JSON, or CSV for Excel.
- `GET /api/v1/fairs/{id}/door/{code}` (public: the door has a phone, not a token): a batch, package, circulation or
  entry code, or the national long form -> {admitted, reasons} with the batch's producer and product.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import asyncpg
from pydantic import Field, RootModel, StringConstraints, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from codegen.creditcode import is_valid_credit_code, normalise_credit_code
from codegen.format import CODE_LENGTH, CodeType, type_of
from resolver.api.auth import authenticate, forbidden
from resolver.api.hooks import TRACED_WINDOW_MONTHS
from resolver.api.imports import csv_records, decode_csv, read_csv_body
from resolver.edge.bodies import Body, Name, is_clean_text, media_type_of, read_json
from resolver.edge.problems import Problem
from resolver.edge.responses import ORJSONResponse
from resolver.edge.spreadsheet import Cell, csv_response, wants_csv
from resolver.scan.resolve import canonical_code
from resolver.state import worker

MAX_ID: Final = 2**63 - 1
VARY_ACCEPT: Final = {"Vary": "Accept"}
FAIR_KINDS: Final = ("national", "overseas", "provincial")
FAIR_KIND_LABELS: Final = {"national": "全国农业展会", "overseas": "境外展会", "provincial": "全省农牧展会"}
RULES: Final = {"national": "traced_only", "provincial": "traced_only", "overseas": "traced_first"}
EARLIEST_FAIR_DATE: Final = dt.date(2000, 1, 1)
LATEST_FAIR_DATE: Final = dt.date(2100, 12, 31)
MAX_EXHIBITOR_ROWS: Final = 10_000
MAX_EXHIBITOR_CSV_BYTES: Final = 2 * 1024 * 1024  # 2 MiB: some 20,000 rows, twice the largest fair
EXHIBITOR_COLUMNS: Final = ("credit_code", "product_name")
MAX_NAME_CHARS: Final = 200

REASON_MESSAGES: Final = {
    "invalid_credit_code": "统一社会信用代码无效（长度、字符或校验码不符合 GB 32100-2015）",
    "product_name_required": "产品名称为空",
    "bad_product_name": "产品名称过长或含有控制字符",
    "not_registered": "该主体未在追溯平台登记",
    "product_not_registered": "该主体未在追溯平台登记此产品",
    "never_issued": "该产品从未登记批次、获取追溯码",
    "lapsed": "该产品最近一次获取追溯码已超过 {months} 个月（{at}）",
    "recalled": "该批次已被召回，不得入场",
}

# --- queries -------------------------------------------------------------------------------------

INSERT_FAIR = """
INSERT INTO fairs (name, kind, starts_on, ends_on) VALUES ($1, $2, $3, $4)
RETURNING id, name, kind, starts_on, ends_on, created_at
"""
FAIR = "SELECT id, name, kind, starts_on, ends_on, created_at FROM fairs WHERE id = $1"
# Each (credit code, product name) of the list with its producer and, of the producer's products of that name (one
# per category), the one with the latest batch: one statement for the whole list, two index probes a row.
EXHIBITOR_CHECK = """
SELECT u.ord, p.id AS producer_id, p.name AS producer_name, pr.product_id, pr.last_issued_at,
       coalesce(pr.last_issued_at >= now() - make_interval(months => $3), false) AS is_traced
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(credit_code, product_name, ord)
  LEFT JOIN producers p ON p.credit_code = u.credit_code::char(18)
  LEFT JOIN LATERAL (
      SELECT pd.id AS product_id, (SELECT max(b.created_at) FROM batches b WHERE b.product_id = pd.id) AS last_issued_at
        FROM products pd
       WHERE pd.producer_id = p.id AND pd.name = u.product_name
       ORDER BY 2 DESC NULLS LAST
       LIMIT 1
  ) pr ON true
 ORDER BY u.ord
"""
CODE_BATCH = "SELECT batch_id FROM trace_codes WHERE code = $1"
BATCH_BY_CODE = "SELECT id FROM batches WHERE trace_code = $1"
BATCH_BY_LONG = "SELECT id FROM batches WHERE long_code = $1"
DOOR_BATCH = """
SELECT b.trace_code, b.status, b.recalled_at, p.credit_code, p.name AS producer_name, pd.name AS product_name,
       pd.category, last.at AS last_issued_at,
       coalesce(last.at >= now() - make_interval(months => $2), false) AS is_traced
  FROM batches b
  JOIN producers p ON p.id = b.producer_id
  JOIN products pd ON pd.id = b.product_id
  CROSS JOIN LATERAL (SELECT max(x.created_at) AS at FROM batches x WHERE x.product_id = b.product_id) last
 WHERE b.id = $1
"""

# --- bodies --------------------------------------------------------------------------------------


class FairIn(Body):
    name: Name
    kind: Literal["national", "overseas", "provincial"]
    starts_on: Annotated[dt.date, Field(ge=EARLIEST_FAIR_DATE, le=LATEST_FAIR_DATE)]
    ends_on: Annotated[dt.date, Field(ge=EARLIEST_FAIR_DATE, le=LATEST_FAIR_DATE)]

    @model_validator(mode="after")
    def _ends_after_start(self) -> FairIn:
        if self.ends_on < self.starts_on:
            raise ValueError("ends_on is before starts_on")
        return self


class ExhibitorIn(Body):
    """One exhibitor product; its cells are checked row by row (a bad row is a row with reasons, not a 422)."""

    credit_code: Annotated[str, StringConstraints(max_length=64)]
    product_name: Annotated[str, StringConstraints(max_length=400)]


class ExhibitorList(RootModel[list[ExhibitorIn]]):
    root: Annotated[list[ExhibitorIn], Field(min_length=1, max_length=MAX_EXHIBITOR_ROWS)]


# --- the rule ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ExhibitorRow:
    line: int  # the CSV line (header: 1), or the list's position from 1
    credit_code: str
    product_name: str
    reasons: list[str]
    producer_name: str | None = None
    is_traced: bool = False
    last_issued_at: dt.datetime | None = None


def _reason(code: str, at: dt.datetime | None = None) -> dict[str, str]:
    day = at.date().isoformat() if at is not None else ""
    return {"code": code, "message": REASON_MESSAGES[code].format(months=TRACED_WINDOW_MONTHS, at=day)}


def is_admitted(kind: str, *, is_traced: bool, is_recalled: bool = False) -> bool:
    """The fair's rule: nothing recalled; national and provincial fairs only what is traced; overseas all."""
    return not is_recalled and (is_traced or RULES[kind] == "traced_first")


def checked_row(line: int, credit_code: str, product_name: str) -> ExhibitorRow:
    """A row with its cells normalised and the reasons its cells alone give."""
    code = normalise_credit_code(credit_code)
    name = product_name.strip()
    reasons = []
    if not is_valid_credit_code(code):
        reasons.append("invalid_credit_code")
    if not name:
        reasons.append("product_name_required")
    elif len(name) > MAX_NAME_CHARS or not is_clean_text(name):
        reasons.append("bad_product_name")
    return ExhibitorRow(line, code, name, reasons)


async def check_exhibitors(conn: asyncpg.Pool | asyncpg.Connection, rows: list[ExhibitorRow]) -> None:
    """Fill in each well-formed row's producer, traced state and reasons, in one statement."""
    good = [row for row in rows if not row.reasons]
    found = await conn.fetch(
        EXHIBITOR_CHECK, [r.credit_code for r in good], [r.product_name for r in good], TRACED_WINDOW_MONTHS
    )
    for row, record in zip(good, found, strict=True):
        row.producer_name = record["producer_name"]
        row.last_issued_at = record["last_issued_at"]
        row.is_traced = record["is_traced"]
        if record["producer_id"] is None:
            row.reasons.append("not_registered")
        elif record["product_id"] is None:
            row.reasons.append("product_not_registered")
        elif record["last_issued_at"] is None:
            row.reasons.append("never_issued")
        elif not record["is_traced"]:
            row.reasons.append("lapsed")


def ranked(kind: str, rows: Sequence[ExhibitorRow]) -> list[dict[str, Any]]:
    """The answer's rows: in the list's order, traced ones first at an overseas fair; `rank` numbers them."""
    order = sorted(rows, key=lambda r: not r.is_traced) if RULES[kind] == "traced_first" else list(rows)
    return [
        {
            "rank": rank,
            "line": row.line,
            "credit_code": row.credit_code,
            "product_name": row.product_name,
            "producer_name": row.producer_name,
            "admitted": is_admitted(kind, is_traced=row.is_traced),
            "traced": row.is_traced,
            "last_issued_at": row.last_issued_at,
            "reasons": [_reason(code, row.last_issued_at) for code in row.reasons],
        }
        for rank, row in enumerate(order, start=1)
    ]


# --- routes --------------------------------------------------------------------------------------


def _fair_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "kind_label": FAIR_KIND_LABELS[row["kind"]],
        "rule": RULES[row["kind"]],
        "starts_on": row["starts_on"],
        "ends_on": row["ends_on"],
        "created_at": row["created_at"],
    }


async def _fair_or_404(pool: asyncpg.Pool, fair_id: int) -> asyncpg.Record:
    row: asyncpg.Record | None = await pool.fetchrow(FAIR, fair_id) if fair_id <= MAX_ID else None
    if row is None:
        raise Problem(404, "unknown_fair", "展会不存在", f"展会 {fair_id} 不存在")
    return row


async def create_fair(request: Request) -> Response:
    """POST /api/v1/fairs (admin, or a regulator)"""
    principal = await authenticate(request)
    if not (principal.is_admin or principal.role == "regulator"):
        raise forbidden("只有管理员和监管部门可以登记展会")
    body = await read_json(request, FairIn)
    row = await worker(request).pool.fetchrow(INSERT_FAIR, body.name, body.kind, body.starts_on, body.ends_on)
    assert row is not None
    return ORJSONResponse(_fair_json(row), status_code=201)


async def _exhibitor_rows(request: Request) -> list[ExhibitorRow]:
    if media_type_of(request.headers.get("content-type"))[0] == "text/csv":
        text = decode_csv(await read_csv_body(request, max_bytes=MAX_EXHIBITOR_CSV_BYTES))
        rows: list[ExhibitorRow] = []
        for line, cells in csv_records(text, EXHIBITOR_COLUMNS, ()):
            if len(rows) == MAX_EXHIBITOR_ROWS:
                raise Problem(422, "too_many_rows", "行数过多", f"一次最多核验 {MAX_EXHIBITOR_ROWS} 行，请分批上传")
            rows.append(checked_row(line, cells.get("credit_code", ""), cells.get("product_name", "")))
        if not rows:
            raise Problem(422, "empty_file", "文件为空", "文件中只有表头，没有参展产品")
        return rows
    listed = await read_json(request, ExhibitorList)
    return [checked_row(i, e.credit_code, e.product_name) for i, e in enumerate(listed.root, start=1)]


async def check_fair_exhibitors(request: Request) -> Response:
    """POST /api/v1/fairs/{id}/exhibitors (admin, regulator): each exhibitor product admitted or not, and why."""
    principal = await authenticate(request)
    if not (principal.is_admin or principal.role == "regulator"):
        raise forbidden("只有管理员和监管部门可以核验参展产品")
    pool = worker(request).pool
    fair = await _fair_or_404(pool, request.path_params["id"])
    rows = await _exhibitor_rows(request)
    await check_exhibitors(pool, rows)
    items = ranked(fair["kind"], rows)
    if wants_csv(request):
        return csv_response(EXHIBITOR_ANSWER_COLUMNS, exhibitor_cells(items), filename=f"fair-{fair['id']}.csv")
    admitted = sum(1 for item in items if item["admitted"])
    return ORJSONResponse(
        {
            "fair": _fair_json(fair),
            "traced_window_months": TRACED_WINDOW_MONTHS,
            "rows": len(items),
            "admitted": admitted,
            "refused": len(items) - admitted,
            "items": items,
        },
        headers=VARY_ACCEPT,
    )


EXHIBITOR_ANSWER_COLUMNS: Final = (
    "排序", "行号", "统一社会信用代码", "产品名称", "生产经营主体", "准予参展", "已实行追溯", "原因",
)  # fmt: skip


def exhibitor_cells(items: list[dict[str, Any]]) -> Iterator[list[Cell]]:
    for item in items:
        yield [
            item["rank"], item["line"], item["credit_code"], item["product_name"], item["producer_name"],
            "是" if item["admitted"] else "否", "是" if item["traced"] else "否",
            "；".join(reason["message"] for reason in item["reasons"]) or None,
        ]  # fmt: skip


async def _batch_id(request: Request, code: str) -> int | None:
    """The batch a canonical code names: a package code by its range, other codes by their row, the long form."""
    state = worker(request)
    if len(code) != CODE_LENGTH:
        batch_id: int | None = await state.pool.fetchval(BATCH_BY_LONG, code)
        return batch_id
    if type_of(code) is CodeType.PACKAGE:
        located = await state.ranges.locate(code)
        return None if located is None else await state.pool.fetchval(BATCH_BY_CODE, located.batch_code)
    found: int | None = await state.pool.fetchval(CODE_BATCH, code)
    return found


async def door_check(request: Request) -> Response:
    """GET /api/v1/fairs/{id}/door/{code} (public): whether the product of a scanned trace code may enter."""
    pool = worker(request).pool
    fair = await _fair_or_404(pool, request.path_params["id"])
    code = canonical_code(request.path_params["code"])
    batch_id = await _batch_id(request, code)
    batch = None if batch_id is None else await pool.fetchrow(DOOR_BATCH, batch_id, TRACED_WINDOW_MONTHS)
    if batch is None:
        raise Problem(404, "unknown_code", "未找到该追溯码", f"追溯码 {code} 未登记，请核对后重试")
    is_recalled = batch["status"] == "recalled"
    reasons = []
    if is_recalled:
        reasons.append(_reason("recalled"))
    if not batch["is_traced"]:
        reasons.append(_reason("lapsed", batch["last_issued_at"]))
    return ORJSONResponse(
        {
            "fair_id": fair["id"],
            "kind": fair["kind"],
            "code": code,
            "admitted": is_admitted(fair["kind"], is_traced=batch["is_traced"], is_recalled=is_recalled),
            "traced": batch["is_traced"],
            "reasons": reasons,
            "batch_code": batch["trace_code"],
            "credit_code": batch["credit_code"],
            "producer_name": batch["producer_name"],
            "product_name": batch["product_name"],
        }
    )


ROUTES: list[BaseRoute] = [
    Route("/api/v1/fairs", create_fair, methods=["POST"]),
    Route("/api/v1/fairs/{id:int}/exhibitors", check_fair_exhibitors, methods=["POST"]),
    Route("/api/v1/fairs/{id:int}/door/{code:path}", door_check, methods=["GET"]),
]
