"""The certification hook (与农产品认证挂钩): may a producer apply for, or renew, a green food, organic or
geographical-indication certification of a product?

The policy (青农质〔2019〕21号, 二(三)) makes it a precondition of a new application and of a renewal that the
producer and the product are on the traceability platform. Read as tracecode counts "traced" elsewhere
(resolver.api.hooks): the producer is registered, the product is its own, and a batch of the product was
registered within the last `TRACED_WINDOW_MONTHS`. The policy sets no waiting time after a revocation, so a
revoked certification does not bar a new application here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from codegen.creditcode import is_valid_credit_code, normalise_credit_code
from resolver.api.auth import Principal, authenticate, forbidden
from resolver.api.hooks import ELIGIBILITY_PRODUCER, TRACED_WINDOW_MONTHS
from resolver.edge.problems import invalid
from resolver.edge.query import int_param
from resolver.edge.responses import ORJSONResponse
from resolver.scan.documents import CHINA_TZ
from resolver.state import worker

# The product $1 with its latest batch and whether that batch is within the last $2 months.
PRECHECK_PRODUCT = """
SELECT pd.id, pd.producer_id, pd.name, pd.category, last.at AS last_issued_at,
       coalesce(last.at >= now() - make_interval(months => $2), false) AS is_traced
  FROM products pd
  CROSS JOIN LATERAL (SELECT max(b.created_at) AS at FROM batches b WHERE b.product_id = pd.id) last
 WHERE pd.id = $1
"""

MAX_ID = 2**63 - 1

# Stable codes, Chinese messages: what an applicant must put right before applying.
REASON_MESSAGES = {
    "not_registered": "该主体未在追溯平台登记，须先登记后再申报认证",
    "product_not_of_producer": "产品 {product_id} 不是该主体登记的产品",
    "never_traced": "该产品从未登记批次、获取追溯码，尚未纳入追溯管理",
    "lapsed": "该产品最近一次登记批次已超过 {months} 个月（{at}），须恢复追溯后再申报或续展",
}


def _reason(code: str, **values: Any) -> dict[str, str]:
    return {"code": code, "message": REASON_MESSAGES[code].format(months=TRACED_WINDOW_MONTHS, **values)}


def _credit_code(request: Request) -> str:
    value = normalise_credit_code(request.query_params.get("credit_code", ""))
    if not is_valid_credit_code(value):
        raise invalid("not a valid unified social credit code (GB 32100-2015 check character)", field="credit_code")
    return value


def _may_precheck(principal: Principal, credit_code: str, producer: asyncpg.Record | None) -> bool:
    if principal.is_admin or (principal.role == "producer" and principal.scope == credit_code):
        return True
    if producer is None:  # that a code is not registered is public (GET /api/v1/eligibility) to any regulator
        return principal.role == "regulator"
    return principal.covers_region(producer["region_code"])


def reasons_against(
    producer: asyncpg.Record | None, product: asyncpg.Record | None, product_id: int
) -> list[dict[str, str]]:
    """Why the application may not go ahead (none: it may): each {code, message}. `product` is a PRECHECK_PRODUCT
    row of the producer's own product, or None."""
    if producer is None:
        return [_reason("not_registered")]
    if product is None:
        return [_reason("product_not_of_producer", product_id=product_id)]
    if product["last_issued_at"] is None:
        return [_reason("never_traced")]
    if not product["is_traced"]:
        return [_reason("lapsed", at=product["last_issued_at"].astimezone(CHINA_TZ).date().isoformat())]
    return []


async def precheck_route(request: Request) -> Response:
    """GET /api/v1/certifications/precheck?credit_code=&product_id= (admin, the regulator of the producer's region,
    the producer itself) -> {eligible, reasons: [{code, message}], ...}"""
    principal = await authenticate(request)
    credit_code = _credit_code(request)
    if not request.query_params.get("product_id"):
        raise invalid("query parameter product_id is required", field="product_id")
    product_id = int_param(request, "product_id", default=0, low=1, high=MAX_ID)
    pool = worker(request).pool
    async with pool.acquire() as conn:
        producer = await conn.fetchrow(ELIGIBILITY_PRODUCER, credit_code, TRACED_WINDOW_MONTHS)
        if not _may_precheck(principal, credit_code, producer):
            raise forbidden("只能预审本辖区或本主体的认证申报")
        product = None if producer is None else await conn.fetchrow(PRECHECK_PRODUCT, product_id, TRACED_WINDOW_MONTHS)
    if product is not None and producer is not None and product["producer_id"] != producer["id"]:
        product = None  # another producer's product: nothing of it is told
    reasons = reasons_against(producer, product, product_id)
    return ORJSONResponse(
        {
            "credit_code": credit_code,
            "product_id": product_id,
            "eligible": not reasons,
            "reasons": reasons,
            "product_name": product["name"] if product is not None else None,
            "last_issued_at": product["last_issued_at"] if product is not None else None,
            "traced_window_months": TRACED_WINDOW_MONTHS,
            "as_of": dt.datetime.now(CHINA_TZ),
        }
    )


ROUTES: list[BaseRoute] = [
    Route("/api/v1/certifications/precheck", precheck_route, methods=["GET"]),
]
