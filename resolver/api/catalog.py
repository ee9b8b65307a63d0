"""The registry's records over the API: producers (beyond their registration, POST /api/v1/producers),
their products, and the green food, organic and geographical-indication certifications.

Who may do what: admin everything; a regulator reads and writes the records of producers in its
region; a producer reads its own records and manages its own products (its registration data and
certifications are the regulator's to keep). A change that shows on consumer pages (a producer's
name, a product, a certification) drops the cached documents of the producer's batches.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import AfterValidator, StringConstraints, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from cache.store import DocumentCache
from codegen.creditcode import is_valid_credit_code, normalise_credit_code
from resolver import queries
from resolver.api.auth import Principal, authenticate, forbidden
from resolver.api.hooks import TRACED_WINDOW_MONTHS, Executor, region_or_404
from resolver.categories import CATEGORIES, CERTIFICATION_LABELS, CERTIFICATION_STATUS_LABELS, PRODUCER_KIND_LABELS
from resolver.db import POSTGRES_AWAY_ERRORS
from resolver.edge.bodies import (
    Body,
    Category,
    ContactText,
    CreditCode,
    Name,
    Printable,
    ProducerTags,
    ProductIn,
    RegionCode,
    read_json,
)
from resolver.edge.problems import Problem, invalid
from resolver.edge.query import choice_param, int_param, region_param
from resolver.edge.responses import ORJSONResponse
from resolver.scan.documents import china_today
from resolver.scan.resolve import invalidate_batch
from resolver.state import worker

logger = logging.getLogger(__name__)

# --- queries -------------------------------------------------------------------------------------

_PRODUCER_COLUMNS = f"""
    p.id, p.credit_code, p.name, p.kind, p.region_code, r.name AS region_name, p.contact, p.batch_count,
    p.last_issued_at, p.created_at, p.tags,
    coalesce(p.last_issued_at >= now() - interval '{TRACED_WINDOW_MONTHS} months', false) AS is_traced
"""

PRODUCER = f"""
SELECT {_PRODUCER_COLUMNS} FROM producers p JOIN regions r ON r.code = p.region_code WHERE p.credit_code = $1
"""

# $1 region (its counties too), $2 kind, $3 credit code: each NULL for "any".
LIST_PRODUCERS = f"""
SELECT {_PRODUCER_COLUMNS}
  FROM producers p JOIN regions r ON r.code = p.region_code
 WHERE ($1::char(6) IS NULL OR r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)
   AND ($2::text IS NULL OR p.kind = $2)
   AND ($3::char(18) IS NULL OR p.credit_code = $3)
   AND p.id > $4
 ORDER BY p.id
 LIMIT $5
"""

UPDATE_PRODUCER = """
UPDATE producers SET name = $2, kind = $3, region_code = $4, contact = $5, tags = $6 WHERE id = $1
"""

LOCK_PRODUCER = "SELECT FROM producers WHERE id = $1 FOR UPDATE"
PRODUCER_HAS_BATCHES = "SELECT EXISTS (SELECT FROM batches WHERE producer_id = $1)"
DELETE_PRODUCER_CERTIFICATIONS = "DELETE FROM certifications WHERE producer_id = $1"
DELETE_PRODUCER_PRODUCTS = "DELETE FROM products WHERE producer_id = $1"
DELETE_PRODUCER = "DELETE FROM producers WHERE id = $1"

_PRODUCT_COLUMNS = """
    pd.id, pd.name, pd.category, pd.gtin, pd.created_at, pd.producer_id, p.credit_code, p.region_code,
    (SELECT max(b.created_at) FROM batches b WHERE b.product_id = pd.id) AS last_issued_at
"""

PRODUCT = f"SELECT {_PRODUCT_COLUMNS} FROM products pd JOIN producers p ON p.id = pd.producer_id WHERE pd.id = $1"

PRODUCTS_OF_PRODUCER = f"""
SELECT {_PRODUCT_COLUMNS} FROM products pd JOIN producers p ON p.id = pd.producer_id
 WHERE pd.producer_id = $1
 ORDER BY pd.id
"""

INSERT_PRODUCT = """
INSERT INTO products (producer_id, name, category, gtin) VALUES ($1, $2, $3, $4)
ON CONFLICT (producer_id, name, category) DO NOTHING
RETURNING id
"""

UPDATE_PRODUCT = "UPDATE products SET name = $2, category = $3, gtin = $4 WHERE id = $1"

LOCK_PRODUCT = "SELECT FROM products WHERE id = $1 FOR UPDATE"

PRODUCT_IN_USE = """
SELECT EXISTS (SELECT FROM batches WHERE product_id = $1) OR EXISTS (SELECT FROM certifications WHERE product_id = $1)
"""

DELETE_PRODUCT = "DELETE FROM products WHERE id = $1"

_CERTIFICATION_COLUMNS = """
    c.id, c.kind, c.number, c.valid_from, c.valid_to, c.status, c.status_reason, c.status_changed_at, c.created_at,
    c.producer_id,
    p.credit_code, p.name AS producer_name, p.region_code,
    pd.id AS product_id, pd.name AS product_name, pd.category
"""
_CERTIFICATION_JOINS = """
  FROM certifications c
  JOIN producers p ON p.id = c.producer_id
  JOIN regions r ON r.code = p.region_code
  LEFT JOIN products pd ON pd.id = c.product_id
"""

CERTIFICATION = f"SELECT {_CERTIFICATION_COLUMNS} {_CERTIFICATION_JOINS} WHERE c.id = $1"

# $1 region, $2 credit code, $3 kind: each NULL for "any".
LIST_CERTIFICATIONS = f"""
SELECT {_CERTIFICATION_COLUMNS} {_CERTIFICATION_JOINS}
 WHERE ($1::char(6) IS NULL OR r.code = $1 OR r.prefecture_code = $1 OR r.province_code = $1)
   AND ($2::char(18) IS NULL OR p.credit_code = $2)
   AND ($3::text IS NULL OR c.kind = $3)
   AND c.id > $4
 ORDER BY c.id
 LIMIT $5
"""

INSERT_CERTIFICATION = """
INSERT INTO certifications (kind, number, producer_id, product_id, valid_from, valid_to)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (kind, number) DO NOTHING
RETURNING id
"""

# A revoked certification stays revoked (a new application is a new certification): no row, 409.
UPDATE_CERTIFICATION = """
UPDATE certifications
   SET number = $2, product_id = $3, valid_from = $4, valid_to = $5, status = $6, status_reason = $7,
       status_changed_at = CASE WHEN status = $6 THEN status_changed_at ELSE now() END
 WHERE id = $1 AND (status = $6 OR status <> 'revoked')
"""

DELETE_CERTIFICATION = "DELETE FROM certifications WHERE id = $1"

BATCHES_OF_PRODUCERS = "SELECT id FROM batches WHERE producer_id = ANY ($1::bigint[])"

# --- bodies --------------------------------------------------------------------------------------

MAX_ID = 2**63 - 1
PAGE_DEFAULT = 100
PAGE_MAX = 1_000
INLINE_INVALIDATIONS_MAX = 100  # more batches than this are dropped from the cache in the background
EARLIEST_CERTIFICATION_DATE = dt.date(1990, 1, 1)
LATEST_CERTIFICATION_DATE = dt.date(2100, 12, 31)

ProducerKind = Literal["enterprise", "cooperative", "family_farm", "individual"]
CertificationKind = Literal["green", "organic", "gi"]
# What the regulator decides; `expired` is no decision but the calendar's (certification_status).
CertificationDecision = Literal["valid", "suspended", "revoked"]
CertificationStatus = Literal["valid", "suspended", "revoked", "expired"]
StatusReason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), Printable]
CertificationNumber = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), Printable]


def _certification_date(value: dt.date) -> dt.date:
    if not EARLIEST_CERTIFICATION_DATE <= value <= LATEST_CERTIFICATION_DATE:
        raise ValueError(f"must be between {EARLIEST_CERTIFICATION_DATE} and {LATEST_CERTIFICATION_DATE}")
    return value


CertificationDate = Annotated[dt.date, AfterValidator(_certification_date)]


class ProducerPatch(Body):
    name: Name | None = None
    kind: ProducerKind | None = None
    region_code: RegionCode | None = None
    contact: ContactText | None = None
    tags: ProducerTags | None = None  # the regulator's to keep, as kind and region


class ProductPatch(Body):
    """Checked once merged with the stored product, as a ProductIn."""

    name: Name | None = None
    category: Category | None = None
    gtin: Annotated[str, StringConstraints(strip_whitespace=True, max_length=14)] | None = None  # null clears it


class ProductRef(Body):
    name: Name
    category: Category


class CertificationIn(Body):
    kind: CertificationKind
    number: CertificationNumber
    credit_code: CreditCode
    product: ProductRef | None = None  # null: the certification covers the producer
    valid_from: CertificationDate
    valid_to: CertificationDate

    @model_validator(mode="after")
    def _ordered(self) -> CertificationIn:
        if self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self


class CertificationPatch(Body):
    number: CertificationNumber | None = None
    product: ProductRef | None = None  # null: the certification covers the producer
    valid_from: CertificationDate | None = None
    valid_to: CertificationDate | None = None
    status: CertificationDecision | None = None  # suspend, revoke, or lift a suspension
    status_reason: StatusReason | None = None  # only with status

    @model_validator(mode="after")
    def _reason_with_status(self) -> CertificationPatch:
        if self.status_reason is not None and self.status is None:
            raise ValueError("status_reason is given only with status")
        return self


# --- access --------------------------------------------------------------------------------------


def _is_regulator_of(principal: Principal, region_code: str) -> bool:
    return principal.is_admin or principal.covers_region(region_code)


def _is_own(principal: Principal, credit_code: str) -> bool:
    return principal.role == "producer" and principal.scope == credit_code


def _check_read(principal: Principal, producer: asyncpg.Record) -> None:
    if not (_is_regulator_of(principal, producer["region_code"]) or _is_own(principal, producer["credit_code"])):
        raise forbidden("只能查看本辖区或本主体的记录")


def _check_registry_write(principal: Principal, producer: asyncpg.Record) -> None:
    if not _is_regulator_of(principal, producer["region_code"]):
        raise forbidden(f"只有管理员或行政区划 {producer['region_code']} 的监管部门可以修改该记录")


def _check_product_write(principal: Principal, producer: asyncpg.Record) -> None:
    if not (_is_regulator_of(principal, producer["region_code"]) or _is_own(principal, producer["credit_code"])):
        raise forbidden("只能管理本辖区或本主体的产品")


# --- helpers -------------------------------------------------------------------------------------


def _pool(request: Request) -> asyncpg.Pool:
    return worker(request).pool


def _credit_code(request: Request) -> str:
    value = normalise_credit_code(request.path_params["credit_code"])
    if not is_valid_credit_code(value):
        raise invalid("not a valid unified social credit code (GB 32100-2015 check character)", field="credit_code")
    return value


async def _producer(conn: asyncpg.Pool | asyncpg.pool.PoolConnectionProxy, credit_code: str) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(PRODUCER, credit_code)
    if row is None:
        raise Problem(404, "unknown_producer", "主体未登记", f"统一社会信用代码 {credit_code} 尚未登记")
    return row


async def _record(pool: asyncpg.Pool, query: str, record_id: int, code: str, what: str) -> asyncpg.Record:
    row: asyncpg.Record | None = None
    if record_id <= MAX_ID:  # a longer number in the path is no id of ours (and no bigint)
        row = await pool.fetchrow(query, record_id)
    if row is None:
        raise Problem(404, code, f"{what}不存在", f"{what} {record_id} 不存在")
    return row


def _producer_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "credit_code": row["credit_code"],
        "name": row["name"],
        "kind": row["kind"],
        "kind_label": PRODUCER_KIND_LABELS.get(row["kind"], row["kind"]),
        "region_code": row["region_code"],
        "region_name": row["region_name"],
        "contact": row["contact"],
        "batch_count": row["batch_count"],
        "last_issued_at": row["last_issued_at"],
        "traced": row["is_traced"],
        "tags": row["tags"],
        "created_at": row["created_at"],
    }


def _product_json(row: asyncpg.Record) -> dict[str, Any]:
    category = row["category"]
    return {
        "id": row["id"],
        "name": row["name"],
        "category": category,
        "category_label": CATEGORIES[category].label if category in CATEGORIES else category,
        "gtin": row["gtin"].strip() if row["gtin"] else None,
        "producer_credit_code": row["credit_code"],
        "last_issued_at": row["last_issued_at"],
        "created_at": row["created_at"],
    }


def certification_status(stored: str, valid_to: dt.date, *, today: dt.date) -> CertificationStatus:
    """The state a certification is in on `today`: the regulator's decision, else expired after valid_to."""
    if stored != "valid":
        return "revoked" if stored == "revoked" else "suspended"
    return "expired" if valid_to < today else "valid"


def _certification_json(row: asyncpg.Record) -> dict[str, Any]:
    status = certification_status(row["status"], row["valid_to"], today=china_today())
    product = None
    if row["product_id"] is not None:
        product = {"id": row["product_id"], "name": row["product_name"], "category": row["category"]}
    return {
        "id": row["id"],
        "kind": row["kind"],
        "kind_label": CERTIFICATION_LABELS.get(row["kind"], row["kind"]),
        "number": row["number"],
        "valid_from": row["valid_from"],
        "valid_to": row["valid_to"],
        "status": status,
        "status_label": CERTIFICATION_STATUS_LABELS[status],
        "status_reason": row["status_reason"],
        "status_changed_at": row["status_changed_at"],
        "producer": {
            "credit_code": row["credit_code"],
            "name": row["producer_name"],
            "region_code": row["region_code"],
        },
        "product": product,
        "created_at": row["created_at"],
    }


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"count": len(items), "items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


def _optional_credit_code(request: Request) -> str | None:
    text = request.query_params.get("credit_code")
    if not text:
        return None
    value = normalise_credit_code(text)
    if not is_valid_credit_code(value):
        raise invalid("not a valid unified social credit code", field="credit_code")
    return value


def _choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    return choice_param(request, name, choices) if request.query_params.get(name) else None  # empty: absent


async def _listing_scope(request: Request, principal: Principal) -> tuple[str | None, str | None]:
    """(region, credit code) a listing is limited to: what the caller asked for, within what it may see."""
    region = region_param(request) if request.query_params.get("region") else None
    credit_code = _optional_credit_code(request)
    if principal.role == "producer":
        if credit_code not in (None, principal.scope) or region is not None:
            raise forbidden("只能查看本主体的记录")
        return None, principal.scope
    if principal.role == "regulator":
        region = region or principal.scope
        if not principal.covers_region(region):
            raise forbidden(f"只能查看本辖区的记录（{region} 不在令牌的辖区内）")
    elif not principal.is_admin:
        raise forbidden("需要管理员、监管部门或生产经营主体令牌")
    if region is not None:
        await region_or_404(_pool(request), region)
    return region, credit_code


async def forget_documents(request: Request, producer_ids: list[int]) -> None:
    """Drop the cached documents of the producers' batches, which show their name, products and certifications.

    Best effort, never failing the caller: the change is committed, and a document lives at most its TTL.
    A few batches are dropped before the answer (and once more a moment later, see invalidate_batch); many
    in the background.
    """
    try:
        rows = await _pool(request).fetch(BATCHES_OF_PRODUCERS, producer_ids)
    except POSTGRES_AWAY_ERRORS as exc:
        logger.warning("cached documents of producers %s not dropped: %r", producer_ids[:10], exc)
        return
    if len(rows) > INLINE_INVALIDATIONS_MAX:
        state = worker(request)
        state.background.spawn(_forget_batches(state.cache, [r["id"] for r in rows]))
        return
    for row in rows:
        try:
            await invalidate_batch(request, row["id"])
        except Exception as exc:  # Redis unreachable: the documents expire on their own
            logger.warning("cached documents of batch %d not dropped: %r", row["id"], exc)
            return


def forget_documents_later(request: Request, producer_ids: list[int]) -> None:
    """`forget_documents` in the background (after a bulk change; the answer does not wait for it)."""
    state = worker(request)
    state.background.spawn(forget_producer_documents(state.pool, state.cache, producer_ids))


async def forget_producer_documents(conn: Executor, cache: DocumentCache, producer_ids: list[int]) -> int:
    """Drop the cached documents of the producers' batches; how many batches. Best effort (logs, never raises)."""
    try:
        rows = await conn.fetch(BATCHES_OF_PRODUCERS, producer_ids)
    except POSTGRES_AWAY_ERRORS as exc:
        logger.warning("cached documents of producers %s not dropped: %r", producer_ids[:10], exc)
        return 0
    return await _forget_batches(cache, [r["id"] for r in rows])


async def _forget_batches(cache: DocumentCache, batch_ids: list[int]) -> int:
    for done, batch_id in enumerate(batch_ids):
        try:
            await cache.invalidate_batch(batch_id)
        except Exception as exc:  # a background task has no caller to tell
            logger.warning("cached documents of %d batches not dropped: %r", len(batch_ids) - done, exc)
            return done
    return len(batch_ids)


# --- producers -----------------------------------------------------------------------------------


async def list_producers(request: Request) -> Response:
    """GET /api/v1/producers[?region=&kind=&credit_code=&after=&limit=]"""
    principal = await authenticate(request)
    region, credit_code = await _listing_scope(request, principal)
    kind = _choice(request, "kind", tuple(PRODUCER_KIND_LABELS))
    after = int_param(request, "after", default=0, low=0, high=2**62)
    limit = int_param(request, "limit", default=PAGE_DEFAULT, low=1, high=PAGE_MAX)
    rows = await _pool(request).fetch(LIST_PRODUCERS, region, kind, credit_code, after, limit)
    return ORJSONResponse(_page([_producer_json(row) for row in rows], limit))


async def get_producer(request: Request) -> Response:
    """GET /api/v1/producers/{credit_code}"""
    principal = await authenticate(request)
    producer = await _producer(_pool(request), _credit_code(request))
    _check_read(principal, producer)
    return ORJSONResponse(_producer_json(producer))


async def update_producer(request: Request) -> Response:
    """PATCH /api/v1/producers/{credit_code}: name and contact (the producer itself too), kind and region
    (admin, or the regulator of both the old and the new region)."""
    principal = await authenticate(request)
    body = await read_json(request, ProducerPatch)
    pool = _pool(request)
    producer = await _producer(pool, _credit_code(request))
    if body.kind is not None or body.region_code is not None or body.tags is not None:
        _check_registry_write(principal, producer)
    elif not (_is_regulator_of(principal, producer["region_code"]) or _is_own(principal, producer["credit_code"])):
        raise forbidden("只能修改本辖区或本主体的记录")
    region_code = body.region_code or producer["region_code"]
    if region_code != producer["region_code"]:
        if not _is_regulator_of(principal, region_code):
            raise forbidden(f"无权将主体迁入行政区划 {region_code}")
        region = await pool.fetchrow(queries.REGION, region_code)
        if region is None or region["level"] == 1:
            raise invalid("region_code must be a county-level GB/T 2260 code", field="region_code")
    await pool.execute(
        UPDATE_PRODUCER,
        producer["id"],
        body.name if body.name is not None else producer["name"],
        body.kind or producer["kind"],
        region_code,
        body.contact if body.contact is not None else producer["contact"],
        body.tags if body.tags is not None else producer["tags"],
    )
    await forget_documents(request, [producer["id"]])
    return ORJSONResponse(_producer_json(await _producer(pool, producer["credit_code"])))


async def delete_producer(request: Request) -> Response:
    """DELETE /api/v1/producers/{credit_code} (admin, or regulator): only a producer without batches, with its
    products and certifications; one with batches stays, since its codes are printed on goods."""
    principal = await authenticate(request)
    pool = _pool(request)
    producer = await _producer(pool, _credit_code(request))
    _check_registry_write(principal, producer)
    async with pool.acquire() as conn, conn.transaction():
        # Lock the row so that no batch is registered for it while it goes.
        await conn.execute(LOCK_PRODUCER, producer["id"])
        if await conn.fetchval(PRODUCER_HAS_BATCHES, producer["id"]):
            raise Problem(409, "producer_has_batches", "主体已有批次", "该主体已登记批次、已有追溯码，不能删除")
        await conn.execute(DELETE_PRODUCER_CERTIFICATIONS, producer["id"])
        await conn.execute(DELETE_PRODUCER_PRODUCTS, producer["id"])
        await conn.execute(DELETE_PRODUCER, producer["id"])
    return Response(status_code=204)


# --- products ------------------------------------------------------------------------------------


async def list_products(request: Request) -> Response:
    """GET /api/v1/producers/{credit_code}/products"""
    principal = await authenticate(request)
    pool = _pool(request)
    producer = await _producer(pool, _credit_code(request))
    _check_read(principal, producer)
    rows = await pool.fetch(PRODUCTS_OF_PRODUCER, producer["id"])
    return ORJSONResponse({"count": len(rows), "items": [_product_json(row) for row in rows]})


async def create_product(request: Request) -> Response:
    """POST /api/v1/producers/{credit_code}/products {name, category, gtin}"""
    principal = await authenticate(request)
    body = await read_json(request, ProductIn)
    pool = _pool(request)
    producer = await _producer(pool, _credit_code(request))
    _check_product_write(principal, producer)
    product_id = await pool.fetchval(INSERT_PRODUCT, producer["id"], body.name, body.category, body.gtin)
    if product_id is None:
        raise Problem(409, "product_exists", "产品已存在", f"该主体已有品类为 {body.category} 的产品“{body.name}”")
    return ORJSONResponse(
        _product_json(await _record(pool, PRODUCT, product_id, "unknown_product", "产品")), status_code=201
    )


def _product_id(request: Request) -> int:
    value: int = request.path_params["id"]
    return value


async def _product_for(request: Request, principal: Principal, *, is_write: bool) -> asyncpg.Record:
    pool = _pool(request)
    product = await _record(pool, PRODUCT, _product_id(request), "unknown_product", "产品")
    if is_write:
        _check_product_write(principal, product)
    else:
        _check_read(principal, product)
    return product


async def get_product(request: Request) -> Response:
    """GET /api/v1/products/{id}"""
    principal = await authenticate(request)
    return ORJSONResponse(_product_json(await _product_for(request, principal, is_write=False)))


async def update_product(request: Request) -> Response:
    """PATCH /api/v1/products/{id} {name?, category?, gtin?}"""
    principal = await authenticate(request)
    body = await read_json(request, ProductPatch)
    product = await _product_for(request, principal, is_write=True)
    stored_gtin = product["gtin"].strip() if product["gtin"] else None
    try:
        merged = ProductIn(
            name=body.name or product["name"],
            category=body.category or product["category"],
            gtin=body.gtin if "gtin" in body.model_fields_set else stored_gtin,
        )
    except ValidationError as exc:
        field = ".".join(str(part) for part in exc.errors()[0]["loc"])
        raise invalid(f"{field}: {exc.errors()[0]['msg']}", field=field) from None
    pool = _pool(request)
    try:
        await pool.execute(UPDATE_PRODUCT, product["id"], merged.name, merged.category, merged.gtin)
    except asyncpg.UniqueViolationError:
        raise Problem(409, "product_exists", "产品已存在", "该主体已有同名同品类的产品") from None
    await forget_documents(request, [product["producer_id"]])
    return ORJSONResponse(_product_json(await _record(pool, PRODUCT, product["id"], "unknown_product", "产品")))


async def delete_product(request: Request) -> Response:
    """DELETE /api/v1/products/{id}: only a product without batches and certifications."""
    principal = await authenticate(request)
    product = await _product_for(request, principal, is_write=True)
    async with _pool(request).acquire() as conn, conn.transaction():
        await conn.execute(LOCK_PRODUCT, product["id"])
        if await conn.fetchval(PRODUCT_IN_USE, product["id"]):
            raise Problem(409, "product_in_use", "产品使用中", "该产品已有批次或认证，不能删除")
        await conn.execute(DELETE_PRODUCT, product["id"])
    return Response(status_code=204)


# --- certifications ------------------------------------------------------------------------------


async def list_certifications(request: Request) -> Response:
    """GET /api/v1/certifications[?region=&credit_code=&kind=&after=&limit=]"""
    principal = await authenticate(request)
    region, credit_code = await _listing_scope(request, principal)
    kind = _choice(request, "kind", tuple(CERTIFICATION_LABELS))
    after = int_param(request, "after", default=0, low=0, high=2**62)
    limit = int_param(request, "limit", default=PAGE_DEFAULT, low=1, high=PAGE_MAX)
    rows = await _pool(request).fetch(LIST_CERTIFICATIONS, region, credit_code, kind, after, limit)
    return ORJSONResponse(_page([_certification_json(row) for row in rows], limit))


async def _product_of(conn: asyncpg.pool.PoolConnectionProxy, producer_id: int, ref: ProductRef | None) -> int | None:
    if ref is None:
        return None
    product_id: int = await conn.fetchval(queries.UPSERT_PRODUCT, producer_id, ref.name, ref.category, None)
    return product_id


async def create_certification(request: Request) -> Response:
    """POST /api/v1/certifications (admin, or regulator of the producer's region)"""
    principal = await authenticate(request)
    body = await read_json(request, CertificationIn)
    pool = _pool(request)
    producer = await _producer(pool, body.credit_code)
    _check_registry_write(principal, producer)
    async with pool.acquire() as conn, conn.transaction():
        product_id = await _product_of(conn, producer["id"], body.product)
        certification_id = await conn.fetchval(
            INSERT_CERTIFICATION, body.kind, body.number, producer["id"], product_id, body.valid_from, body.valid_to
        )
        if certification_id is None:
            raise Problem(
                409, "certification_exists", "认证已登记", f"{CERTIFICATION_LABELS[body.kind]}证书 {body.number} 已登记"
            )
    await forget_documents(request, [producer["id"]])
    return ORJSONResponse(
        _certification_json(await _record(pool, CERTIFICATION, certification_id, "unknown_certification", "认证")),
        status_code=201,
    )


async def _certification_for(request: Request, principal: Principal, *, is_write: bool) -> asyncpg.Record:
    certification_id: int = request.path_params["id"]
    certification = await _record(_pool(request), CERTIFICATION, certification_id, "unknown_certification", "认证")
    if is_write:
        _check_registry_write(principal, certification)
    else:
        _check_read(principal, certification)
    return certification


async def get_certification(request: Request) -> Response:
    """GET /api/v1/certifications/{id}"""
    principal = await authenticate(request)
    return ORJSONResponse(_certification_json(await _certification_for(request, principal, is_write=False)))


async def update_certification(request: Request) -> Response:
    """PATCH /api/v1/certifications/{id} {number?, product?, valid_from?, valid_to?, status?, status_reason?}:
    renewal, correction, suspension (suspended), revocation (revoked, final) or lifting a suspension (valid)."""
    principal = await authenticate(request)
    body = await read_json(request, CertificationPatch)
    certification = await _certification_for(request, principal, is_write=True)
    valid_from = body.valid_from or certification["valid_from"]
    valid_to = body.valid_to or certification["valid_to"]
    if valid_to < valid_from:
        raise invalid("valid_to is before valid_from", field="valid_to")
    status = body.status or certification["status"]
    reason = body.status_reason
    if reason is None and status == certification["status"]:
        reason = certification["status_reason"]  # the same state keeps its reason; a new one without any clears it
    pool = _pool(request)
    try:
        async with pool.acquire() as conn, conn.transaction():
            product_id = certification["product_id"]
            if "product" in body.model_fields_set:
                product_id = await _product_of(conn, certification["producer_id"], body.product)
            updated = await conn.execute(
                UPDATE_CERTIFICATION, certification["id"], body.number or certification["number"], product_id,
                valid_from, valid_to, status, reason,
            )  # fmt: skip
            if updated == "UPDATE 0":
                raise Problem(409, "certification_revoked", "认证已撤销", "已撤销的认证不能恢复或暂停，须重新申请认证")
    except asyncpg.UniqueViolationError:
        raise Problem(409, "certification_exists", "认证已登记", f"证书编号 {body.number} 已登记") from None
    await forget_documents(request, [certification["producer_id"]])
    return ORJSONResponse(
        _certification_json(await _record(pool, CERTIFICATION, certification["id"], "unknown_certification", "认证"))
    )


async def delete_certification(request: Request) -> Response:
    """DELETE /api/v1/certifications/{id}"""
    principal = await authenticate(request)
    certification = await _certification_for(request, principal, is_write=True)
    await _pool(request).execute(DELETE_CERTIFICATION, certification["id"])
    await forget_documents(request, [certification["producer_id"]])
    return Response(status_code=204)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/producers", list_producers, methods=["GET"]),
    Route("/api/v1/producers/{credit_code}", get_producer, methods=["GET"]),
    Route("/api/v1/producers/{credit_code}", update_producer, methods=["PATCH"]),
    Route("/api/v1/producers/{credit_code}", delete_producer, methods=["DELETE"]),
    Route("/api/v1/producers/{credit_code}/products", list_products, methods=["GET"]),
    Route("/api/v1/producers/{credit_code}/products", create_product, methods=["POST"]),
    Route("/api/v1/products/{id:int}", get_product, methods=["GET"]),
    Route("/api/v1/products/{id:int}", update_product, methods=["PATCH"]),
    Route("/api/v1/products/{id:int}", delete_product, methods=["DELETE"]),
    Route("/api/v1/certifications", list_certifications, methods=["GET"]),
    Route("/api/v1/certifications", create_certification, methods=["POST"]),
    Route("/api/v1/certifications/{id:int}", get_certification, methods=["GET"]),
    Route("/api/v1/certifications/{id:int}", update_certification, methods=["PATCH"]),
    Route("/api/v1/certifications/{id:int}", delete_certification, methods=["DELETE"]),
]
