"""Recall (召回): from the moment the call returns, no gate admits the batch and no resolve shows it as active."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Annotated

import asyncpg
from pydantic import StringConstraints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from codegen.format import CodeType
from resolver import queries
from resolver.api.auth import authenticate, forbidden
from resolver.edge.bodies import Body, MultilineText, read_json
from resolver.edge.problems import Problem
from resolver.edge.responses import ORJSONResponse
from resolver.scan.resolve import canonical_code, invalidate_batch
from resolver.state import worker

logger = logging.getLogger(__name__)

INVALIDATION_RETRY_S = 0.5
INVALIDATION_ATTEMPTS = 240  # two minutes of retries while Redis is away


class RecallIn(Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), MultilineText]


async def batch_of(request: Request, text: str) -> asyncpg.Record:
    """The batch a production batch code (or its long form) names; Problem 404/422 otherwise."""
    code = canonical_code(text)
    query = queries.BATCH_BY_TRACE_CODE if len(code) == 20 else queries.BATCH_BY_LONG_CODE
    if len(code) == 20 and code[0] != str(int(CodeType.PRODUCTION_BATCH)):
        raise Problem(422, "not_a_batch_code", "不是生产批次码", "请使用生产批次码（首位为1）或国家平台追溯码")
    row: asyncpg.Record | None = await worker(request).pool.fetchrow(query, code)
    if row is None:
        raise Problem(404, "unknown_code", "未找到该追溯码", f"追溯码 {code} 未登记")
    return row


async def recall_batch(request: Request) -> Response:
    """POST /api/v1/batches/{code}/recall (admin, or regulator of the batch's region)"""
    principal = await authenticate(request)
    body = await read_json(request, RecallIn)
    batch = await batch_of(request, request.path_params["code"])
    if not (principal.is_admin or principal.covers_region(batch["region_code"])):
        raise forbidden("只能召回本辖区的批次")
    async with worker(request).pool.acquire() as conn, conn.transaction():
        recalled_at = await conn.fetchval(queries.RECALL_BATCH, batch["id"], body.reason)
        if recalled_at is not None:
            await conn.execute(
                queries.INSERT_EVENT, recalled_at, batch["id"], "recall", "ObjectEvent", "holding", "recalled",
                {"reason": body.reason},
            )  # fmt: skip
        # Read under the recall's row lock: a gate scan of the batch that was deciding has committed, none can follow.
        holding = await conn.fetch(queries.MARKETS_HOLDING, batch["id"])
    is_new = recalled_at is not None
    invalidated = await invalidate_documents(request, batch["id"], change="recall")
    return ORJSONResponse(
        {
            "status": "recalled",
            "reason": body.reason if is_new else batch["recall_reason"],
            "recalled_at": recalled_at if is_new else batch["recalled_at"],
            "already_recalled": not is_new,
            "caches_invalidated": invalidated,
            "markets_holding": [
                {
                    "market_id": row["market_id"],
                    "name": row["name"],
                    "quantity_left": quantity_json(row["quantity_left"]),
                    "unit": row["unit"],
                }
                for row in holding
            ],
        }
    )


def quantity_json(value: Decimal) -> int | float:
    """A quantity (numeric) as a JSON number: an integer when it is whole."""
    return int(value) if value == value.to_integral_value() else float(value)


async def invalidate_documents(request: Request, batch_id: int, *, change: str) -> bool:
    """Drop the batch's cached documents before answering a committed `change` (a recall, a failed inspection):
    whether Redis was told. If it cannot be, resolves go to Postgres meanwhile (the cache is skipped after an
    error), every worker drops its copy from the change feed, and a background task keeps trying until Redis is
    back."""
    try:
        await invalidate_batch(request, batch_id)
        return True
    except Exception as exc:
        logger.error("%s of batch %d committed but cached documents not yet invalidated: %r", change, batch_id, exc)

    async def retry() -> None:
        for _ in range(INVALIDATION_ATTEMPTS):
            await asyncio.sleep(INVALIDATION_RETRY_S)
            try:
                await invalidate_batch(request, batch_id)
                return
            except Exception as exc:  # keep trying: a stale "active" after a recall must not survive
                logger.warning("%s invalidation of batch %d still failing: %r", change, batch_id, exc)

    worker(request).background.spawn(retry())
    return False


ROUTES = [Route("/api/v1/batches/{code}/recall", recall_batch, methods=["POST"])]
