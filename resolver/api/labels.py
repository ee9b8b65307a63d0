"""Package labels (产品追溯码, type 4): issued in bulk for a batch, answered as CSV or JSON, printed as a PDF sheet.

`POST /api/v1/batches/{trace_code}/labels` `{"count": N}` (admin, or the batch's producer) issues N package codes
and answers them as CSV (`code,url`, for label-printer software) or, when `Accept` prefers `application/json`, as
`{"batch": ..., "count": N, "link": ..., "url_prefix": ..., "codes": [...]}`. `tracecode labels` does the same from
the command line, into a CSV file or A4 PDF sheets (see resolver.api.labelsheet).

Which URL a label carries is the request's `link`: `trace` (the default), `{public_url}/t/{code}`; or
`digital_link`, the package's GS1 Digital Link URI `{public_url}/01/{gtin}/10/{lot}/21/{code}` (the package code
is the serial, AI 21), which retail and GS1 tools read. Both end in the code, so a URL is always `url_prefix` +
code. A Digital Link needs the batch's product to have a GTIN and its lot to be one GS1 allows (AI 10: 1 to 20
characters of set 82); otherwise 409 (`no_gtin`, `lot_not_gs1`), before anything is issued.

How a request runs, and why:

1. The whole range of sequence numbers is reserved in one short statement (CodeIssuer.reserve): concurrent
   requests, on any process, get disjoint ranges. A range that is never stored is a harmless gap.
2. One transaction stores the range (one row of `code_ranges`, however many codes: schema/migrations/0009),
   the batch's commissioning event and the producer's last_issued_at: all of it or none. A code is a pure
   function of its range, so nothing is stored per code (resolver.scan.ranges finds a code's batch from it), and
   10,000,000 codes commit as fast as one.
3. Only after the commit does the answer start: a stream that makes the codes chunk by chunk from the range
   (the numba kernel, in a worker thread one chunk ahead), so no code is ever answered that is not issued, and
   nothing is held in memory but a chunk. The length is known in advance (every row has the same size) and
   sent as Content-Length, so label software can show progress and detect a cut-off download. At most
   MAX_CONCURRENT_ISSUES issuances run at once per process.

The codes are new, so nothing cached can be stale about them, except a negative entry of a code someone guessed
before it was issued (it needs the secret, or luck against 10**11) which expires within NEGATIVE_TTL_S; package
codes never get one (a code in no range is answered 404 from the ranges). Every cached document of the batch
is dropped after the commit, because its chain has a new event; best effort, like a gate scan: the range is
committed already, and a document Redis could not drop is stale for at most its TTL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Final, Literal, TypeVar

import asyncpg
import numpy as np
import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from codegen.digitallink import LOT_MAX_LENGTH, digital_link_path, is_cset82
from codegen.format import CODE_LENGTH, CodeType, region_of, type_of
from codegen.gtin import InvalidGtin
from codegen.kernels import CodeBlock, block_to_strings, issue_block
from codegen.permute import RoundKeys, derive_round_keys
from resolver import queries
from resolver.api.auth import Principal, authenticate, forbidden
from resolver.api.issuer import CodeIssuer
from resolver.api.labelsheet import TRACE_PATH, LabelSheet
from resolver.edge.bodies import Body, read_json
from resolver.edge.negotiate import JSON_MEDIA_TYPE, Offers
from resolver.edge.problems import Problem
from resolver.scan.documents import CHINA_TZ, china_today, status_of
from resolver.scan.resolve import canonical_code, refresh_chain
from resolver.state import worker

logger = logging.getLogger(__name__)

T = TypeVar("T")

_BATCH_COLUMNS = """
    b.id AS batch_id, b.trace_code, b.long_code, b.lot, b.status, b.expires_on,
    b.certificate IS NOT NULL AS has_certificate, p.id AS producer_id, p.credit_code, pd.name AS product_name, pd.gtin
"""
_BATCH_JOINS = """
    JOIN producers p ON p.id = b.producer_id
    JOIN products pd ON pd.id = b.product_id
"""
LABEL_BATCH_BY_CODE = f"SELECT {_BATCH_COLUMNS} FROM batches b {_BATCH_JOINS} WHERE b.trace_code = $1"
LABEL_BATCH_BY_LONG_CODE = f"SELECT {_BATCH_COLUMNS} FROM batches b {_BATCH_JOINS} WHERE b.long_code = $1"

MAX_LABELS_PER_REQUEST: Final = 10_000_000
ANSWER_CHUNK_CODES: Final = 100_000  # codes per piece of the answer: ~7 MB of CSV
MAX_PDF_LABELS_PER_FILE: Final = 10_000  # 417 A4 pages; more labels go to numbered files
MAX_CONCURRENT_ISSUES: Final = 2  # per process: each holds a pool connection while it commits
STATEMENT_TIMEOUT_S: Final = 10.0
ACQUIRE_TIMEOUT_S: Final = 10.0
ROUND_KEY_CACHE_SIZE: Final = 256

CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"
CSV_HEADER: Final = b"code,url\r\n"
LABEL_OFFERS: Final = Offers("text/csv", JSON_MEDIA_TYPE)  # CSV unless the Accept header prefers JSON
LINE_END: Final = b"\r\n"  # RFC 4180
EVENT_KIND: Final = "commissioning"  # EPCIS: the package codes come into being (shown as 赋码登记)

# The URL a label carries: `{public_url}/t/{code}`, or the GS1 Digital Link URI `/01/{gtin}/10/{lot}/21/{code}`.
LabelLink = Literal["trace", "digital_link"]
_SAMPLE_CODE: Final = "4" + "0" * (CODE_LENGTH - 1)  # a package code as AI 21 holds it: 20 digits, none encoded


class LabelsIn(Body):
    count: Annotated[int, Field(strict=True, ge=1, le=MAX_LABELS_PER_REQUEST)]
    link: LabelLink = Field(
        default="trace",
        description="the URL each code gets: `trace`, `{public_url}/t/{code}`; `digital_link`, the GS1 Digital Link "
        "URI `{public_url}/01/{gtin}/10/{lot}/21/{code}` (409 when the batch's product has no GTIN or its lot is not "
        "a GS1 lot)",
    )


@dataclass(frozen=True, slots=True)
class LabelBatch:
    """The production batch that labels are asked for, as LABEL_BATCH_BY_CODE reads it."""

    batch_id: int
    trace_code: str
    long_code: str
    lot: str
    gtin: str | None  # the product's, 14 digits
    status: str  # active, recalled or expired
    producer_id: int
    credit_code: str
    product_name: str
    has_certificate: bool

    @property
    def region(self) -> str:
        """The county of the batch code: package codes route to the node that owns the batch."""
        return region_of(self.trace_code)


@dataclass(frozen=True, slots=True)
class IssuedLabels:
    """Package codes of one request: those of sequence numbers `start_seq .. start_seq + count - 1` in `region`."""

    batch: LabelBatch
    region: str
    start_seq: int
    count: int
    keys: RoundKeys

    def spans(self, size: int) -> list[tuple[int, int]]:
        """(first sequence number, count) of consecutive pieces of at most `size` codes."""
        end = self.start_seq + self.count
        return [(start, min(size, end - start)) for start in range(self.start_seq, end, size)]

    def block(self, start_seq: int, count: int) -> CodeBlock:
        return issue_block(CodeType.PACKAGE, self.region, start_seq, count, self.keys)

    def codes(self) -> Iterator[str]:
        """Every code, in sequence order, a chunk in memory at a time."""
        for span in self.spans(ANSWER_CHUNK_CODES):
            yield from block_to_strings(self.block(*span))


@lru_cache(maxsize=ROUND_KEY_CACHE_SIZE)
def _package_keys(secret: bytes, region: str) -> RoundKeys:
    return derive_round_keys(secret, CodeType.PACKAGE, region)


async def find_batch(
    pool: asyncpg.Pool, code: str, *, may_label: Callable[[LabelBatch], bool] | None = None
) -> LabelBatch:
    """The batch named by `code` (canonical), ready for labels; Problem 404 or 422 otherwise, then 403 when
    `may_label` refuses it (before its state is told to someone who may not label it), then 409."""
    if len(code) == CODE_LENGTH and type_of(code) is not CodeType.PRODUCTION_BATCH:
        raise Problem(
            422,
            "not_a_batch_code",
            "不是生产批次码",
            f"追溯码 {code} 是{type_of(code).label}；产品追溯码只能为生产批次码（首位为1）或国家平台追溯码签发",
        )
    query = LABEL_BATCH_BY_CODE if len(code) == CODE_LENGTH else LABEL_BATCH_BY_LONG_CODE
    row = await pool.fetchrow(query, code, timeout=STATEMENT_TIMEOUT_S)
    if row is None:
        raise Problem(404, "unknown_code", "未找到该追溯码", f"追溯码 {code} 未登记，请核对后重试")
    batch = LabelBatch(
        batch_id=row["batch_id"],
        trace_code=row["trace_code"],
        long_code=row["long_code"],
        lot=row["lot"],
        gtin=row["gtin"].strip() if row["gtin"] else None,
        status=status_of(row, china_today()),
        producer_id=row["producer_id"],
        credit_code=row["credit_code"],
        product_name=row["product_name"],
        has_certificate=row["has_certificate"],
    )
    if may_label is not None and not may_label(batch):
        raise forbidden("只能为本主体的批次签发产品追溯码")
    if batch.status == "recalled":
        raise Problem(409, "recalled", "批次已召回", f"批次 {batch.trace_code} 已召回，不能再签发产品追溯码")
    if batch.status == "expired":
        raise Problem(409, "expired", "批次已过期", f"批次 {batch.trace_code} 已过保质期，不能再签发产品追溯码")
    return batch


async def issue_labels(
    pool: asyncpg.Pool, issuer: CodeIssuer, secret: bytes, batch: LabelBatch, count: int
) -> IssuedLabels:
    """Issue `count` package codes of `batch`: store their range, with their commissioning event, in one
    transaction. Returns once committed; `secret` is the key `issuer` was made with."""
    if not 1 <= count <= MAX_LABELS_PER_REQUEST:
        raise ValueError(f"count must be 1..{MAX_LABELS_PER_REQUEST}, got {count}")
    start = await issuer.reserve(pool, CodeType.PACKAGE, batch.region, count)
    now = dt.datetime.now(CHINA_TZ)
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn, conn.transaction():
        await conn.execute(
            queries.INSERT_RANGE, CodeType.PACKAGE, batch.region, start, count, batch.batch_id, now,
            timeout=STATEMENT_TIMEOUT_S,
        )  # fmt: skip
        await conn.execute(
            queries.INSERT_EVENT, now, batch.batch_id, EVENT_KIND, "ObjectEvent", "commissioning", "active",
            {"package_codes": count}, timeout=STATEMENT_TIMEOUT_S,
        )  # fmt: skip
        await conn.execute(queries.PRODUCER_ISSUED, batch.producer_id, timeout=STATEMENT_TIMEOUT_S)  # traced (四挂钩)
    return IssuedLabels(batch, batch.region, start, count, _package_keys(secret, batch.region))


async def _ahead_in_thread(work: Callable[[T], bytes], items: Sequence[T]) -> AsyncIterator[bytes]:
    """`work(item)` for each item, run in a worker thread one item ahead of the consumer (the kernel and NumPy
    release the GIL, so the event loop keeps serving scans meanwhile)."""
    if not items:
        return
    pending = asyncio.create_task(asyncio.to_thread(work, items[0]))
    try:
        for item in items[1:]:
            done = await pending
            pending = asyncio.create_task(asyncio.to_thread(work, item))
            yield done
        yield await pending
    finally:
        pending.cancel()


def url_prefix(public_url: str, path: str = TRACE_PATH) -> str:
    """What a code is appended to for its URL: `{public_url}{path}`, `{public_url}/t/` by default."""
    return public_url.rstrip("/") + path


def link_path(batch: LabelBatch, link: LabelLink) -> str:
    """The path that a package code of `batch` ends for `link`: `/t/`, or `/01/{gtin}/10/{lot}/21/` (GS1 Digital
    Link, lot percent-encoded); Problem 409 when the batch's product has no GTIN or its lot is not one AI 10 takes."""
    if link == "trace":
        return TRACE_PATH
    if batch.gtin is None:
        raise Problem(
            409,
            "no_gtin",
            "产品未登记商品条码",
            f"批次 {batch.trace_code} 的产品“{batch.product_name}”未登记商品条码（GTIN），标签不能使用GS1数字链接；"
            "请先为产品登记GTIN，或使用追溯码链接（link 为 trace）",
        )
    if not is_cset82(batch.lot, LOT_MAX_LENGTH):
        raise Problem(
            409,
            "lot_not_gs1",
            "批号不符合GS1规则",
            f"批次 {batch.trace_code} 的批号“{batch.lot}”不能用于GS1数字链接：GS1批号（AI 10）为1至{LOT_MAX_LENGTH}个"
            "字符，只能含英文字母、数字和 !\"%&'()*+,-./:;<=>?_ 等符号；请使用追溯码链接（link 为 trace）",
        )
    try:
        path = digital_link_path(batch.gtin, batch.lot, _SAMPLE_CODE)
    except InvalidGtin as exc:
        raise Problem(
            409, "invalid_gtin", "商品条码无效", f"批次 {batch.trace_code} 的产品所登记的{exc.message}"
        ) from None
    return path.removesuffix(_SAMPLE_CODE)


def csv_rows(block: CodeBlock, prefix: bytes) -> bytes:
    """CSV lines `code,{prefix}{code}\\r\\n` of the codes of `block`."""
    n = block.shape[0]
    url_at = CODE_LENGTH + 1
    code_at = url_at + len(prefix)
    out = np.empty((n, code_at + CODE_LENGTH + len(LINE_END)), dtype=np.uint8)
    out[:, :CODE_LENGTH] = block
    out[:, CODE_LENGTH] = ord(",")
    out[:, url_at:code_at] = np.frombuffer(prefix, dtype=np.uint8)
    out[:, code_at : code_at + CODE_LENGTH] = block
    out[:, code_at + CODE_LENGTH :] = np.frombuffer(LINE_END, dtype=np.uint8)
    return out.tobytes()


def json_items(block: CodeBlock) -> bytes:
    """`,"code"` for each code of `block` (the stream drops the comma before the first)."""
    out = np.empty((block.shape[0], CODE_LENGTH + 3), dtype=np.uint8)
    out[:, 0] = ord(",")
    out[:, 1] = out[:, -1] = ord('"')
    out[:, 2:-1] = block
    return out.tobytes()


def csv_length(count: int, prefix: bytes) -> int:
    return len(CSV_HEADER) + count * (2 * CODE_LENGTH + 1 + len(prefix) + len(LINE_END))


def _json_head(issued: IssuedLabels, link: LabelLink, prefix: str) -> bytes:
    head = orjson.dumps({"batch": issued.batch.trace_code, "count": issued.count, "link": link, "url_prefix": prefix})
    return head[:-1] + b',"codes":['


async def _csv_stream(issued: IssuedLabels, prefix: bytes) -> AsyncIterator[bytes]:
    yield CSV_HEADER
    async for rows in _ahead_in_thread(
        lambda span: csv_rows(issued.block(*span), prefix), issued.spans(ANSWER_CHUNK_CODES)
    ):
        yield rows


async def _json_stream(issued: IssuedLabels, head: bytes) -> AsyncIterator[bytes]:
    yield head
    first = True
    async for items in _ahead_in_thread(lambda span: json_items(issued.block(*span)), issued.spans(ANSWER_CHUNK_CODES)):
        yield items[1:] if first else items
        first = False
    yield b"]}"


def _answer(request: Request, issued: IssuedLabels, link: LabelLink, prefix: str) -> Response:
    if LABEL_OFFERS.preferred(request.headers.get("accept")) == JSON_MEDIA_TYPE:
        head = _json_head(issued, link, prefix)
        length = len(head) + issued.count * (CODE_LENGTH + 3) - 1 + len(b"]}")
        return StreamingResponse(
            _json_stream(issued, head),
            status_code=201,
            media_type="application/json",
            headers={"Content-Length": str(length)},
        )
    encoded = prefix.encode()
    return StreamingResponse(
        _csv_stream(issued, encoded),
        status_code=201,
        media_type=CSV_MEDIA_TYPE,
        headers={
            "Content-Length": str(csv_length(issued.count, encoded)),
            "Content-Disposition": f'attachment; filename="labels-{issued.batch.trace_code}.csv"',
        },
    )


def _may_label(principal: Principal, batch: LabelBatch) -> bool:
    return principal.is_admin or (principal.role == "producer" and principal.scope == batch.credit_code)


async def create_labels(request: Request) -> Response:
    """POST /api/v1/batches/{trace_code}/labels (admin, or the batch's producer): issue package codes, answer them."""
    principal = await authenticate(request)
    code = canonical_code(request.path_params["trace_code"])
    body = await read_json(request, LabelsIn)
    state = worker(request)
    batch = await find_batch(state.pool, code, may_label=lambda batch: _may_label(principal, batch))
    prefix = url_prefix(state.settings.public_url, link_path(batch, body.link))
    async with state.label_slots:
        issued = await issue_labels(state.pool, state.issuer, state.settings.secret, batch, body.count)
    await refresh_chain(request, batch.batch_id)
    logger.info("issued %d package codes for batch %s", issued.count, batch.trace_code)
    return _answer(request, issued, body.link, prefix)


def label_sheet(public_url: str, batch: LabelBatch, path: str = TRACE_PATH) -> LabelSheet:
    """The label sheet of `batch` whose codes follow `path` (link_path); ValueError when the URL is too long for a
    readable QR code."""
    return LabelSheet(
        public_url=public_url, path=path, product_name=batch.product_name, has_certificate=batch.has_certificate
    )


def pdf_paths(out: Path, count: int) -> list[Path]:
    """`out` itself for up to MAX_PDF_LABELS_PER_FILE labels, else `out-001.pdf`, `out-002.pdf`, ..."""
    files = -(-count // MAX_PDF_LABELS_PER_FILE)
    if files == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i:03d}{out.suffix}") for i in range(1, files + 1)]


def write_csv(issued: IssuedLabels, prefix: str, out: Path) -> None:
    """The codes of `issued` as the CSV the API answers (URLs `{prefix}{code}`), written chunk by chunk to `out`."""
    encoded = prefix.encode()
    with out.open("wb") as file:
        file.write(CSV_HEADER)
        for span in issued.spans(ANSWER_CHUNK_CODES):
            file.write(csv_rows(issued.block(*span), encoded))


def write_pdf(issued: IssuedLabels, sheet: LabelSheet, out: Path) -> list[tuple[Path, int]]:
    """The labels of `issued` as A4 sheets in one or more files named after `out`; (path, pages) of each."""
    codes = issued.codes()
    written = []
    for i, path in enumerate(pdf_paths(out, issued.count)):
        n = min(MAX_PDF_LABELS_PER_FILE, issued.count - i * MAX_PDF_LABELS_PER_FILE)
        pages = sheet.write((next(codes) for _ in range(n)), path)
        written.append((path, pages))
    return written


ROUTES: list[BaseRoute] = [Route("/api/v1/batches/{trace_code}/labels", create_labels, methods=["POST"])]
