from __future__ import annotations

import pytest

from codegen.format import is_valid, region_of, type_of
from codegen.longform import parse_long
from resolver.state import app_worker
from tests.conftest import Service, random_credit_code
from tests.helpers import batch_body, register_batch, register_producer


async def _token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _producer(credit_code: str, region: str = "632802") -> dict[str, str]:
    return {"credit_code": credit_code, "name": "德令哈枸杞合作社", "kind": "cooperative", "region_code": region}


async def test_token_is_stored_hashed(service: Service) -> None:
    headers = await _token(service, "regulator", "632800")
    token = headers["Authorization"].removeprefix("Bearer ")

    async with app_worker(service.app).pool.acquire() as conn:
        stored = await conn.fetch("SELECT token_hash::text AS h FROM tokens")

    assert all(token not in row["h"] for row in stored)


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        pytest.param("regulator", "999999", id="unknown-region"),
        pytest.param("producer", "91630121MA7XXXXXXX", id="bad-credit-code"),
        pytest.param("gate", "market one", id="bad-gate"),
        pytest.param("admin", "630000", id="admin-with-scope"),
        pytest.param("emperor", "", id="unknown-role"),
    ],
)
async def test_token_scope_is_checked(service: Service, role: str, scope: str) -> None:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"


async def test_only_admin_issues_tokens(service: Service) -> None:
    regulator = await _token(service, "regulator", "630000")

    response = await service.client.post("/api/v1/tokens", json={"role": "admin"}, headers=regulator)

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer tc_not-a-token"}, id="unknown"),
        pytest.param({"Authorization": "Basic YWRtaW46YWRtaW4="}, id="basic"),
    ],
)
async def test_write_without_valid_token_is_401(service: Service, headers: dict[str, str]) -> None:
    response = await service.client.post("/api/v1/producers", json=_producer(random_credit_code()), headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_regulator_registers_producers_only_in_its_region(service: Service) -> None:
    haixi = await _token(service, "regulator", "632800")  # 海西州: a prefecture covers its counties

    inside = await service.client.post("/api/v1/producers", json=_producer(random_credit_code()), headers=haixi)
    outside = await service.client.post(
        "/api/v1/producers", json=_producer(random_credit_code(), "630121"), headers=haixi
    )

    assert inside.status_code == 201
    assert inside.json()["region_name"] == "德令哈市"
    assert outside.status_code == 403


async def test_duplicate_producer_is_409(service: Service) -> None:
    body = _producer(random_credit_code())
    first = await service.client.post("/api/v1/producers", json=body, headers=service.admin_headers)
    second = await service.client.post("/api/v1/producers", json=body, headers=service.admin_headers)

    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json()["code"] == "producer_exists"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"credit_code": "91630121MA7XXXXXXX"}, "credit_code", id="check-character"),
        pytest.param({"region_code": "630000"}, "region_code", id="province-not-county"),
        pytest.param({"region_code": "639999"}, "region_code", id="unknown-region"),
        pytest.param({"kind": "state_farm"}, "kind", id="kind"),
        pytest.param({"name": "合作社\x00"}, "name", id="nul-in-name"),
        pytest.param({"name": ""}, "name", id="empty-name"),
    ],
)
async def test_invalid_producer_is_422_with_field(service: Service, change: dict[str, str], field: str) -> None:
    body = {**_producer(random_credit_code()), **change}

    response = await service.client.post("/api/v1/producers", json=body, headers=service.admin_headers)

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "invalid_input"
    assert field in problem.get("field", "") or any(e["field"] == field for e in problem.get("errors", []))
    async with app_worker(service.app).pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM producers WHERE credit_code = $1", body["credit_code"]) == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        pytest.param(b"{not json", "application/json", 400, "malformed_json", id="broken-json"),
        pytest.param(b'{"name": "\xff\xfe"}', "application/json", 400, "malformed_json", id="invalid-utf8"),
        pytest.param(b"[1, 2]", "application/json", 422, "invalid_input", id="not-an-object"),
        pytest.param(b"credit_code=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type", id="form"),
        pytest.param(b'{"a": "' + b"x" * 100_000 + b'"}', "application/json", 413, "payload_too_large", id="huge"),
    ],
)
async def test_bad_bodies_are_problems(
    service: Service, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = await service.client.post(
        "/api/v1/producers", content=content, headers={**service.admin_headers, "Content-Type": content_type}
    )

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_batch_gets_code_of_its_county_and_long_form(service: Service) -> None:
    credit_code = await register_producer(service, region="632802")

    created = await register_batch(service, credit_code)

    code = created["trace_code"]
    assert is_valid(code) and type_of(code) == 1 and region_of(code) == "632802"
    assert created["url"] == f"https://trace.example.cn/t/{code}"
    long_code = created["long_code"]
    assert parse_long(long_code) == long_code
    assert long_code.startswith(f"1.2.{credit_code}.03010200.")  # type, cooperative, credit code, yak


async def test_producer_registers_its_own_batches_only(service: Service) -> None:
    own = await register_producer(service)
    other = await register_producer(service)
    headers = await _token(service, "producer", own)

    mine = await service.client.post("/api/v1/batches", json=batch_body(own), headers=headers)
    theirs = await service.client.post("/api/v1/batches", json=batch_body(other), headers=headers)

    assert mine.status_code == 201
    assert theirs.status_code == 403


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"quantity": 0}, "quantity", id="zero-quantity"),
        pytest.param({"quantity": "lots"}, "quantity", id="quantity-text"),
        pytest.param({"produced_on": "2026-13-01"}, "produced_on", id="bad-date"),
        pytest.param({"produced_on": "2999-01-01"}, "produced_on", id="future"),
        pytest.param({"expires_on": "2001-01-01"}, "", id="expires-before-produced"),
        pytest.param({"product": {"name": "牛肉", "category": "unicorn"}}, "product.category", id="category"),
        pytest.param(
            {"product": {"name": "牛肉", "category": "cattle", "gtin": "6901234567891"}}, "product.gtin", id="gtin"
        ),
        pytest.param({"lot": "x" * 65}, "lot", id="long-lot"),
        pytest.param({"surprise": 1}, "surprise", id="unknown-field"),
    ],
)
async def test_invalid_batch_is_422_and_writes_nothing(service: Service, change: dict[str, object], field: str) -> None:
    credit_code = await register_producer(service)

    response = await service.client.post(
        "/api/v1/batches", json=batch_body(credit_code, **change), headers=service.admin_headers
    )

    assert response.status_code == 422, response.text
    assert any(e["field"] == field for e in response.json()["errors"])
    async with app_worker(service.app).pool.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM batches b JOIN producers p ON p.id = b.producer_id WHERE p.credit_code = $1",
            credit_code,
        )
    assert count == 0


async def test_batch_of_unknown_producer_is_422(service: Service) -> None:
    response = await service.client.post(
        "/api/v1/batches", json=batch_body(random_credit_code()), headers=service.admin_headers
    )

    assert response.status_code == 422
    assert response.json()["code"] == "unknown_producer"
