"""The write API of the foundation: tokens, producers and batches."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cache.store import REDIS_ERRORS
from codegen.creditcode import is_valid_credit_code
from codegen.format import CodeType
from codegen.longform import compose_long
from resolver import queries
from resolver.api.auth import TOKEN_CACHE_TTL_S, Principal, authenticate, create_token, forbidden
from resolver.api.issuer import CodeIssuer
from resolver.categories import CATEGORIES, SUBJECT_CATEGORY
from resolver.edge.bodies import BatchIn, ProducerIn, TokenIn, read_json
from resolver.edge.problems import Problem, invalid
from resolver.edge.responses import ORJSONResponse
from resolver.scan.documents import CHINA_TZ
from resolver.state import worker

logger = logging.getLogger(__name__)

_GATE_SCOPE = re.compile(r"[0-9]{1,18}/[0-9A-Za-z_-]{1,32}")


async def create_token_route(request: Request) -> Response:
    """POST /api/v1/tokens (admin)"""
    principal = await authenticate(request)
    if not principal.is_admin:
        raise forbidden("只有管理员可以签发令牌")
    body = await read_json(request, TokenIn)
    pool = worker(request).pool
    await _check_scope(pool, body.role, body.scope)
    token_id, token = await create_token(pool, body.role, body.scope)
    return ORJSONResponse({"id": token_id, "token": token, "role": body.role, "scope": body.scope}, status_code=201)


MAX_TOKEN_ID = 2**63 - 1


async def revoke_token(request: Request) -> Response:
    """DELETE /api/v1/tokens/{id} (admin): the token stops working at once on this worker, on the others as
    soon as they hear of it, and everywhere within TOKEN_CACHE_TTL_S at the latest (see resolver.api.auth)."""
    principal = await authenticate(request)
    if not principal.is_admin:
        raise forbidden("只有管理员可以撤销令牌")
    try:
        token_id = int(request.path_params["id"])
    except ValueError:
        token_id = -1
    if not 0 < token_id <= MAX_TOKEN_ID:  # ids are positive bigints: anything else names no token
        raise Problem(404, "unknown_token", "令牌不存在", "令牌编号无效")
    state = worker(request)
    if await state.pool.fetchval(queries.REVOKE_TOKEN, token_id) is None:
        raise Problem(404, "unknown_token", "令牌不存在", f"令牌 {token_id} 不存在或已撤销")
    try:
        await state.token_cache.publish_revocation(token_id)
    except REDIS_ERRORS as exc:  # revoked in Postgres all the same: the other workers' caches expire it
        logger.warning("revocation of token %d not published, other workers refuse it within %.0f s: %r",
                       token_id, TOKEN_CACHE_TTL_S, exc)  # fmt: skip
    return Response(status_code=204)


async def _check_scope(pool: asyncpg.Pool, role: str, scope: str) -> None:
    if role == "admin":
        if scope:
            raise invalid("an admin token has no scope", field="scope")
    elif role in ("regulator", "lab"):
        if await pool.fetchrow(queries.REGION, scope) is None:
            raise invalid(f"a {role}'s scope is a GB/T 2260 region code", field="scope")
    elif role == "producer":
        if not is_valid_credit_code(scope):
            raise invalid("a producer's scope is its unified social credit code", field="scope")
    elif not _GATE_SCOPE.fullmatch(scope):
        raise invalid("a gate's scope is {market_id}/{gate}", field="scope")
    elif not await pool.fetchval(queries.MARKET_EXISTS, int(scope.partition("/")[0])):
        raise invalid(f"market {scope.partition('/')[0]} does not exist", field="scope")


async def create_producer(request: Request) -> Response:
    """POST /api/v1/producers (admin, or regulator of the region)"""
    principal = await authenticate(request)
    body = await read_json(request, ProducerIn)
    if not (principal.is_admin or principal.covers_region(body.region_code)):
        raise forbidden(f"无权在行政区划 {body.region_code} 登记生产经营主体")
    pool = worker(request).pool
    region = await pool.fetchrow(queries.REGION, body.region_code)
    if region is None or region["level"] == 1:
        raise invalid("region_code must be a county-level GB/T 2260 code", field="region_code")
    row = await pool.fetchrow(
        queries.INSERT_PRODUCER, body.credit_code, body.name, body.kind, body.region_code, body.contact, body.tags
    )
    if row is None:
        raise Problem(409, "producer_exists", "主体已登记", f"统一社会信用代码 {body.credit_code} 已登记")
    return ORJSONResponse({**dict(row), "region_name": region["name"]}, status_code=201)


def _may_register_for(principal: Principal, credit_code: str) -> bool:
    return principal.is_admin or (principal.role == "producer" and principal.scope == credit_code)


async def create_batch(request: Request) -> Response:
    """POST /api/v1/batches (admin, or the producer itself): issues the batch code and the national long form."""
    principal = await authenticate(request)
    body = await read_json(request, BatchIn)
    if not _may_register_for(principal, body.producer_credit_code):
        raise forbidden("只能为本主体登记批次")
    state = worker(request)
    pool = state.pool
    producer = await pool.fetchrow(queries.PRODUCER_BY_CREDIT_CODE, body.producer_credit_code)
    if producer is None:
        raise Problem(
            422,
            "unknown_producer",
            "主体未登记",
            f"统一社会信用代码 {body.producer_credit_code} 尚未登记",
            field="producer_credit_code",
        )
    issued = await add_batch(pool, state.issuer, producer, body)
    # A scan of this code before it existed may have cached "unknown": forget it.
    await state.cache.forget([issued.trace_code, issued.long_code])
    public_url = state.settings.public_url
    return ORJSONResponse(
        {
            "trace_code": issued.trace_code,
            "long_code": issued.long_code,
            "url": f"{public_url}/t/{issued.trace_code}",
            "batch_id": issued.batch_id,
            "type": CodeType.PRODUCTION_BATCH.api_name,
        },
        status_code=201,
    )


@dataclass(frozen=True, slots=True)
class IssuedBatch:
    batch_id: int
    trace_code: str
    long_code: str


async def add_batch(pool: asyncpg.Pool, issuer: CodeIssuer, producer: asyncpg.Record, body: BatchIn) -> IssuedBatch:
    """Register a batch of `producer` (a PRODUCER_BY_CREDIT_CODE row) and issue its code and long form."""
    region = producer["region_code"]
    (code,) = await issuer.issue(pool, CodeType.PRODUCTION_BATCH, region, 1)
    now = dt.datetime.now(CHINA_TZ)
    inspection = body.inspection.model_dump(mode="json") if body.inspection else None
    certificate = body.certificate.model_dump(mode="json") if body.certificate else None
    async with pool.acquire() as conn, conn.transaction():
        product_id = await conn.fetchval(
            queries.UPSERT_PRODUCT, producer["id"], body.product.name, body.product.category, body.product.gtin
        )
        number = await conn.fetchval(queries.NEXT_BATCH_NUMBER, producer["id"])
        long_code = compose_long(
            CodeType.PRODUCTION_BATCH,
            SUBJECT_CATEGORY[producer["kind"]],
            producer["credit_code"],
            CATEGORIES[body.product.category].product_class,
            now,
            number,
        )
        batch_id = await conn.fetchval(
            queries.INSERT_BATCH,
            producer["id"], product_id, code, long_code, body.lot, body.quantity, body.unit,
            body.produced_on, body.expires_on, body.origin, inspection, certificate, now,
        )  # fmt: skip
        await conn.execute(queries.INSERT_CODE, code, CodeType.PRODUCTION_BATCH, batch_id, now)
        events: list[tuple[object, ...]] = [
            (now, batch_id, "commissioning", "ObjectEvent", "commissioning", "active", {"code": code})
        ]
        if body.inspection is not None:
            inspected_at = dt.datetime.combine(body.inspection.inspected_on, dt.time(), CHINA_TZ)
            events.append(
                (inspected_at, batch_id, "inspection", "ObjectEvent", "inspecting", None,
                 {"result": body.inspection.result, "agency": body.inspection.agency})
            )  # fmt: skip
        await conn.executemany(queries.INSERT_EVENT, events)
    return IssuedBatch(batch_id, code, long_code)


ROUTES = [
    Route("/api/v1/tokens", create_token_route, methods=["POST"]),
    Route("/api/v1/tokens/{id}", revoke_token, methods=["DELETE"]),
    Route("/api/v1/producers", create_producer, methods=["POST"]),
    Route("/api/v1/batches", create_batch, methods=["POST"]),
]
