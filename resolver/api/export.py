"""Export of a region's batches and events for a period: JSON lines in the national platform's field
names, or an EPCIS 2.0 JSON-LD document of ObjectEvents.

A period is whole days in China time, `from` and `to` both included. The batches are those of the
region's producers registered in the period, the events those of the region's batches that happened
in it (a recall in December of an October batch is in December's export), so that consecutive
periods export each record once.

National field names: the platform (国家农产品质量安全追溯管理信息平台) publishes no field list we could
find; NY/T 4712-2025 (追溯数据格式) and NY/T 2531-2013 (追溯信息交换接口规范) describe the data but
not these names. `NATIONAL_SCHEMA` marks the names below as provisional: align them with the
platform's interface document when docking, in `_national_batch` and `_national_event` only.

EPCIS: every event of the chain is an ObjectEvent. Issuance (commissioning) is ADD with the lot in
its ILMD; inspection, market entry (accepting), trade (shipping) and recall (disposition recalled)
are OBSERVE. The batch is identified by its trace code URL (`{public_url}/t/{code}`, what the QR code
holds); locations are URLs of the producer's region page and of the market and its gate; fields
without a CBV equivalent are extensions in the `tc:` namespace (`{public_url}/ns/epcis/`).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, BinaryIO, Literal
from urllib.parse import quote

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from resolver import db
from resolver.api.auth import authenticate, forbidden
from resolver.api.hooks import may_see_region, region_or_404
from resolver.categories import CATEGORIES, SUBJECT_CATEGORY
from resolver.edge.problems import Problem
from resolver.edge.query import choice_param, period_params, region_param
from resolver.scan.documents import CHINA_TZ
from resolver.state import worker

logger = logging.getLogger(__name__)

# --- queries -------------------------------------------------------------------------------------

_IN_REGION = "(r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)"

EXPORT_BATCHES = f"""
SELECT b.id, b.trace_code, b.long_code, b.lot, b.quantity, b.unit, b.produced_on, b.expires_on, b.origin,
       b.inspection, b.certificate, b.status, b.recall_reason, b.recalled_at, b.created_at,
       pd.name AS product_name, pd.category, pd.gtin,
       p.credit_code, p.name AS producer_name, p.kind AS producer_kind, p.region_code, r.name AS region_name,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', c.kind, 'number', c.number, 'valid_from', c.valid_from,
                                                     'valid_to', c.valid_to) ORDER BY c.kind, c.number), '[]'::jsonb)
          FROM certifications c
         WHERE c.producer_id = p.id AND (c.product_id IS NULL OR c.product_id = pd.id)
           AND c.status = 'valid') AS certifications
  FROM regions r
  JOIN producers p ON p.region_code = r.code
  JOIN batches b ON b.producer_id = p.id AND b.created_at >= $2 AND b.created_at < $3
  JOIN products pd ON pd.id = b.product_id
 WHERE {_IN_REGION}
 ORDER BY b.created_at, b.id
"""

EXPORT_EVENTS = f"""
SELECT e.id, e.event_time, e.recorded_at, e.kind, e.biz_step, e.disposition, e.data,
       b.trace_code, b.lot, b.produced_on, b.expires_on, b.quantity, b.unit, p.region_code,
       ge.market_id, ge.gate, m.name AS market_name
  FROM regions r
  JOIN producers p ON p.region_code = r.code
  JOIN batches b ON b.producer_id = p.id
  JOIN events e ON e.batch_id = b.id AND e.event_time >= $2 AND e.event_time < $3
  LEFT JOIN gate_entries ge ON ge.id = e.entry_id
  LEFT JOIN markets m ON m.id = ge.market_id
 WHERE {_IN_REGION}
 ORDER BY e.event_time, e.id
"""

# --- formats -------------------------------------------------------------------------------------

ExportFormat = Literal["national", "epcis"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("national", "epcis")
NATIONAL_SCHEMA = "tracecode-national/provisional-1"
EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
EPCIS_NAMESPACE_PATH = "/ns/epcis/"
EPCIS_TIME_ZONE_OFFSET = "+08:00"
CURSOR_PREFETCH_ROWS = 1_000
STATEMENT_TIMEOUT_S = 300.0  # sorting a province's year of events before the first row may take a while
EARLIEST_EXPORT_DATE = dt.date(2000, 1, 1)
LATEST_EXPORT_DATE = dt.date(2100, 12, 31)
CHUNK_BYTES = 64 * 1024  # stream in chunks of about this size

# Business steps and dispositions of the CBV 2.0 that events may carry as they are; others become URIs.
CBV_BIZ_STEPS = frozenset(
    ("accepting", "arriving", "commissioning", "holding", "inspecting", "packing", "receiving", "shipping",
     "storing", "transporting", "encoding", "other")
)  # fmt: skip
CBV_DISPOSITIONS = frozenset(
    ("active", "in_transit", "recalled", "conformant", "non_conformant", "in_progress", "encoded", "expired")
)
INSPECTION_DISPOSITIONS = {"pass": "conformant", "fail": "non_conformant"}


def _time(value: dt.datetime) -> str:
    return value.astimezone(CHINA_TZ).isoformat(timespec="milliseconds")


def _date(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _number(value: Decimal | int | float | None) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _national_batch(row: asyncpg.Record, public_url: str) -> dict[str, Any]:
    inspection: dict[str, Any] = row["inspection"] or {}
    certificate: dict[str, Any] = row["certificate"] or {}
    category = CATEGORIES.get(row["category"])
    return {
        "recordType": "batch",
        "traceCode": row["trace_code"],
        "longTraceCode": row["long_code"],
        "traceUrl": f"{public_url}/t/{row['trace_code']}",
        "productName": row["product_name"],
        "productCategory": row["category"],
        "productCategoryName": category.label if category else row["category"],
        "productClassCode": category.product_class if category else None,
        "gtin": row["gtin"].strip() if row["gtin"] else None,
        "entityName": row["producer_name"],
        "creditCode": row["credit_code"],
        "entityType": row["producer_kind"],
        "entityTypeCode": SUBJECT_CATEGORY.get(row["producer_kind"]),
        "areaCode": row["region_code"],
        "areaName": row["region_name"],
        "lotNumber": row["lot"],
        "quantity": _number(row["quantity"]),
        "unit": row["unit"],
        "productionDate": _date(row["produced_on"]),
        "expiryDate": _date(row["expires_on"]),
        "origin": row["origin"],
        "inspectionResult": inspection.get("result"),
        "inspectionDate": inspection.get("inspected_on"),
        "inspectionAgency": inspection.get("agency"),
        "inspectionMethod": inspection.get("method"),
        "certificateType": certificate.get("kind"),
        "certificateBasis": certificate.get("basis"),
        "certificateDate": certificate.get("issued_on"),
        "qualityCertifications": [
            {
                "certificationType": c["kind"],
                "certificationNumber": c["number"],
                "validFrom": c["valid_from"],
                "validTo": c["valid_to"],
            }
            for c in row["certifications"]
        ],  # fmt: skip
        "status": row["status"],
        "recallReason": row["recall_reason"],
        "recallTime": _time(row["recalled_at"]) if row["recalled_at"] else None,
        "createTime": _time(row["created_at"]),
    }


def _national_header(region_code: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    return {
        "recordType": "header",
        "schema": NATIONAL_SCHEMA,
        "areaCode": region_code,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "exportTime": _time(dt.datetime.now(CHINA_TZ)),
    }


def _national_event(row: asyncpg.Record) -> dict[str, Any]:
    data: dict[str, Any] = row["data"] or {}
    return {
        "recordType": "event",
        "eventId": row["id"],
        "traceCode": row["trace_code"],
        "eventType": row["kind"],
        "eventTime": _time(row["event_time"]),
        "bizStep": row["biz_step"],
        "disposition": row["disposition"],
        "marketId": row["market_id"],
        "marketName": row["market_name"],
        "gate": row["gate"],
        "quantity": data.get("quantity"),
        "unit": data.get("unit"),
        "voucherCode": data.get("voucher_code"),
        "circulationCode": data.get("circulation_code"),
        "buyerName": data.get("buyer"),
        "inspectionResult": data.get("result"),
        "inspectionAgency": data.get("agency"),
        "recallReason": data.get("reason"),
    }


def _event_id(public_url: str, event_id: int) -> str:
    """A stable URI for an event: the same event exports with the same ID, so a receiver can deduplicate."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{public_url}/events/{event_id}").urn


def epcis_event(row: asyncpg.Record, public_url: str) -> dict[str, Any]:
    """The ObjectEvent of one EXPORT_EVENTS row."""
    data: dict[str, Any] = row["data"] or {}
    namespace = public_url + EPCIS_NAMESPACE_PATH
    biz_step: str = row["biz_step"]
    disposition: str | None = row["disposition"]
    if row["kind"] == "inspection":
        disposition = INSPECTION_DISPOSITIONS.get(data.get("result", ""), disposition)
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": _time(row["event_time"]),
        "eventTimeZoneOffset": EPCIS_TIME_ZONE_OFFSET,
        "recordTime": _time(row["recorded_at"]),
        "eventID": _event_id(public_url, row["id"]),
        "epcList": [f"{public_url}/t/{row['trace_code']}"],
        "action": "ADD" if biz_step == "commissioning" else "OBSERVE",
        "bizStep": biz_step if biz_step in CBV_BIZ_STEPS else f"{namespace}bizstep/{quote(biz_step)}",
    }
    if disposition is not None:
        event["disposition"] = (
            disposition if disposition in CBV_DISPOSITIONS else f"{namespace}disposition/{quote(disposition)}"
        )
    if row["market_id"] is not None:
        market = f"{public_url}/markets/{row['market_id']}"
        event["readPoint"] = {"id": f"{market}/gates/{quote(row['gate'], safe='')}"}
        event["bizLocation"] = {"id": market}
    else:
        event["readPoint"] = {"id": f"{public_url}/regions/{row['region_code']}"}
    if event["action"] == "ADD":
        ilmd: dict[str, Any] = {"cbvmda:lotNumber": row["lot"], "tc:productionDate": _date(row["produced_on"])}
        if row["expires_on"] is not None:
            ilmd["cbvmda:itemExpirationDate"] = _date(row["expires_on"])
        event["ilmd"] = ilmd
        event["tc:quantity"] = _number(row["quantity"])
        event["tc:unit"] = row["unit"]
    event["tc:eventKind"] = row["kind"]
    if row["market_name"] is not None:
        event["tc:market"] = row["market_name"]
    for key, name in (("quantity", "tc:quantity"), ("unit", "tc:unit"), ("buyer", "tc:buyer"),
                      ("result", "tc:inspectionResult"), ("agency", "tc:agency"), ("reason", "tc:reason")):  # fmt: skip
        if data.get(key) not in (None, ""):
            event[name] = data[key]
    for key, name in (("voucher_code", "tc:voucher"), ("circulation_code", "tc:circulationCode")):
        if data.get(key):
            event[name] = f"{public_url}/t/{data[key]}"
    return event


def epcis_header(public_url: str, *, created_at: dt.datetime) -> dict[str, Any]:
    """The EPCISDocument around the events (its eventList is filled in by the caller)."""
    return {
        "@context": [EPCIS_CONTEXT, {"tc": public_url + EPCIS_NAMESPACE_PATH}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(created_at),
        "epcisBody": {"eventList": []},
    }


# --- the export ----------------------------------------------------------------------------------


def period_bounds(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start 00:00, the day after end 00:00) in China time."""
    return (
        dt.datetime.combine(start, dt.time(), CHINA_TZ),
        dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), CHINA_TZ),
    )


def _cursor(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    query: str,
    region_code: str,
    since: dt.datetime,
    until: dt.datetime,
) -> asyncpg.cursor.CursorFactory[asyncpg.Record]:
    return conn.cursor(query, region_code, since, until, prefetch=CURSOR_PREFETCH_ROWS, timeout=STATEMENT_TIMEOUT_S)


async def _pieces(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    region_code: str,
    start: dt.date,
    end: dt.date,
    export_format: ExportFormat,
    public_url: str,
) -> AsyncIterator[bytes]:
    """The export, encoded record by record."""
    since, until = period_bounds(start, end)
    if export_format == "national":
        yield orjson.dumps(_national_header(region_code, start, end)) + b"\n"
        async for row in _cursor(conn, EXPORT_BATCHES, region_code, since, until):
            yield orjson.dumps(_national_batch(row, public_url)) + b"\n"
        async for row in _cursor(conn, EXPORT_EVENTS, region_code, since, until):
            yield orjson.dumps(_national_event(row)) + b"\n"
        return
    document = orjson.dumps(epcis_header(public_url, created_at=dt.datetime.now(CHINA_TZ)))
    opening, closing = document.split(b'"eventList":[]')
    yield opening + b'"eventList":['
    separator = b""
    async for row in _cursor(conn, EXPORT_EVENTS, region_code, since, until):
        yield separator + orjson.dumps(epcis_event(row, public_url))
        separator = b","
    yield b"]" + closing


async def export_chunks(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    *,
    region_code: str,
    start: dt.date,
    end: dt.date,
    export_format: ExportFormat,
    public_url: str,
) -> AsyncIterator[bytes]:
    """The export in chunks of about CHUNK_BYTES, read in one repeatable-read transaction through cursors."""
    buffer = bytearray()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for piece in _pieces(conn, region_code, start, end, export_format, public_url):
            buffer += piece
            if len(buffer) >= CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    yield bytes(buffer)


# --- the API -------------------------------------------------------------------------------------

MEDIA_TYPES: dict[ExportFormat, str] = {"national": "application/x-ndjson", "epcis": "application/ld+json"}
FILE_SUFFIXES: dict[ExportFormat, str] = {"national": "jsonl", "epcis": "jsonld"}


async def export_batches(request: Request) -> Response:
    """GET /api/v1/exports/batches?region=&from=&to=[&format=national|epcis] (admin, or regulator of the region)"""
    principal = await authenticate(request)
    region_code = region_param(request)
    if not may_see_region(principal, region_code):
        raise forbidden(f"只能导出本辖区的数据（{region_code} 不在令牌的辖区内）")
    start, end = period_params(request, earliest=EARLIEST_EXPORT_DATE, latest=LATEST_EXPORT_DATE)
    export_format = choice_param(request, "format", EXPORT_FORMATS, "national")
    state = worker(request)
    pool = state.pool
    await region_or_404(pool, region_code)
    public_url = state.settings.public_url

    async def body() -> AsyncIterator[bytes]:
        # Headers are sent by now: a failure can only cut the stream short, so it is logged.
        try:
            async with pool.acquire() as conn:
                async for chunk in export_chunks(
                    conn, region_code=region_code, start=start, end=end, export_format=export_format,
                    public_url=public_url,
                ):  # fmt: skip
                    yield chunk
        except db.POSTGRES_AWAY_ERRORS as exc:
            logger.error("export of %s %s..%s cut short: %r", region_code, start, end, exc)
            raise

    filename = f"tracecode-{region_code}-{start:%Y%m%d}-{end:%Y%m%d}.{FILE_SUFFIXES[export_format]}"
    return StreamingResponse(
        body(),
        media_type=MEDIA_TYPES[export_format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


ROUTES: list[BaseRoute] = [Route("/api/v1/exports/batches", export_batches, methods=["GET"])]


# --- the command line ----------------------------------------------------------------------------


async def export_command(
    database_url: str,
    public_url: str,
    *,
    region_code: str,
    start: dt.date,
    end: dt.date,
    export_format: ExportFormat,
    out: BinaryIO,
) -> int:
    """`tracecode export batches`: write the export to `out`; 0 when done, 1 for a bad region or period."""
    if end < start:
        print("tracecode: --to is before --from", file=sys.stderr)
        return 1
    if not (EARLIEST_EXPORT_DATE <= start and end <= LATEST_EXPORT_DATE):
        print(
            f"tracecode: the period must lie between {EARLIEST_EXPORT_DATE} and {LATEST_EXPORT_DATE}", file=sys.stderr
        )
        return 1
    conn = await db.connect(database_url)
    try:
        await region_or_404(conn, region_code)
        written = 0
        async for chunk in export_chunks(
            conn, region_code=region_code, start=start, end=end, export_format=export_format, public_url=public_url
        ):
            out.write(chunk)
            written += len(chunk)
    except Problem as problem:
        print(f"tracecode: {problem.detail}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    out.flush()
    print(f"exported {written:,} bytes ({export_format}) of region {region_code}, {start}..{end}", file=sys.stderr)
    return 0
