from __future__ import annotations

import csv
import io
from typing import Any

import asyncpg
import pytest

from tests.conftest import Service, random_credit_code
from tests.helpers import register_batch, register_producer
from tests.test_gate import token

BRAND = {"name": "大通牦牛", "kind": "regional_public", "region_code": "630121"}


async def _brand(service: Service, headers: dict[str, str] | None = None, **overrides: Any) -> int:
    response = await service.client.post(
        "/api/v1/brands", json={**BRAND, **overrides}, headers=headers or service.admin_headers
    )
    assert response.status_code == 201, response.text
    brand_id: int = response.json()["id"]
    return brand_id


async def _traced(service: Service, region: str = "630121") -> str:
    credit_code = await register_producer(service, region=region)
    await register_batch(service, credit_code)
    return credit_code


async def test_a_traced_producer_joins_and_shows_traced_until_it_lapses(
    service: Service, pg: asyncpg.Connection
) -> None:
    brand_id = await _brand(service)
    credit_code = await _traced(service)
    path = f"/api/v1/brands/{brand_id}/members"
    response = await service.client.post(path, json={"credit_code": credit_code}, headers=service.admin_headers)
    assert response.status_code == 201, response.text
    assert response.json()["traced"] is True
    again = await service.client.post(path, json={"credit_code": credit_code}, headers=service.admin_headers)
    assert again.status_code == 200 and again.json()["added_at"] == response.json()["added_at"]

    brand = (await service.client.get(f"/api/v1/brands/{brand_id}")).json()
    assert brand["kind_label"] == "区域公用品牌" and brand["region_name"] == "大通回族土族自治县"
    assert [(m["credit_code"], m["traced"]) for m in brand["members"]] == [(credit_code, True)]
    assert brand["members_traced"] == 1

    await pg.execute(
        "UPDATE producers SET last_issued_at = now() - interval '13 months' WHERE credit_code = $1", credit_code
    )
    brand = (await service.client.get(f"/api/v1/brands/{brand_id}")).json()
    (member,) = brand["members"]
    assert member["traced"] is False and brand["members_traced"] == 0
    assert [r["code"] for r in member["reasons"]] == ["lapsed"]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [pytest.param("unregistered", "not_registered", id="not-registered"),
     pytest.param("never_issued", "never_issued", id="never-issued"),
     pytest.param("lapsed", "lapsed", id="lapsed")],
)  # fmt: skip
async def test_a_producer_not_traced_is_refused_with_not_traced(
    service: Service, pg: asyncpg.Connection, setup: str, reason: str
) -> None:
    brand_id = await _brand(service)
    if setup == "unregistered":
        credit_code = random_credit_code()
    elif setup == "never_issued":
        credit_code = await register_producer(service)
    else:
        credit_code = await _traced(service)
        await pg.execute(
            "UPDATE producers SET last_issued_at = now() - interval '13 months' WHERE credit_code = $1", credit_code
        )
    response = await service.client.post(
        f"/api/v1/brands/{brand_id}/members", json={"credit_code": credit_code}, headers=service.admin_headers
    )
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["code"] == "not_traced"
    assert [r["code"] for r in problem["reasons"]] == [reason]
    assert all(r["message"] for r in problem["reasons"])
    assert (await service.client.get(f"/api/v1/brands/{brand_id}")).json()["members"] == []


async def test_a_regional_public_brand_takes_producers_of_its_region_only(service: Service) -> None:
    outsider = await _traced(service, region="630102")
    regional = await _brand(service)
    enterprise = await _brand(service, kind="enterprise", name="某牧业集团")
    body = {"credit_code": outsider}
    response = await service.client.post(f"/api/v1/brands/{regional}/members", json=body, headers=service.admin_headers)
    assert response.status_code == 409 and response.json()["code"] == "outside_region"
    response = await service.client.post(
        f"/api/v1/brands/{enterprise}/members", json=body, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text


async def test_a_regulator_manages_only_its_regions_brands(service: Service) -> None:
    county = await token(service, "regulator", "630121")
    prefecture = await token(service, "regulator", "630100")
    other = await token(service, "regulator", "630102")
    producer = await token(service, "producer", random_credit_code())
    brand_id = await _brand(service, county)
    await _brand(service, prefecture)
    for headers in (other, producer):
        response = await service.client.post("/api/v1/brands", json=BRAND, headers=headers)
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
    credit_code = await _traced(service)
    path = f"/api/v1/brands/{brand_id}/members"
    response = await service.client.post(path, json={"credit_code": credit_code}, headers=other)
    assert response.status_code == 403
    response = await service.client.post(path, json={"credit_code": credit_code}, headers=prefecture)
    assert response.status_code == 201, response.text
    response = await service.client.post(path, json={"credit_code": credit_code})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [pytest.param({**BRAND, "kind": "national"}, 422, "invalid_input", id="kind"),
     pytest.param({**BRAND, "region_code": "63012"}, 422, "invalid_input", id="region-format"),
     pytest.param({**BRAND, "region_code": "639999"}, 404, "unknown_region", id="region-unknown"),
     pytest.param({**BRAND, "name": ""}, 422, "invalid_input", id="name-empty"),
     pytest.param({**BRAND, "extra": 1}, 422, "invalid_input", id="extra-member")],
)  # fmt: skip
async def test_bad_brands_are_problem_details(service: Service, body: dict[str, Any], status: int, code: str) -> None:
    response = await service.client.post("/api/v1/brands", json=body, headers=service.admin_headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


async def test_bad_member_requests_are_problem_details(service: Service) -> None:
    brand_id = await _brand(service)
    headers = service.admin_headers
    response = await service.client.post(f"/api/v1/brands/{brand_id}/members", json={"credit_code": "X"},
                                         headers=headers)  # fmt: skip
    assert response.status_code == 422 and response.json()["code"] == "invalid_input"
    response = await service.client.post(f"/api/v1/brands/{brand_id}/members", content=b"{", headers={
        **headers, "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400 and response.json()["code"] == "malformed_json"
    for path in ("/api/v1/brands/999999999/members", f"/api/v1/brands/{2**64}/members"):
        response = await service.client.post(path, json={"credit_code": random_credit_code()}, headers=headers)
        assert response.status_code == 404 and response.json()["code"] == "unknown_brand"
    response = await service.client.get("/api/v1/brands/999999999")
    assert response.status_code == 404 and response.json()["code"] == "unknown_brand"


async def test_members_answer_csv_for_excel(service: Service, pg: asyncpg.Connection) -> None:
    brand_id = await _brand(service)
    traced, lapsed = await _traced(service), await _traced(service)
    for code in (traced, lapsed):
        response = await service.client.post(f"/api/v1/brands/{brand_id}/members", json={"credit_code": code},
                                             headers=service.admin_headers)  # fmt: skip
        assert response.status_code == 201
    await pg.execute("UPDATE producers SET last_issued_at = now() - interval '2 years' WHERE credit_code = $1", lapsed)
    response = await service.client.get(f"/api/v1/brands/{brand_id}", headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(response.content.decode()[1:])))
    assert rows[0][:5] == ["统一社会信用代码", "生产经营主体", "主体类型", "行政区划代码", "已实行追溯"]
    by_code = {row[0]: row for row in rows[1:]}
    assert by_code[traced][4] == "是" and by_code[lapsed][4] == "否" and "超过 12 个月" in by_code[lapsed][5]
