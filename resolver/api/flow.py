"""Supervision reads (四挂钩 issue 14, items 6 and 8): where a batch went, a market's gate figures, labels issued.

- `GET /api/v1/batches/{code}/flow` (admin, regulator of the batch's region, the batch's producer): the batch's
  market entries, the trades out of each, and what is left in each market and in all.
- `GET /api/v1/markets/{id}/stats?from=&to=` (admin, regulator of the market's region): gate scans accepted and
  rejected (by reason), per gate, and the accepted inflow by origin county, for whole days in China time.
- `GET /api/v1/regions/{code}/labels?from=&to=` (admin, regulator of the region): package codes issued per producer
  of the region in the period (the basis of label subsidies).

Each answer is read in one read-only repeatable-read transaction, so its figures agree with one another.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Final

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from resolver.api.auth import authenticate, forbidden
from resolver.api.gate import REASON_MESSAGES
from resolver.api.hooks import may_see_region, region_or_404
from resolver.api.recall import batch_of, quantity_json
from resolver.edge.problems import Problem
from resolver.edge.query import period_params
from resolver.edge.responses import ORJSONResponse
from resolver.edge.spreadsheet import Cell, csv_response, wants_csv
from resolver.scan.documents import CHINA_TZ
from resolver.state import worker

EARLIEST_PERIOD_DATE = dt.date(2000, 1, 1)
LATEST_PERIOD_DATE = dt.date(2100, 12, 31)
MAX_ID = 2**63 - 1  # a longer number in the path is no id of ours (and no bigint)
STATEMENT_TIMEOUT_S = 30.0
VARY_ACCEPT: Final = {"Vary": "Accept"}  # each list answers JSON or CSV

# --- queries -------------------------------------------------------------------------------------

FLOW_BATCH = "SELECT b.trace_code, b.quantity, b.unit, b.admitted FROM batches b WHERE b.id = $1"
# Every entry of the batch: scanned from its own codes (trade_id NULL), or from a circulation code of a trade out of
# an earlier entry (trade_id: that trade), so a re-entry into a second market shows as an entry of its own.
FLOW_ENTRIES = """
SELECT e.id, e.market_id, m.name AS market_name, m.region_code AS market_region, e.gate, e.voucher_code,
       e.scanned_code, e.quantity, e.unit, e.traded, e.scanned_at, t.circulation_code AS via_circulation_code
  FROM gate_entries e JOIN markets m ON m.id = e.market_id LEFT JOIN trades t ON t.id = e.trade_id
 WHERE e.batch_id = $1
 ORDER BY e.scanned_at, e.id
"""
FLOW_TRADES = """
SELECT t.entry_id, t.circulation_code, t.quantity, t.unit, t.buyer_name, t.traded_at
  FROM gate_entries e JOIN trades t ON t.entry_id = e.id
 WHERE e.batch_id = $1
 ORDER BY t.traded_at, t.id
"""

MARKET = "SELECT m.id, m.name, m.region_code FROM markets m WHERE m.id = $1"
# Scans decided in [$2, $3), by gate, decision and the reasons of a rejection (few distinct combinations).
MARKET_SCANS = """
SELECT s.gate, s.decision, s.reasons, count(*) AS scans
  FROM gate_scans s
 WHERE s.market_id = $1 AND s.scanned_at >= $2 AND s.scanned_at < $3 AND s.decision <> 'pending'
 GROUP BY s.gate, s.decision, s.reasons
"""
# Accepted entries in [$2, $3) by the county of the batch's producer (origin), per unit: kilograms and heads do not add.
MARKET_INFLOW = """
SELECT p.region_code, r.name AS region_name, e.unit, sum(e.quantity) AS quantity, count(*) AS entries
  FROM gate_entries e
  JOIN batches b ON b.id = e.batch_id
  JOIN producers p ON p.id = b.producer_id
  JOIN regions r ON r.code = p.region_code
 WHERE e.market_id = $1 AND e.scanned_at >= $2 AND e.scanned_at < $3
 GROUP BY p.region_code, r.name, e.unit
 ORDER BY p.region_code, e.unit
"""
# Package codes issued in [$2, $3) to producers of region $1 (a county, or every county of a prefecture or province).
REGION_LABELS = """
SELECT p.credit_code, p.name, p.region_code, sum(c.count)::bigint AS labels, count(*) AS requests,
       count(DISTINCT c.batch_id) AS batches
  FROM code_ranges c
  JOIN batches b ON b.id = c.batch_id
  JOIN producers p ON p.id = b.producer_id
  JOIN regions r ON r.code = p.region_code
 WHERE (r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)
   AND c.created_at >= $2 AND c.created_at < $3
 GROUP BY p.id, p.credit_code, p.name, p.region_code
 ORDER BY labels DESC, p.credit_code
"""


def _period_bounds(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start 00:00, the day after end 00:00) in China time."""
    return (
        dt.datetime.combine(start, dt.time(), CHINA_TZ),
        dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), CHINA_TZ),
    )


def _period(request: Request) -> tuple[dt.date, dt.date]:
    return period_params(request, earliest=EARLIEST_PERIOD_DATE, latest=LATEST_PERIOD_DATE)


# --- where a batch went --------------------------------------------------------------------------


def flow_json(batch: asyncpg.Record, entries: list[asyncpg.Record], trades: list[asyncpg.Record]) -> dict[str, Any]:
    """The flow answer: each entry with its trades and what is left of it; the totals of all entries."""
    trades_of: dict[int, list[dict[str, Any]]] = {}
    for trade in trades:
        trades_of.setdefault(trade["entry_id"], []).append(
            {
                "circulation_code": trade["circulation_code"],
                "quantity": quantity_json(trade["quantity"]),
                "unit": trade["unit"],
                "buyer": trade["buyer_name"],
                "traded_at": trade["traded_at"],
            }
        )
    entered = sum((e["quantity"] for e in entries if e["via_circulation_code"] is None), Decimal())
    listed = []
    for entry in entries:
        listed.append(
            {
                "voucher_code": entry["voucher_code"],
                "market_id": entry["market_id"],
                "market": entry["market_name"],
                "market_region_code": entry["market_region"],
                "gate": entry["gate"],
                "scanned_code": entry["scanned_code"],
                "via_circulation_code": entry["via_circulation_code"],
                "quantity": quantity_json(entry["quantity"]),
                "unit": entry["unit"],
                "scanned_at": entry["scanned_at"],
                "traded": quantity_json(entry["traded"]),
                "left": quantity_json(entry["quantity"] - entry["traded"]),
                "trades": trades_of.get(entry["id"], []),
            }
        )
    return {
        "batch": {
            "trace_code": batch["trace_code"],
            "quantity": quantity_json(batch["quantity"]),
            "unit": batch["unit"],
        },
        "entries": listed,
        "total": {
            # what entered markets from the batch's own codes (a re-entry of a trade is not counted twice)
            "entered": quantity_json(entered),
            "traded": quantity_json(sum((t["quantity"] for t in trades), Decimal())),
            "left": quantity_json(sum((e["quantity"] - e["traded"] for e in entries), Decimal())),
            "not_entered": quantity_json(batch["quantity"] - batch["admitted"]),
        },
    }


async def batch_flow(request: Request) -> Response:
    """GET /api/v1/batches/{code}/flow (admin, regulator of the batch's region, the batch's producer)"""
    principal = await authenticate(request)
    batch = await batch_of(request, request.path_params["code"])
    is_producer = principal.role == "producer" and principal.scope == batch["credit_code"]
    if not (principal.is_admin or principal.covers_region(batch["region_code"]) or is_producer):
        raise forbidden("只能查看本辖区或本企业批次的流向")
    async with worker(request).pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row: asyncpg.Record | None = await conn.fetchrow(FLOW_BATCH, batch["id"], timeout=STATEMENT_TIMEOUT_S)
        entries = await conn.fetch(FLOW_ENTRIES, batch["id"], timeout=STATEMENT_TIMEOUT_S)
        trades = await conn.fetch(FLOW_TRADES, batch["id"], timeout=STATEMENT_TIMEOUT_S)
    if row is None:  # gone between the two reads (batches are never deleted: this is only for the types)
        raise Problem(404, "unknown_code", "未找到该追溯码", "该批次已不存在")
    flow = flow_json(row, entries, trades)
    if wants_csv(request):
        return csv_response(FLOW_COLUMNS, flow_rows(flow), filename=f"flow-{row['trace_code']}.csv")
    return ORJSONResponse(flow, headers=VARY_ACCEPT)


FLOW_COLUMNS: Final = (
    "入场凭证码", "市场编号", "市场", "入口", "扫描的追溯码", "经流通码再入场", "入场数量", "单位", "入场时间",
    "已交易", "剩余", "流通码", "交易数量", "买方", "交易时间",
)  # fmt: skip


def flow_rows(flow: dict[str, Any]) -> Iterator[list[Cell]]:
    """A row per trade out of an entry, and one for an entry with none."""
    for entry in flow["entries"]:
        head: list[Cell] = [
            entry["voucher_code"], entry["market_id"], entry["market"], entry["gate"], entry["scanned_code"],
            entry["via_circulation_code"], entry["quantity"], entry["unit"], _time(entry["scanned_at"]),
            entry["traded"], entry["left"],
        ]  # fmt: skip
        if not entry["trades"]:
            yield [*head, None, None, None, None]
        for trade in entry["trades"]:
            yield [*head, trade["circulation_code"], trade["quantity"], trade["buyer"], _time(trade["traded_at"])]


def _time(value: dt.datetime) -> str:
    """A time as China time, to the second, as a spreadsheet reads it."""
    return value.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


# --- a market's figures ----------------------------------------------------------------------------


def _reasons_json(counts: Counter[str]) -> list[dict[str, Any]]:
    return [
        {"reason": reason, "message": REASON_MESSAGES.get(reason, reason), "scans": scans}
        for reason, scans in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def market_stats_json(rows: list[asyncpg.Record]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The market's scan figures, and each gate's: accepted, rejected, and rejected by reason (a scan rejected for
    two reasons counts under each, so the reasons may add up to more than the rejected scans)."""
    total: dict[str, Any] = {"accepted": 0, "rejected": 0, "reasons": Counter()}
    gates: dict[str, dict[str, Any]] = {}
    for row in rows:
        for figures in (total, gates.setdefault(row["gate"], {"accepted": 0, "rejected": 0, "reasons": Counter()})):
            if row["decision"] == "accept":
                figures["accepted"] += row["scans"]
            else:
                figures["rejected"] += row["scans"]
                for reason in row["reasons"]:
                    figures["reasons"][reason] += row["scans"]

    def as_json(figures: dict[str, Any]) -> dict[str, Any]:
        return {
            "scans": figures["accepted"] + figures["rejected"],
            "accepted": figures["accepted"],
            "rejected": figures["rejected"],
            "rejected_by_reason": _reasons_json(figures["reasons"]),
        }

    return as_json(total), [{"gate": gate, **as_json(gates[gate])} for gate in sorted(gates)]


async def market_stats(request: Request) -> Response:
    """GET /api/v1/markets/{id}/stats?from=&to= (admin, regulator of the market's region)"""
    principal = await authenticate(request)
    market_id: int = request.path_params["id"]
    start, end = _period(request)
    since, until = _period_bounds(start, end)
    pool = worker(request).pool
    market = await pool.fetchrow(MARKET, market_id) if market_id <= MAX_ID else None
    if market is None:
        raise Problem(404, "unknown_market", "市场不存在", f"市场 {market_id} 不存在")
    if not may_see_region(principal, market["region_code"]):
        raise forbidden(f"只能查看本辖区的市场（市场 {market_id} 不在令牌的辖区内）")
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        scans = await conn.fetch(MARKET_SCANS, market_id, since, until, timeout=STATEMENT_TIMEOUT_S)
        inflow = await conn.fetch(MARKET_INFLOW, market_id, since, until, timeout=STATEMENT_TIMEOUT_S)
    total, gates = market_stats_json(scans)
    stats = {
        "market_id": market["id"],
        "market": market["name"],
        "region_code": market["region_code"],
        "from": start,
        "to": end,
        **total,
        "gates": gates,
        "inflow": [
            {
                "region_code": row["region_code"],
                "region_name": row["region_name"],
                "unit": row["unit"],
                "quantity": quantity_json(row["quantity"]),
                "entries": row["entries"],
            }
            for row in inflow
        ],
    }
    if wants_csv(request):
        filename = f"market-{market_id}-{start:%Y%m%d}-{end:%Y%m%d}.csv"
        return csv_response(STATS_COLUMNS, stats_rows(stats), filename=filename)
    return ORJSONResponse(stats, headers=VARY_ACCEPT)


STATS_COLUMNS: Final = ("项目", "入口", "拒收原因", "原因说明", "产地代码", "产地", "单位", "数量", "次数")


def stats_rows(stats: dict[str, Any]) -> Iterator[list[Cell]]:
    """Per gate: accepted and rejected scans, then each reason of a rejection; then the inflow per origin county."""
    for gate in stats["gates"]:
        yield ["接收", gate["gate"], None, None, None, None, None, None, gate["accepted"]]
        yield ["拒收", gate["gate"], None, None, None, None, None, None, gate["rejected"]]
        for reason in gate["rejected_by_reason"]:
            yield [
                "拒收原因",
                gate["gate"],
                reason["reason"],
                reason["message"],
                None,
                None,
                None,
                None,
                reason["scans"],
            ]
    for inflow in stats["inflow"]:
        origin = [inflow["region_code"], inflow["region_name"], inflow["unit"], inflow["quantity"], inflow["entries"]]
        yield ["来源", None, None, None, *origin]


# --- labels issued ---------------------------------------------------------------------------------


async def region_labels(request: Request) -> Response:
    """GET /api/v1/regions/{code}/labels?from=&to= (admin, regulator of the region)"""
    principal = await authenticate(request)
    code: str = request.path_params["code"]
    start, end = _period(request)
    since, until = _period_bounds(start, end)
    pool = worker(request).pool
    region = await region_or_404(pool, code)
    if not may_see_region(principal, region["code"]):
        raise forbidden(f"只能查看本辖区的数据（{region['code']} 不在令牌的辖区内）")
    rows = await pool.fetch(REGION_LABELS, region["code"], since, until, timeout=STATEMENT_TIMEOUT_S)
    producers = [
        {
            "credit_code": row["credit_code"],
            "name": row["name"],
            "region_code": row["region_code"],
            "labels": row["labels"],
            "requests": row["requests"],
            "batches": row["batches"],
        }
        for row in rows
    ]
    if wants_csv(request):
        filename = f"labels-{region['code']}-{start:%Y%m%d}-{end:%Y%m%d}.csv"
        return csv_response(LABELS_COLUMNS, ([*p.values()] for p in producers), filename=filename)
    return ORJSONResponse(
        {
            "region_code": region["code"],
            "region_name": region["name"],
            "from": start,
            "to": end,
            "labels": sum(p["labels"] for p in producers),
            "producers": producers,
        },
        headers=VARY_ACCEPT,
    )


LABELS_COLUMNS: Final = ("统一社会信用代码", "生产经营主体", "行政区划代码", "追溯码数量", "申领次数", "批次数")


ROUTES: list[BaseRoute] = [
    Route("/api/v1/batches/{code}/flow", batch_flow, methods=["GET"]),
    Route("/api/v1/markets/{id:int}/stats", market_stats, methods=["GET"]),
    Route("/api/v1/regions/{code}/labels", region_labels, methods=["GET"]),
]
