"""Builders of test data through the public API, with random identities."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from tests.conftest import Service, random_credit_code


async def register_producer(service: Service, *, region: str = "630121", kind: str = "cooperative") -> str:
    credit_code = random_credit_code(region)
    response = await service.client.post(
        "/api/v1/producers",
        json={
            "credit_code": credit_code,
            "name": f"测试合作社{secrets.token_hex(3)}",
            "kind": kind,
            "region_code": region,
            "contact": "0971-0000000",
        },
        headers=service.admin_headers,
    )
    assert response.status_code == 201, response.text
    return credit_code


def batch_body(credit_code: str, **overrides: Any) -> dict[str, Any]:
    today = dt.date.today()
    body: dict[str, Any] = {
        "producer_credit_code": credit_code,
        "product": {"name": "大通牦牛肉", "category": "yak", "gtin": None},
        "lot": f"L{secrets.token_hex(4)}",
        "quantity": 1200,
        "unit": "kg",
        "produced_on": (today - dt.timedelta(days=3)).isoformat(),
        "origin": "青海省西宁市大通县",
        "expires_on": None,
        "inspection": {
            "result": "pass",
            "method": "快速检测",
            "items": ["克伦特罗", {"name": "莱克多巴胺", "result": "pass"}],
            "inspected_on": (today - dt.timedelta(days=2)).isoformat(),
        },
        "certificate": {"kind": "承诺达标合格证", "basis": "self_test", "issued_on": today.isoformat()},
    }
    body.update(overrides)
    return body


async def register_batch(service: Service, credit_code: str | None = None, **overrides: Any) -> dict[str, Any]:
    credit_code = credit_code or await register_producer(service)
    response = await service.client.post(
        "/api/v1/batches", json=batch_body(credit_code, **overrides), headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
