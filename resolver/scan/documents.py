"""The resolved document of a code, built from the one row that `queries.DOCUMENT_BY_CODE` returns.

What is built and kept is the document without the members of the code it answers (`code`, `type`, `url`):
every answer puts its own code's in front (resolver.scan.resolve), so that all the package codes of a batch share
the batch's one document."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import asyncpg

from cache.keys import DOCUMENT_TTL_S
from resolver.categories import CATEGORIES

CHINA_TZ = dt.timezone(dt.timedelta(hours=8), "CST")  # China has one time zone and no daylight saving


def china_today() -> dt.date:
    return dt.datetime.now(CHINA_TZ).date()


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def status_of(row: asyncpg.Record, today: dt.date) -> str:
    if row["status"] == "recalled":
        return "recalled"
    expires_on: dt.date | None = row["expires_on"]
    if expires_on is not None and expires_on < today:
        return "expired"
    return "active"


def build_document(row: asyncpg.Record, *, today: dt.date) -> dict[str, Any]:
    """The JSON document of SPEC "Resolution" of a code whose batch `row` was read, without its code's members."""
    category = CATEGORIES.get(row["category"])
    recall = None
    if row["status"] == "recalled":
        recall = {"reason": row["recall_reason"], "at": row["recalled_at"]}
    return {
        "status": status_of(row, today),
        "product": {
            "name": row["product_name"],
            "category": row["category"],
            "category_label": category.label if category else row["category"],
            "gtin": row["gtin"].strip() if row["gtin"] else None,
        },
        "producer": {
            "name": row["producer_name"],
            "credit_code": row["credit_code"],
            "kind": row["producer_kind"],
            "contact": row["contact"],
            "region": {
                "code": row["region_code"],
                "county": row["county_name"],
                "prefecture": row["prefecture_name"],
                "province": row["province_name"],
            },
        },
        "batch": {
            "trace_code": row["trace_code"],
            "long_code": row["long_code"],
            "lot": row["lot"],
            "quantity": _number(row["quantity"]),
            "unit": row["unit"],
            "produced_on": row["produced_on"],
            "expires_on": row["expires_on"],
            "origin": row["origin"],
            "registered_at": row["created_at"],
        },
        "inspection": row["inspection"],
        "certificate": row["certificate"],
        "certifications": row["certifications"],
        "chain": row["chain"],
        "recall": recall,
    }


def cache_ttl_s(row: asyncpg.Record, today: dt.date, now: dt.datetime) -> int:
    """How long the document may be cached: never past the moment an expiry date would change its status."""
    expires_on: dt.date | None = row["expires_on"]
    if expires_on is None or expires_on < today:
        return DOCUMENT_TTL_S
    turns_expired = dt.datetime.combine(expires_on + dt.timedelta(days=1), dt.time(), CHINA_TZ)
    return max(1, min(DOCUMENT_TTL_S, int((turns_expired - now).total_seconds())))
