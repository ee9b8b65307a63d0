"""Bulk import of producers and certifications from CSV (UTF-8, header row, Excel's BOM accepted).

Each row is parsed and its fields checked in Python (formats, check characters, dates), the rows
that pass are copied into a temporary staging table with their line numbers, and everything that
needs the database (duplicates inside the file, unknown regions and producers, the regulator's
region, what is registered already) is checked there, one statement per rule over the whole file.
A row whose key is registered already is skipped, never overwritten: a file can be imported again
after a fix, and changes to a registered producer go through the catalog API.

Modes: `all_or_nothing` (the default) imports nothing when any row is bad; `good_rows` imports the
rows without errors. Either way every bad row is reported as {line, field, reason, message}, `line`
being the file's line where the row starts (the header is line 1).

Columns (a header row naming them, in any order; [optional]):
- producers: credit_code, name, kind, region_code, [contact]. kind: enterprise, cooperative,
  family_farm, individual, or 企业, 农民专业合作社 (合作社), 家庭农场, 个体.
- certifications: kind, number, credit_code, valid_from, valid_to, [product_name, product_category].
  kind: green, organic, gi, or 绿色食品, 有机农产品, 农产品地理标志; no product: the certification covers
  the producer; a product not yet registered is added. Dates YYYY-MM-DD (also YYYY/M/D, as Excel writes).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cache.store import DocumentCache, redis_client
from codegen.creditcode import is_valid_credit_code, normalise_credit_code
from resolver import db
from resolver.api.auth import authenticate, forbidden
from resolver.api.catalog import forget_documents_later, forget_producer_documents
from resolver.categories import CATEGORIES
from resolver.edge.bodies import is_clean_text, media_type_of, read_capped
from resolver.edge.problems import Problem
from resolver.edge.query import choice_param, flag_param
from resolver.edge.responses import ORJSONResponse
from resolver.state import worker

logger = logging.getLogger(__name__)

# --- queries -------------------------------------------------------------------------------------

IMPORT_PRODUCERS = "import_producers"
CREATE_PRODUCER_STAGE = """
CREATE TEMP TABLE import_producers (
    line        integer  PRIMARY KEY,
    credit_code char(18) NOT NULL,
    name        text     NOT NULL,
    kind        text     NOT NULL,
    region_code char(6)  NOT NULL,
    contact     text     NOT NULL,
    error       text,
    error_field text,
    ref_line    integer,
    is_existing boolean  NOT NULL DEFAULT false
) ON COMMIT DROP
"""
PRODUCER_STAGE_COLUMNS = ("line", "credit_code", "name", "kind", "region_code", "contact")

# The checks: one rule per statement over the whole file; a row keeps the first error found. $1, where a
# statement takes it, is a regulator's region (NULL for admin).
PRODUCER_DUPLICATES = """
UPDATE import_producers s SET error = 'duplicate_in_file', error_field = 'credit_code', ref_line = d.first_line
  FROM (SELECT line, min(line) OVER (PARTITION BY credit_code) AS first_line FROM import_producers) d
 WHERE s.line = d.line AND d.first_line < d.line
"""
PRODUCER_UNKNOWN_REGION = """
UPDATE import_producers s SET error = 'unknown_region', error_field = 'region_code'
 WHERE s.error IS NULL AND NOT EXISTS (SELECT FROM regions r WHERE r.code = s.region_code)
"""
PRODUCER_PROVINCE_REGION = """
UPDATE import_producers s SET error = 'region_not_county', error_field = 'region_code'
  FROM regions r
 WHERE r.code = s.region_code AND r.level = 1 AND s.error IS NULL
"""
PRODUCER_OUT_OF_SCOPE = """
UPDATE import_producers s SET error = 'out_of_scope', error_field = 'region_code'
  FROM regions r
 WHERE r.code = s.region_code AND s.error IS NULL AND $1::char(6) IS NOT NULL
   AND NOT (r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)
"""
PRODUCER_EXISTING = """
UPDATE import_producers s SET is_existing = true
  FROM producers p
 WHERE p.credit_code = s.credit_code AND s.error IS NULL
"""
INSERT_IMPORTED_PRODUCERS = """
INSERT INTO producers (credit_code, name, kind, region_code, contact)
SELECT credit_code, name, kind, region_code, contact FROM import_producers
 WHERE error IS NULL AND NOT is_existing
 ORDER BY line
ON CONFLICT (credit_code) DO NOTHING
"""

IMPORT_CERTIFICATIONS = "import_certifications"
CREATE_CERTIFICATION_STAGE = """
CREATE TEMP TABLE import_certifications (
    line             integer  PRIMARY KEY,
    kind             text     NOT NULL,
    number           text     NOT NULL,
    credit_code      char(18) NOT NULL,
    product_name     text,
    product_category text,
    valid_from       date     NOT NULL,
    valid_to         date     NOT NULL,
    producer_id      bigint,
    product_id       bigint,
    error            text,
    error_field      text,
    ref_line         integer,
    is_existing      boolean  NOT NULL DEFAULT false
) ON COMMIT DROP
"""
CERTIFICATION_STAGE_COLUMNS = (
    "line", "kind", "number", "credit_code", "product_name", "product_category", "valid_from", "valid_to",
)  # fmt: skip

CERTIFICATION_DUPLICATES = """
UPDATE import_certifications s SET error = 'duplicate_in_file', error_field = 'number', ref_line = d.first_line
  FROM (SELECT line, min(line) OVER (PARTITION BY kind, number) AS first_line FROM import_certifications) d
 WHERE s.line = d.line AND d.first_line < d.line
"""
CERTIFICATION_PRODUCERS = """
UPDATE import_certifications s SET producer_id = p.id
  FROM producers p
 WHERE p.credit_code = s.credit_code
"""
CERTIFICATION_UNKNOWN_PRODUCER = """
UPDATE import_certifications s SET error = 'unknown_producer', error_field = 'credit_code'
 WHERE s.producer_id IS NULL AND s.error IS NULL
"""
CERTIFICATION_OUT_OF_SCOPE = """
UPDATE import_certifications s SET error = 'out_of_scope', error_field = 'credit_code'
  FROM producers p JOIN regions r ON r.code = p.region_code
 WHERE p.id = s.producer_id AND s.error IS NULL AND $1::char(6) IS NOT NULL
   AND NOT (r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)
"""
CERTIFICATION_EXISTING = """
UPDATE import_certifications s SET is_existing = true
  FROM certifications c
 WHERE c.kind = s.kind AND c.number = s.number AND s.error IS NULL
"""
INSERT_IMPORTED_PRODUCTS = """
INSERT INTO products (producer_id, name, category)
SELECT DISTINCT producer_id, product_name, product_category FROM import_certifications
 WHERE error IS NULL AND NOT is_existing AND product_name IS NOT NULL
ON CONFLICT (producer_id, name, category) DO NOTHING
"""
LINK_IMPORTED_PRODUCTS = """
UPDATE import_certifications s SET product_id = pd.id
  FROM products pd
 WHERE pd.producer_id = s.producer_id AND pd.name = s.product_name AND pd.category = s.product_category
   AND s.error IS NULL AND NOT s.is_existing
"""
IMPORTED_PRODUCER_IDS = """
SELECT DISTINCT producer_id FROM import_certifications WHERE error IS NULL AND NOT is_existing
"""
INSERT_IMPORTED_CERTIFICATIONS = """
INSERT INTO certifications (kind, number, producer_id, product_id, valid_from, valid_to)
SELECT kind, number, producer_id, product_id, valid_from, valid_to FROM import_certifications
 WHERE error IS NULL AND NOT is_existing
 ORDER BY line
ON CONFLICT (kind, number) DO NOTHING
"""

# {table} is one of the two staging tables above, never input.
_STAGE_ANALYZE = "ANALYZE {table}"  # temporary tables get no statistics on their own
_STAGE_ERRORS = "SELECT line, error, error_field, ref_line FROM {table} WHERE error IS NOT NULL ORDER BY line LIMIT $1"
_STAGE_COUNTS = """
SELECT count(*) FILTER (WHERE error IS NOT NULL) AS errors, count(*) FILTER (WHERE is_existing) AS existing,
       count(*) FILTER (WHERE error IS NULL AND NOT is_existing) AS good
  FROM {table}
"""
_STAGE_EXISTING = "SELECT line FROM {table} WHERE is_existing ORDER BY line LIMIT $1"

# (statement, whether it takes the regulator's region), in the order they run.
PRODUCER_CHECKS = (
    (PRODUCER_DUPLICATES, False),
    (PRODUCER_UNKNOWN_REGION, False),
    (PRODUCER_PROVINCE_REGION, False),
    (PRODUCER_OUT_OF_SCOPE, True),
    (PRODUCER_EXISTING, False),
)
CERTIFICATION_CHECKS = (
    (CERTIFICATION_DUPLICATES, False),
    (CERTIFICATION_PRODUCERS, False),
    (CERTIFICATION_UNKNOWN_PRODUCER, False),
    (CERTIFICATION_OUT_OF_SCOPE, True),
    (CERTIFICATION_EXISTING, False),
)

# --- limits and vocabularies ---------------------------------------------------------------------

MAX_IMPORT_BYTES = 50 * 1024 * 1024  # 50 MiB: about 400,000 producer rows
# The pool's 10 s command timeout is for requests; one statement of a 50 MiB file may take longer.
STATEMENT_TIMEOUT_S = 300.0
MAX_REPORTED_ROWS = 1_000  # errors (and skipped lines) listed in one answer; the counts are always complete
MAX_NAME_CHARS = 200
MAX_NUMBER_CHARS = 64
EARLIEST_CERTIFICATION_DATE = dt.date(1990, 1, 1)
LATEST_CERTIFICATION_DATE = dt.date(2100, 12, 31)
UTF8_BOM = b"\xef\xbb\xbf"

ImportKind = Literal["producers", "certifications"]
ImportMode = Literal["all_or_nothing", "good_rows"]
IMPORT_MODES: tuple[ImportMode, ...] = ("all_or_nothing", "good_rows")

PRODUCER_COLUMNS = ("credit_code", "name", "kind", "region_code")
PRODUCER_OPTIONAL_COLUMNS = ("contact",)
CERTIFICATION_COLUMNS = ("kind", "number", "credit_code", "valid_from", "valid_to")
CERTIFICATION_OPTIONAL_COLUMNS = ("product_name", "product_category")

PRODUCER_KINDS = {
    **{k: k for k in ("enterprise", "cooperative", "family_farm", "individual")},
    "企业": "enterprise",
    "农民专业合作社": "cooperative",
    "合作社": "cooperative",
    "家庭农场": "family_farm",
    "个体": "individual",
    "个体户": "individual",
}
CERTIFICATION_KINDS = {
    **{k: k for k in ("green", "organic", "gi")},
    "绿色食品": "green",
    "有机农产品": "organic",
    "有机": "organic",
    "农产品地理标志": "gi",
    "地理标志": "gi",
}
CATEGORY_NAMES = {**{c.name: c.name for c in CATEGORIES.values()}, **{c.label: c.name for c in CATEGORIES.values()}}

REASON_MESSAGES = {
    "column_count": "列数与表头不一致",
    "required": "必填项为空",
    "too_long": "内容过长",
    "bad_characters": "含有控制字符或无法识别的字符",
    "invalid_credit_code": "统一社会信用代码无效（长度、字符或校验码不符合 GB 32100-2015）",
    "invalid_kind": "类型无效",
    "invalid_region_code": "行政区划代码应为 6 位数字",
    "unknown_region": "行政区划代码不存在",
    "region_not_county": "应填写县级（或不设区的地级市）行政区划代码，而不是省级代码",
    "out_of_scope": "不在本令牌辖区内",
    "duplicate_in_file": "与文件中前面的行重复",
    "invalid_date": "日期无效，应为 YYYY-MM-DD",
    "dates_reversed": "有效期止早于有效期起",
    "invalid_category": "产品品类不在品类表中",
    "product_incomplete": "产品名称与产品品类须同时填写或同时留空",
    "unknown_producer": "该统一社会信用代码尚未登记",
}

_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})|(\d{4})(\d{2})(\d{2})")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str | None
    reason: str
    ref_line: int | None = None

    def as_json(self) -> dict[str, Any]:
        message = REASON_MESSAGES[self.reason]
        if self.ref_line is not None:
            message += f"（第 {self.ref_line} 行）"
        body: dict[str, Any] = {"line": self.line, "field": self.field, "reason": self.reason, "message": message}
        if self.ref_line is not None:
            body["ref_line"] = self.ref_line
        return body


@dataclass(slots=True)
class ImportReport:
    """What an import did (or, when rejected or a dry run, would have done)."""

    kind: ImportKind
    mode: ImportMode
    is_dry_run: bool
    rows: int = 0
    imported: int = 0
    skipped: int = 0  # registered already: left as it is
    products_created: int = 0
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    producer_ids: list[int] = field(default_factory=list)  # whose certifications changed

    @property
    def is_rejected(self) -> bool:
        return self.mode == "all_or_nothing" and self.error_count > 0

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind,
            "mode": self.mode,
            "dry_run": self.is_dry_run,
            "rows": self.rows,
            "imported": 0 if self.is_rejected else self.imported,
            "skipped": self.skipped,
            "error_count": self.error_count,
            "errors": [e.as_json() for e in self.errors],
            "errors_truncated": self.error_count > len(self.errors),
            "skipped_lines": self.skipped_lines,
            "elapsed_ms": round(self.elapsed_s * 1000, 1),
        }
        if self.kind == "certifications":
            body["products_created"] = 0 if self.is_rejected else self.products_created
        return body


@dataclass(frozen=True, slots=True)
class _Parsed:
    rows: int
    records: list[tuple[Any, ...]]
    errors: list[RowError]


# --- parsing (pure, run in a thread: a big file must not hold up the event loop) -----------------


def decode_csv(data: bytes) -> str:
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise Problem(
            400,
            "bad_encoding",
            "文件编码错误",
            f"第 {line} 行不是有效的 UTF-8 文本；请以 UTF-8 编码保存（Excel：另存为“CSV UTF-8（逗号分隔）”）",
            line=line,
        ) from None


def csv_records(
    text: str, required: tuple[str, ...], optional: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: cell}) of each non-blank row after the header; a row of the wrong width has {}."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    last_line = 0
    try:
        for cells in reader:
            line, last_line = last_line + 1, reader.line_num
            if not "".join(cells).strip():
                continue
            if header is None:
                header = _check_header(cells, required, optional)
                continue
            yield line, (dict(zip(header, cells, strict=True)) if len(cells) == len(header) else {})
    except csv.Error as exc:
        line = last_line + 1
        raise Problem(400, "bad_csv", "CSV 格式错误", f"第 {line} 行无法解析：{exc}", line=line) from None
    if header is None:
        raise Problem(422, "empty_file", "文件为空", "文件中没有表头行，也没有数据行")


def _check_header(cells: list[str], required: tuple[str, ...], optional: tuple[str, ...]) -> list[str]:
    header = [cell.strip().lower() for cell in cells]
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in required and c not in optional]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or repeated:
        parts = []
        if missing:
            parts.append(f"缺少列 {', '.join(missing)}")
        if unknown:
            parts.append(f"无法识别的列 {', '.join(c[:40] for c in unknown[:10])}")
        if repeated:
            parts.append(f"重复的列 {', '.join(repeated)}")
        raise Problem(
            422,
            "bad_header",
            "表头无效",
            "；".join(parts) + f"。第一行应为表头：{','.join(required + optional)}",
            missing=missing,
            unknown=unknown[:10],
            expected=[*required, *optional],
        )
    return header


class _Row:
    """The cells of one row and the errors found in them."""

    __slots__ = ("cells", "errors", "line")

    def __init__(self, line: int, cells: dict[str, str]) -> None:
        self.line = line
        self.cells = cells
        self.errors: list[RowError] = []

    def fail(self, name: str, reason: str) -> None:
        self.errors.append(RowError(self.line, name, reason))

    def text(self, name: str, *, max_chars: int, is_required: bool = True, is_multiline: bool = False) -> str:
        value = self.cells.get(name, "").strip()
        if not value:
            if is_required:
                self.fail(name, "required")
        elif len(value) > max_chars:
            self.fail(name, "too_long")
        elif not is_clean_text(value, is_multiline=is_multiline):
            self.fail(name, "bad_characters")
        return value

    def credit_code(self, name: str = "credit_code") -> str:
        value = normalise_credit_code(self.cells.get(name, ""))
        if not value:
            self.fail(name, "required")
        elif not is_valid_credit_code(value):
            self.fail(name, "invalid_credit_code")
        return value

    def choice(self, name: str, choices: dict[str, str], reason: str) -> str:
        value = self.cells.get(name, "").strip()
        if not value:
            self.fail(name, "required")
            return ""
        chosen = choices.get(value) or choices.get(value.lower())
        if chosen is None:
            self.fail(name, reason)
            return ""
        return chosen

    def date(self, name: str) -> dt.date | None:
        value = self.cells.get(name, "").strip()
        if not value:
            self.fail(name, "required")
            return None
        match = _DATE.fullmatch(value)
        try:
            if match is None:
                raise ValueError(value)
            parts = [int(g) for g in match.groups() if g is not None]
            day = dt.date(parts[0], parts[1], parts[2])
        except ValueError:
            self.fail(name, "invalid_date")
            return None
        if not EARLIEST_CERTIFICATION_DATE <= day <= LATEST_CERTIFICATION_DATE:
            self.fail(name, "invalid_date")
            return None
        return day


def _producer_record(row: _Row) -> tuple[Any, ...]:
    credit_code = row.credit_code()
    name = row.text("name", max_chars=MAX_NAME_CHARS)
    kind = row.choice("kind", PRODUCER_KINDS, "invalid_kind")
    region_code = row.cells.get("region_code", "").strip()
    if not region_code:
        row.fail("region_code", "required")
    elif len(region_code) != 6 or not region_code.isascii() or not region_code.isdigit():
        row.fail("region_code", "invalid_region_code")
    contact = row.text("contact", max_chars=MAX_NAME_CHARS, is_required=False, is_multiline=True)  # as the API's
    return (row.line, credit_code, name, kind, region_code, contact)


def _certification_record(row: _Row) -> tuple[Any, ...]:
    kind = row.choice("kind", CERTIFICATION_KINDS, "invalid_kind")
    number = row.text("number", max_chars=MAX_NUMBER_CHARS)
    credit_code = row.credit_code()
    product_name = row.text("product_name", max_chars=MAX_NAME_CHARS, is_required=False)
    category_text = row.cells.get("product_category", "").strip()
    category = CATEGORY_NAMES.get(category_text) or CATEGORY_NAMES.get(category_text.lower())
    if bool(product_name) != bool(category_text):
        row.fail("product_name" if not product_name else "product_category", "product_incomplete")
    elif category_text and category is None:
        row.fail("product_category", "invalid_category")
    valid_from = row.date("valid_from")
    valid_to = row.date("valid_to")
    if valid_from is not None and valid_to is not None and valid_to < valid_from:
        row.fail("valid_to", "dates_reversed")
    return (row.line, kind, number, credit_code, product_name or None, category, valid_from, valid_to)


def _parse(
    data: bytes,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    build: Callable[[_Row], tuple[Any, ...]],
) -> _Parsed:
    records: list[tuple[Any, ...]] = []
    errors: list[RowError] = []
    rows = 0
    for line, cells in csv_records(decode_csv(data), required, optional):
        rows += 1
        if not cells:
            errors.append(RowError(line, None, "column_count"))
            continue
        row = _Row(line, cells)
        record = build(row)
        if row.errors:
            errors.extend(row.errors)
        else:
            records.append(record)
    return _Parsed(rows, records, errors)


def parse_producers(data: bytes) -> _Parsed:
    return _parse(data, PRODUCER_COLUMNS, PRODUCER_OPTIONAL_COLUMNS, _producer_record)


def parse_certifications(data: bytes) -> _Parsed:
    return _parse(data, CERTIFICATION_COLUMNS, CERTIFICATION_OPTIONAL_COLUMNS, _certification_record)


@dataclass(frozen=True, slots=True)
class _Stage:
    """How one kind of file is parsed, staged and checked."""

    parse: Callable[[bytes], _Parsed]
    table: str
    create: str
    columns: tuple[str, ...]
    checks: tuple[tuple[str, bool], ...]


_STAGES: dict[ImportKind, _Stage] = {
    "producers": _Stage(
        parse_producers, IMPORT_PRODUCERS, CREATE_PRODUCER_STAGE, PRODUCER_STAGE_COLUMNS, PRODUCER_CHECKS
    ),
    "certifications": _Stage(
        parse_certifications,
        IMPORT_CERTIFICATIONS,
        CREATE_CERTIFICATION_STAGE,
        CERTIFICATION_STAGE_COLUMNS,
        CERTIFICATION_CHECKS,
    ),
}


# --- the import ----------------------------------------------------------------------------------


async def run_import(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    kind: ImportKind,
    data: bytes,
    *,
    mode: ImportMode = "all_or_nothing",
    scope_region: str | None = None,
    is_dry_run: bool = False,
) -> ImportReport:
    """Import the CSV `data` of `kind`; `scope_region` limits the rows to a regulator's region (None: admin).

    Raises Problem for a file that cannot be read as CSV at all (encoding, quoting, header); bad rows
    are in the report. Nothing is written when the report is rejected or `is_dry_run`.
    """
    started = time.perf_counter()
    parsed = await asyncio.to_thread(_STAGES[kind].parse, data)
    report = ImportReport(kind, mode, is_dry_run, rows=parsed.rows)
    try:
        async with conn.transaction():
            await _stage_and_check(conn, kind, parsed, report, scope_region)
            if report.is_rejected:
                raise _Rollback
            await _insert(conn, kind, report)
            if is_dry_run:
                raise _Rollback
    except _Rollback:
        pass
    report.elapsed_s = time.perf_counter() - started
    return report


class _Rollback(Exception):
    """Leaves the import's transaction without writing anything (a rejected file, a dry run)."""


async def _stage_and_check(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    kind: ImportKind,
    parsed: _Parsed,
    report: ImportReport,
    scope_region: str | None,
) -> None:
    stage = _STAGES[kind]
    await conn.execute(stage.create, timeout=STATEMENT_TIMEOUT_S)
    await conn.copy_records_to_table(
        stage.table, records=parsed.records, columns=stage.columns, timeout=STATEMENT_TIMEOUT_S
    )
    await conn.execute(_STAGE_ANALYZE.format(table=stage.table), timeout=STATEMENT_TIMEOUT_S)
    for check, is_scoped in stage.checks:
        await conn.execute(check, *([scope_region] if is_scoped else []), timeout=STATEMENT_TIMEOUT_S)
    counts = await conn.fetchrow(_STAGE_COUNTS.format(table=stage.table), timeout=STATEMENT_TIMEOUT_S)
    assert counts is not None  # an aggregate without GROUP BY always has its one row
    stage_errors = await conn.fetch(
        _STAGE_ERRORS.format(table=stage.table), MAX_REPORTED_ROWS, timeout=STATEMENT_TIMEOUT_S
    )
    errors = parsed.errors + [RowError(r["line"], r["error_field"], r["error"], r["ref_line"]) for r in stage_errors]
    errors.sort(key=lambda e: e.line)
    report.error_count = len(parsed.errors) + counts["errors"]
    report.errors = errors[:MAX_REPORTED_ROWS]
    report.skipped = counts["existing"]
    existing = await conn.fetch(
        _STAGE_EXISTING.format(table=stage.table), MAX_REPORTED_ROWS, timeout=STATEMENT_TIMEOUT_S
    )
    report.skipped_lines = [r["line"] for r in existing]
    report.imported = counts["good"]  # what would be imported; corrected by _insert


async def _insert(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, kind: ImportKind, report: ImportReport
) -> None:
    good = report.imported
    if kind == "producers":
        report.imported = _row_count(await conn.execute(INSERT_IMPORTED_PRODUCERS, timeout=STATEMENT_TIMEOUT_S))
    else:
        report.products_created = _row_count(await conn.execute(INSERT_IMPORTED_PRODUCTS, timeout=STATEMENT_TIMEOUT_S))
        await conn.execute(LINK_IMPORTED_PRODUCTS, timeout=STATEMENT_TIMEOUT_S)
        report.producer_ids = [
            r["producer_id"] for r in await conn.fetch(IMPORTED_PRODUCER_IDS, timeout=STATEMENT_TIMEOUT_S)
        ]
        report.imported = _row_count(await conn.execute(INSERT_IMPORTED_CERTIFICATIONS, timeout=STATEMENT_TIMEOUT_S))
    # Registered by someone else between the check and the insert: skipped like the others.
    report.skipped += good - report.imported


def _row_count(status: str) -> int:
    """The row count of a command status such as "INSERT 0 42"."""
    return int(status.rsplit(" ", 1)[-1])


# --- the API -------------------------------------------------------------------------------------


async def read_csv_body(request: Request, *, max_bytes: int = MAX_IMPORT_BYTES) -> bytes:
    """The request body of a `text/csv` request, read with a size cap; Problem 415 or 413 otherwise."""
    media_type, parameters = media_type_of(request.headers.get("content-type"))
    if media_type != "text/csv":
        raise Problem(415, "unsupported_media_type", "不支持的内容类型", "请求体须为 text/csv（UTF-8）")
    charset = parameters.strip().lower().removeprefix("charset=").strip('"') if "charset" in parameters else "utf-8"
    if charset not in ("utf-8", "utf8"):
        raise Problem(415, "unsupported_media_type", "不支持的内容类型", "CSV 须为 UTF-8 编码（charset=utf-8）")
    declared = request.headers.get("content-length")
    return await read_capped(request.receive, declared, max_bytes=max_bytes, too_large=lambda: _too_large(max_bytes))


def _too_large(max_bytes: int) -> Problem:
    return Problem(
        413, "payload_too_large", "文件过大", f"导入文件不得超过 {max_bytes // (1024 * 1024)} MiB，请分批导入"
    )


async def _import_route(request: Request, kind: ImportKind) -> Response:
    principal = await authenticate(request)
    if not (principal.is_admin or principal.role == "regulator"):
        raise forbidden("只有管理员和监管部门可以批量导入")
    scope_region = None if principal.is_admin else principal.scope
    mode = choice_param(request, "mode", IMPORT_MODES, "all_or_nothing")
    is_dry_run = flag_param(request, "dry_run")
    data = await read_csv_body(request)
    async with worker(request).pool.acquire() as conn:
        report = await run_import(conn, kind, data, mode=mode, scope_region=scope_region, is_dry_run=is_dry_run)
    logger.info(
        "import of %s: %d rows, %d imported, %d skipped, %d errors in %.2f s",
        kind, report.rows, report.imported, report.skipped, report.error_count, report.elapsed_s,
    )  # fmt: skip
    if report.is_rejected:
        raise Problem(
            422,
            "import_rejected",
            "导入未执行",
            f"文件中有 {report.error_count} 处错误，未导入任何数据；"
            "请修正后重新上传，或使用 mode=good_rows 只导入无误的行",
            **report.as_json(),
        )
    if report.producer_ids and not report.is_dry_run:
        forget_documents_later(request, report.producer_ids)
    return ORJSONResponse(report.as_json())


async def import_producers_route(request: Request) -> Response:
    """POST /api/v1/imports/producers (admin, or regulator: rows of its region), body text/csv."""
    return await _import_route(request, "producers")


async def import_certifications_route(request: Request) -> Response:
    """POST /api/v1/imports/certifications (admin, or regulator: producers of its region), body text/csv."""
    return await _import_route(request, "certifications")


ROUTES: list[BaseRoute] = [
    Route("/api/v1/imports/producers", import_producers_route, methods=["POST"]),
    Route("/api/v1/imports/certifications", import_certifications_route, methods=["POST"]),
]


# --- the command line ----------------------------------------------------------------------------


def print_report(report: ImportReport, name: str, *, out: TextIO) -> None:
    """The report as a user at a terminal reads it: a summary line, then each bad row."""
    rate = report.rows / report.elapsed_s if report.elapsed_s else 0.0
    timing = f"in {report.elapsed_s:.2f} s ({rate:,.0f} rows/s)"
    if report.is_rejected:
        print(f"{name}: rejected, nothing imported: {report.error_count} error(s) in {report.rows} rows {timing}; "
              f"fix them, or import the {report.imported} good rows with --good-rows", file=out)  # fmt: skip
    else:
        what = "would import" if report.is_dry_run else "imported"
        print(f"{name}: {report.rows} rows, {what} {report.imported}, skipped {report.skipped} (registered already), "
              f"{report.error_count} error(s) {timing}", file=out)  # fmt: skip
    for error in report.errors:
        body = error.as_json()
        print(f"  line {body['line']}, {body['field'] or '(row)'}: {body['reason']} - {body['message']}", file=out)
    if report.error_count > len(report.errors):
        print(f"  ... and {report.error_count - len(report.errors)} more", file=out)


async def import_command(
    database_url: str, redis_url: str | None, kind: ImportKind, path: Path, *, mode: ImportMode, is_dry_run: bool
) -> int:
    """`tracecode import KIND FILE`: import as admin, print the report; 0 when no row was bad, else 1."""
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        print(f"tracecode: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    conn = await db.connect(database_url)
    try:
        report = await run_import(conn, kind, data, mode=mode, is_dry_run=is_dry_run)
        if report.producer_ids and redis_url is not None and not (report.is_rejected or is_dry_run):
            redis = redis_client(redis_url)
            try:
                await forget_producer_documents(conn, DocumentCache(redis), report.producer_ids)
            finally:
                await redis.aclose()
    except Problem as problem:
        print(f"tracecode: {path}: {problem.detail}", file=sys.stderr)
        return 1
    finally:
        await conn.close()
    print_report(report, str(path), out=sys.stdout)
    return 1 if report.error_count else 0
