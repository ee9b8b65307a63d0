"""Lab results after registration (检测结果补录): an inspection result added to a batch's chain.

A failed result fails the batch at once and for good: from the moment the call returns no gate admits it
(`inspection_failed`, decided in Postgres under the batch's row lock) and within a second every document of the
batch, its package codes' included, shows it on every worker (the batch's version rises in the same transaction;
resolver.scan.changes). A passing result is added to the chain, and is the batch's result in force unless a
failed or later one is (queries.ADD_INSPECTION).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from resolver import queries
from resolver.api.auth import Principal, authenticate, forbidden
from resolver.api.recall import batch_of, invalidate_documents
from resolver.edge.bodies import LabResultIn, read_json
from resolver.edge.responses import ORJSONResponse
from resolver.scan.documents import CHINA_TZ
from resolver.state import worker

INSPECTING_ROLES = ("admin", "regulator", "lab")


def may_inspect(principal: Principal, region_code: str) -> bool:
    """Whether `principal` adds inspection results to batches of producers in `region_code`."""
    return principal.is_admin or principal.covers_region(region_code) or principal.inspects_region(region_code)


def event_data(body: LabResultIn) -> dict[str, Any]:
    """The chain event's members: the result as the lab gave it (only the members it gave)."""
    result = body.model_dump(mode="json", exclude={"inspected_on"}, exclude_none=True)
    return {key: value for key, value in result.items() if value not in ("", [])}


async def add_inspection(request: Request) -> Response:
    """POST /api/v1/batches/{code}/inspections (admin, regulator or lab of the batch's region)"""
    principal = await authenticate(request)
    if principal.role not in INSPECTING_ROLES:  # before the batch is read: its state is no business of theirs
        raise forbidden("只有管理员、监管部门或检测机构可以登记检测结果")
    body = await read_json(request, LabResultIn)
    batch = await batch_of(request, request.path_params["code"])
    if not may_inspect(principal, batch["region_code"]):
        raise forbidden("只能为本辖区的批次登记检测结果")
    inspection = body.model_dump(mode="json", exclude_none=True)
    inspected_at = dt.datetime.combine(body.inspected_on, dt.time(), CHINA_TZ)
    async with worker(request).pool.acquire() as conn, conn.transaction():
        await conn.execute(queries.LOCK_BATCH, batch["id"])
        (in_force,) = await conn.fetch(queries.ADD_INSPECTION, batch["id"], inspection)
        await conn.execute(
            queries.INSERT_EVENT, inspected_at, batch["id"], "inspection", "ObjectEvent", "inspecting", None,
            event_data(body),
        )  # fmt: skip
    invalidated = await invalidate_documents(request, batch["id"], change="inspection")
    return ORJSONResponse(
        {
            "trace_code": batch["trace_code"],
            "inspection": inspection,
            "is_in_force": in_force["is_in_force"],
            "result_in_force": in_force["inspection"]["result"],
            "caches_invalidated": invalidated,
        },
        status_code=201,
    )


ROUTES = [Route("/api/v1/batches/{code}/inspections", add_inspection, methods=["POST"])]
