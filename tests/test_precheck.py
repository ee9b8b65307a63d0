"""The certification pre-check: registered, the producer's own product, traced within the window; scopes."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.conftest import Service, random_credit_code
from tests.helpers import register_batch, register_producer

HAIXI, DELINGHA = "632800", "632802"
YAK_NAME, GOJI_NAME = "德令哈牦牛肉", "柴达木枸杞"
YAK = {"name": YAK_NAME, "category": "yak", "gtin": None}
GOJI = {"name": GOJI_NAME, "category": "goji", "gtin": None}


async def _token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def _product_ids(service: Service, credit_code: str) -> dict[str, int]:
    response = await service.client.get(f"/api/v1/producers/{credit_code}/products", headers=service.admin_headers)
    return {p["name"]: p["id"] for p in response.json()["items"]}


async def _precheck(service: Service, credit_code: str, product_id: Any, headers: dict[str, str] | None = None) -> Any:
    return await service.client.get(
        "/api/v1/certifications/precheck",
        params={"credit_code": credit_code, "product_id": product_id},
        headers=headers or service.admin_headers,
    )


async def _traced_producer(service: Service) -> tuple[str, dict[str, int]]:
    """A producer of DELINGHA with a traced product (YAK) and one never traced (GOJI)."""
    credit_code = await register_producer(service, region=DELINGHA)
    await register_batch(service, credit_code, product=YAK)
    created = await service.client.post(
        f"/api/v1/producers/{credit_code}/products", json=GOJI, headers=service.admin_headers
    )
    assert created.status_code == 201, created.text
    return credit_code, await _product_ids(service, credit_code)


async def test_a_traced_product_of_a_registered_producer_is_eligible(service: Service) -> None:
    credit_code, products = await _traced_producer(service)

    response = await _precheck(service, credit_code, products[YAK_NAME])

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["eligible"] is True and body["reasons"] == []
    assert body["product_name"] == YAK_NAME and body["last_issued_at"] is not None
    assert body["traced_window_months"] == 12


async def test_reasons_against_an_application(service: Service, pg: asyncpg.Connection) -> None:
    credit_code, products = await _traced_producer(service)
    other, others = await _traced_producer(service)
    lapsed, lapsed_products = await _traced_producer(service)
    await pg.execute(
        """UPDATE batches b SET created_at = now() - interval '13 months'
             FROM producers p WHERE p.id = b.producer_id AND p.credit_code = $1""",
        lapsed,
    )

    answers = {
        "never_traced": await _precheck(service, credit_code, products[GOJI_NAME]),
        "another_producers": await _precheck(service, credit_code, others[YAK_NAME]),
        "no_such_product": await _precheck(service, credit_code, 10**17),
        "unregistered": await _precheck(service, random_credit_code(DELINGHA), products[YAK_NAME]),
        "lapsed": await _precheck(service, lapsed, lapsed_products[YAK_NAME]),
    }

    assert {name: [r["code"] for r in a.json()["reasons"]] for name, a in answers.items()} == {
        "never_traced": ["never_traced"],
        "another_producers": ["product_not_of_producer"],
        "no_such_product": ["product_not_of_producer"],
        "unregistered": ["not_registered"],
        "lapsed": ["lapsed"],
    }
    assert all(a.status_code == 200 and a.json()["eligible"] is False for a in answers.values())
    assert answers["another_producers"].json()["product_name"] is None  # nothing of another's product is told
    assert "12 个月" in answers["lapsed"].json()["reasons"][0]["message"]
    assert answers["never_traced"].json()["reasons"][0]["message"] == "该产品从未登记批次、获取追溯码，尚未纳入追溯管理"


async def test_precheck_scopes(service: Service) -> None:
    credit_code, products = await _traced_producer(service)
    other = await register_producer(service, region=DELINGHA)
    product_id = products[YAK_NAME]
    allowed = {
        "region": await _token(service, "regulator", DELINGHA),
        "prefecture": await _token(service, "regulator", HAIXI),
        "itself": await _token(service, "producer", credit_code),
    }
    refused = {
        "other_region": await _token(service, "regulator", "630100"),
        "other_producer": await _token(service, "producer", other),
    }

    answers = {name: await _precheck(service, credit_code, product_id, headers) for name, headers in allowed.items()}
    refusals = {name: await _precheck(service, credit_code, product_id, headers) for name, headers in refused.items()}
    anonymous = await service.client.get(
        "/api/v1/certifications/precheck", params={"credit_code": credit_code, "product_id": product_id}
    )

    assert {name: (a.status_code, a.json()["eligible"]) for name, a in answers.items()} == {
        name: (200, True) for name in allowed
    }
    assert {name: r.status_code for name, r in refusals.items()} == {name: 403 for name in refused}
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"product_id": "1"}, "credit_code", id="no-credit-code"),
        pytest.param({"credit_code": "91630000000000000X", "product_id": "1"}, "credit_code", id="check-character"),
        pytest.param({"credit_code": None}, "product_id", id="no-product"),
        pytest.param({"credit_code": None, "product_id": "abc"}, "product_id", id="not-a-number"),
        pytest.param({"credit_code": None, "product_id": "0"}, "product_id", id="zero"),
        pytest.param({"credit_code": None, "product_id": "9" * 30}, "product_id", id="too-long"),
    ],
)
async def test_precheck_is_validated(service: Service, params: dict[str, str | None], field: str) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    params = {key: credit_code if value is None else value for key, value in params.items()}

    response = await service.client.get("/api/v1/certifications/precheck", params=params, headers=service.admin_headers)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input" and response.json()["field"] == field
