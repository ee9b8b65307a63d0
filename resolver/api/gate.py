"""Market gates (扫码交易, 入场查验): markets, gate scans that admit or reject a lot, and trades out of entries.

Gate scans are decided and recorded by one Postgres statement (`tracecode_gate_scans`), so an
answer is durable before it is sent, the batch's quantity is checked and raised under a row lock
held only inside Postgres, and a repeated idempotency key returns the first answer and writes
nothing, whichever worker the repeat reaches.

Group commit: a worker sends the scans that arrive while its previous statement runs as the next
statement, with one commit for all of them (`GroupCommit`). Each scan is decided as it would be
alone; each answer waits for the commit of its group. A group that fails as a whole (a key raced
on another worker, or one scan the database refuses) wrote nothing and is run again one scan at a
time, so one bad scan fails alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated

import asyncpg
import orjson
from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from codegen.creditcode import is_valid_credit_code
from codegen.format import CodeType, MalformedCode, parse, type_of
from resolver import queries
from resolver.api.auth import Principal, authenticate, bearer_token, forbidden, hash_token
from resolver.api.issuer import CodeIssuer
from resolver.db import POSTGRES_AWAY_ERRORS, within_request_wait
from resolver.edge.bodies import (
    Body,
    ContactText,
    Name,
    Printable,
    RegionCode,
    Unit,
    check_category,
    read_json,
    receive_json,
)
from resolver.edge.problems import Problem, invalid, store_unavailable
from resolver.edge.responses import ORJSONResponse
from resolver.scan.documents import china_today
from resolver.state import Worker, app_worker, worker

logger = logging.getLogger(__name__)

GROUP_MAX_SCANS = 256  # scans in one statement; more wait for the next
GROUPS_IN_FLIGHT = 1  # statements of one worker running at once: the next group gathers while one runs
RETRIED_ERRORS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)  # a key raced: run again
VOUCHER_BLOCK = 1_024  # voucher codes a worker reserves at once for a county (a gap when the worker stops)
VOUCHER_LOW = 256  # fewer left: the next block is reserved in the background, before any scan must wait

REASON_MESSAGES = {
    "unknown_code": "追溯码未登记，禁止入场",
    "malformed_code": "追溯码格式错误，请重新扫码或核对输入",
    "recalled": "该批次已被召回，禁止入场",
    "expired": "该批次已过保质期，禁止入场",
    "inspection_failed": "该批次检测不合格，禁止入场",
    "no_certificate": "未附承诺达标合格证，禁止入场",
    "quantity_exceeds_batch": "入场数量超过该批次剩余数量",
    "not_for_this_market": "本市场不经营该类产品",
    "unit_mismatch": "计量单位与批次登记不符",
    "voucher_not_admissible": "入市追溯凭证不能再次入场，请出示流通批次码",
}
TRADE_ERRORS = {
    "unknown_voucher": (422, "入市追溯凭证未登记"),
    "wrong_market": (403, "该入市凭证不属于本市场"),
    "quantity_exceeds_entry": (409, "交易数量超过该入场批次的剩余数量"),
    "unit_mismatch": (422, "计量单位与入场登记不符"),
}


IdempotencyKey = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), Printable]
Quantity = Annotated[Decimal, Field(gt=0, le=Decimal("1e12"), max_digits=18, decimal_places=3)]
CategoryName = Annotated[str, Field(min_length=1, max_length=32)]


class MarketIn(Body):
    name: Name
    region_code: RegionCode
    admitted_categories: Annotated[list[CategoryName], Field(max_length=50)] | None = None


class GateScanIn(Body):
    code: Annotated[str, StringConstraints(max_length=200)]
    quantity: Quantity
    unit: Unit
    idempotency_key: IdempotencyKey


class BuyerIn(Body):
    name: Name
    credit_code: Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True)] | None = None
    contact: ContactText = ""


class TradeIn(Body):
    voucher_code: Annotated[str, StringConstraints(max_length=200)]
    buyer: BuyerIn
    quantity: Quantity
    unit: Unit
    idempotency_key: IdempotencyKey


def _request_hash(body: Body) -> bytes:
    return hashlib.sha256(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).digest()


def _scan_hash(body: GateScanIn) -> bytes:
    """_request_hash(body), byte for byte (stored hashes are compared with it), without model_dump's cost."""
    fields = {
        "code": body.code,
        "quantity": str(body.quantity),
        "unit": body.unit,
        "idempotency_key": body.idempotency_key,
    }
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).digest()


def _gate_of(principal: Principal) -> tuple[int, str]:
    if principal.role != "gate":
        raise forbidden("需要市场入口（gate）令牌")
    market, _, gate = principal.scope.partition("/")
    return int(market), gate


async def _market_region(state: Worker, market_id: int) -> str:
    """The market's county, which prefixes its vouchers and circulation codes (kept per process: markets never move)."""
    regions = state.market_regions
    region = regions.get(market_id)
    if region is None:
        region = await state.pool.fetchval(queries.MARKET_REGION, market_id)
        if region is None:
            raise forbidden(f"市场 {market_id} 不存在")
        regions[market_id] = region
    return region


class VoucherSupply:
    """One worker's market entry voucher codes, per county, reserved a block ahead of the scans.

    `await supply.one(region)` takes the next code. When fewer than VOUCHER_LOW are left, one task reserves
    the next VOUCHER_BLOCK (one Postgres commit) and computes them in a thread, while scans go on taking
    codes; only a scan that finds none left (the first ones, or a burst) waits, for that same task. Taken
    one at a time from the issuer, every 64th scan paid the commit and a thread hop, and so did every scan
    that arrived meanwhile (each reserving a block of its own): a p99 of its own under load. A code taken
    by a scan that is rejected, and the codes left when the worker stops, are gaps, never duplicates.
    """

    __slots__ = ("_codes", "_issuer", "_pool", "_refills")

    def __init__(self, issuer: CodeIssuer, pool: asyncpg.Pool) -> None:
        self._issuer = issuer
        self._pool = pool
        self._codes: dict[str, deque[str]] = {}
        self._refills: dict[str, asyncio.Task[None]] = {}  # the one reservation in flight per county

    def __repr__(self) -> str:
        return f"VoucherSupply(left={ {region: len(codes) for region, codes in self._codes.items()} })"

    async def one(self, region: str) -> str:
        """The next voucher code of `region`; raises what Postgres raised if none is left and none could be had."""
        codes = self._codes.setdefault(region, deque())
        while not codes:
            await asyncio.shield(self._refill(region))  # a cancelled scan does not cancel the reservation
        code = codes.popleft()
        if len(codes) < VOUCHER_LOW:
            self._refill(region)
        return code

    def _refill(self, region: str) -> asyncio.Task[None]:
        task = self._refills.get(region)
        if task is None:
            task = self._refills[region] = asyncio.create_task(self._reserve(region))
            task.add_done_callback(self._reserved)
        return task

    async def _reserve(self, region: str) -> None:
        try:
            start = await self._issuer.reserve(self._pool, CodeType.MARKET_ENTRY, region, VOUCHER_BLOCK)
            codes = await asyncio.to_thread(self._issuer.codes, CodeType.MARKET_ENTRY, region, start, VOUCHER_BLOCK)
            self._codes[region].extend(codes)
        finally:
            del self._refills[region]

    @staticmethod
    def _reserved(task: asyncio.Task[None]) -> None:
        """Log a failed reservation (scans waiting for it get its error; the next one short of codes tries again)."""
        if not task.cancelled() and task.exception() is not None:
            logger.warning("voucher codes not reserved: %r", task.exception())


@dataclass(slots=True)
class PendingScan:
    """One scan's arguments of `tracecode_gate_scans`, and where its row goes once its group committed."""

    market_id: int
    gate: str
    key: str
    request_hash: bytes
    code: str
    quantity: Decimal
    unit: str
    voucher_code: str
    package_seq: int | None  # a package code's sequence number: its range names its batch (resolver.scan.ranges)
    answer: asyncio.Future[asyncpg.Record] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def fail(self, exc: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class GroupCommit:
    """One worker's gate scans, sent in groups: `row = await groups.decide(scan)` once its group committed.

    No task lives between bursts: the first scan of a burst starts a sender, which sends what has gathered,
    then what gathered meanwhile, and ends when nothing is left (so nothing is left behind at shut-down).
    A new entry changes no cached document (see queries.DOCUMENT_BY_CODE's chain), so nothing is invalidated.
    """

    __slots__ = ("_pool", "_queue", "_sending", "_tasks", "groups", "scans")

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._queue: list[PendingScan] = []
        self._sending = 0  # senders running; each lowers it itself as it ends, so no scan is left without one
        self._tasks: set[asyncio.Task[None]] = set()  # referenced while they run
        self.groups = 0
        self.scans = 0

    def __repr__(self) -> str:
        return f"GroupCommit(groups={self.groups}, scans={self.scans}, waiting={len(self._queue)})"

    async def decide(self, scan: PendingScan) -> asyncpg.Record:
        """The scan's row of `tracecode_gate_scans`, after the commit. Cancelling the caller does not stop the
        scan: it is decided and recorded with its group all the same (a retry of its key replays it)."""
        self._queue.append(scan)
        if self._sending < GROUPS_IN_FLIGHT:
            self._sending += 1
            task = asyncio.create_task(self._send_all())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Not shielded: a cancelled caller cancels the future alone, which its group then leaves unanswered.
        return await scan.answer

    async def _send_all(self) -> None:
        group: list[PendingScan] = []
        try:
            await asyncio.sleep(0)  # scans whose bodies arrived in this turn of the loop join the first group
            while self._queue:
                group = self._queue[:GROUP_MAX_SCANS]
                del self._queue[:GROUP_MAX_SCANS]
                await self._send(group)
        except BaseException as exc:  # cancelled at shut-down, or a bug: no scan may wait for ever
            failed, self._queue = [*group, *self._queue], []
            for scan in failed:
                scan.fail(store_unavailable() if isinstance(exc, asyncio.CancelledError) else exc)
            raise
        finally:
            # In the step that saw the queue empty: a scan queued after it finds no sender and starts one (a
            # done callback would run a turn later, and a scan queued in between would wait for ever).
            self._sending -= 1

    async def _send(self, group: list[PendingScan], *, is_retry: bool = False) -> None:
        self.groups += 1
        self.scans += len(group)
        try:
            rows = await self._pool.fetch(
                queries.GATE_SCANS, [s.market_id for s in group], [s.gate for s in group], [s.key for s in group],
                [s.request_hash for s in group], [s.code for s in group], [s.quantity for s in group],
                [s.unit for s in group], [s.voucher_code for s in group], china_today(),
                [s.package_seq for s in group],
            )  # fmt: skip
        except POSTGRES_AWAY_ERRORS as exc:  # before PostgresError: a connection lost is not a refusal to retry
            logger.warning("%d gate scans not recorded, postgres unavailable: %r", len(group), exc)
            for scan in group:
                scan.fail(store_unavailable())
            return
        except asyncpg.PostgresError as exc:  # the statement wrote nothing
            if len(group) > 1:
                logger.info("a group of %d gate scans failed (%r): running them one by one", len(group), exc)
                await asyncio.gather(*(self._send([scan]) for scan in group))
            elif not is_retry and isinstance(exc, RETRIED_ERRORS):
                await self._send(group, is_retry=True)
            else:
                group[0].fail(exc)
            return
        for row in rows:
            answer = group[row["ord"] - 1].answer
            if not answer.done():
                answer.set_result(row)


def _reasons(codes: list[str]) -> list[dict[str, str]]:
    return [{"code": code, "message": REASON_MESSAGES[code]} for code in codes]


_MALFORMED_ANSWER = orjson.dumps({"decision": "reject", "reasons": _reasons(["malformed_code"]), "voucher_code": None})


async def create_market(request: Request) -> Response:
    """POST /api/v1/markets (admin)"""
    principal = await authenticate(request)
    if not principal.is_admin:
        raise forbidden("只有管理员可以登记市场")
    body = await read_json(request, MarketIn)
    for category in body.admitted_categories or []:
        try:
            check_category(category)
        except ValueError as exc:
            raise invalid(str(exc), field="admitted_categories") from None
    pool = worker(request).pool
    region = await pool.fetchrow(queries.REGION, body.region_code)
    if region is None or region["level"] == 1:
        raise invalid("region_code must be a county-level GB/T 2260 code", field="region_code")
    market_id = await pool.fetchval(queries.INSERT_MARKET, body.name, body.region_code, body.admitted_categories)
    return ORJSONResponse({"id": market_id, **body.model_dump()}, status_code=201)


class GateScanRoute:
    """POST /api/v1/gate/scans (gate token): accept or reject a lot, with every reason that applies.

    A lean ASGI app, like resolve.ScanRoute: the busy path (a token this worker checked within
    TOKEN_CACHE_TTL_S) reads the scope itself, the body with read_json's own reader (`receive_json`), and
    sends its answer's bytes, without Starlette's Request and Response. Any other token goes through
    `authenticate`, so every refusal is the same answer as on every other route, checked in the same order:
    401, 403, then 415, 413, 400, 422. The router still matches path and method (405 with Allow), and the
    middleware still times and counts every answer.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "GateScanRoute()"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await _gate_scan(scope, receive)
        except Problem as problem:
            await problem.to_response()(scope, receive, send)
            return
        headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _gate_scan(scope: Scope, receive: Receive) -> bytes:
    """The answer's bytes; raises Problem for a refusal (Postgres errors propagate to the app's handlers, which
    answer the one 503 before anything was sent)."""
    state = app_worker(scope["app"])
    authorization = content_type = content_length = None
    for name, value in scope["headers"]:  # the first of each (even if empty), as Starlette's Headers.get reads them
        if name == b"authorization":
            authorization = value if authorization is None else authorization
        elif name == b"content-type":
            content_type = value.decode("latin-1") if content_type is None else content_type
        elif name == b"content-length":
            content_length = value if content_length is None else content_length
    principal = _cached_principal(state, authorization) or await authenticate(Request(scope))
    market_id, gate = _gate_of(principal)
    body = await receive_json(receive, content_type, content_length, GateScanIn)
    try:
        code = parse(body.code)
    except MalformedCode:
        # Decided without I/O, and the same input always gets the same answer: nothing to record.
        return _MALFORMED_ANSWER
    package_seq = state.ranges.seq_of(code) if type_of(code) is CodeType.PACKAGE else None

    async def record() -> asyncpg.Record:
        voucher = await state.gate_vouchers.one(await _market_region(state, market_id))
        return await state.gate_groups.decide(
            PendingScan(
                market_id, gate, body.idempotency_key, _scan_hash(body), code, body.quantity, body.unit, voucher,
                package_seq,
            )
        )  # fmt: skip

    # Bounded: a Postgres that hangs gets a 503 within REQUEST_WAIT_S. A scan given up on may still be
    # recorded when Postgres answers; its retry with the same key is then answered as a replay.
    row = await within_request_wait(record())
    if row["is_conflict"]:
        raise _key_reused()
    reasons = row["reasons"]
    return orjson.dumps(
        {
            "decision": row["decision"],
            "reasons": _reasons(reasons) if reasons else [],
            "voucher_code": row["voucher_code"],
            "replay": row["is_replay"],
        }
    )


def _cached_principal(state: Worker, authorization: bytes | None) -> Principal | None:
    """The principal of a bearer token this worker checked lately (auth.authenticate's cache), else None: then
    `authenticate` decides, with its 401s. A cached token is never the admin token, which is not cached."""
    if authorization is None:
        return None
    token = bearer_token(authorization.decode("latin-1"))
    return None if token is None else state.token_cache.get(hash_token(token))


async def create_trade(request: Request) -> Response:
    """POST /api/v1/trades (gate token of the market, or admin): a buyer takes part of an entry; issues a
    circulation code (type 2) whose resolve shows the chain back to the producer."""
    principal = await authenticate(request)
    market_id = None if principal.is_admin else _gate_of(principal)[0]
    body = await read_json(request, TradeIn)
    if body.buyer.credit_code is not None and not is_valid_credit_code(body.buyer.credit_code):
        raise invalid("not a valid unified social credit code", field="buyer.credit_code")
    try:
        voucher = parse(body.voucher_code)
    except MalformedCode as exc:
        raise invalid(f"voucher_code: {exc.message}", field="voucher_code") from None
    state = worker(request)
    try:
        region = await state.pool.fetchval(queries.ENTRY_REGION, voucher)
        if region is None:
            raise Problem(422, "unknown_voucher", "入市追溯凭证未登记", f"入市追溯凭证 {voucher} 未登记")
        circulation = await state.issuer.one(state.pool, CodeType.CIRCULATION_BATCH, region)
        row = await state.pool.fetchrow(
            queries.TRADE, market_id, voucher, body.idempotency_key, _request_hash(body), body.buyer.name,
            body.buyer.credit_code, body.buyer.contact, body.quantity, body.unit, circulation,
        )  # fmt: skip
    except asyncpg.RaiseError as exc:  # the function refused the trade and wrote nothing
        status, title = TRADE_ERRORS.get(str(exc), (422, "交易无效"))
        raise Problem(status, str(exc), title, title) from None
    assert row is not None  # a function's SELECT: one row always
    if row["error"] is not None:
        status, title = TRADE_ERRORS[row["error"]]
        raise Problem(status, row["error"], title, title)
    if row["is_conflict"]:
        raise _key_reused()
    code = row["circulation_code"]
    public_url = state.settings.public_url
    return ORJSONResponse(
        {"circulation_code": code, "url": f"{public_url}/t/{code}", "replay": row["is_replay"]},
        status_code=200 if row["is_replay"] else 201,
    )


def _key_reused() -> Problem:
    return Problem(
        422, "idempotency_key_reused", "幂等键已用于其他请求", "同一 idempotency_key 已用于内容不同的请求，请换用新的键"
    )


ROUTES = [
    Route("/api/v1/gate/scans", GateScanRoute(), methods=["POST"], name="gate_scan"),  # first: most of the traffic
    Route("/api/v1/markets", create_market, methods=["POST"]),
    Route("/api/v1/trades", create_trade, methods=["POST"]),
]
