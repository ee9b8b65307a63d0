from __future__ import annotations

import csv
import io
import secrets
from typing import Any

import asyncpg
import pytest

from codegen.format import compose
from tests.conftest import Service, random_credit_code
from tests.helpers import issue_labels, register_batch, register_producer
from tests.test_gate import make_market, scan, token

FAIR = {"name": "中国绿色食品博览会", "kind": "national", "starts_on": "2026-11-20", "ends_on": "2026-11-23"}
PRODUCT = "大通牦牛肉"  # tests.helpers.batch_body's


async def _fair(service: Service, kind: str = "national") -> int:
    response = await service.client.post("/api/v1/fairs", json={**FAIR, "kind": kind}, headers=service.admin_headers)
    assert response.status_code == 201, response.text
    fair_id: int = response.json()["id"]
    return fair_id


async def _lapse(pg: asyncpg.Connection, credit_code: str) -> None:
    await pg.execute(
        """UPDATE batches SET created_at = now() - interval '13 months'
            WHERE producer_id = (SELECT id FROM producers WHERE credit_code = $1)""",
        credit_code,
    )


async def _exhibitors(service: Service, pg: asyncpg.Connection) -> list[dict[str, str]]:
    """A list with one row of each case, in this order: traced, lapsed, no batch, no such product, not registered,
    a bad credit code, no product name."""
    traced, lapsed, never = [await register_producer(service) for _ in range(3)]
    await register_batch(service, traced)
    await register_batch(service, lapsed)
    await _lapse(pg, lapsed)
    response = await service.client.post(f"/api/v1/producers/{never}/products", json={"name": PRODUCT,
                                         "category": "yak"}, headers=service.admin_headers)  # fmt: skip
    assert response.status_code == 201, response.text
    return [
        {"credit_code": traced, "product_name": PRODUCT},
        {"credit_code": lapsed, "product_name": PRODUCT},
        {"credit_code": never, "product_name": PRODUCT},
        {"credit_code": traced, "product_name": "藏羊肉"},
        {"credit_code": random_credit_code(), "product_name": PRODUCT},
        {"credit_code": "91630121ABCDEFGHIJ", "product_name": PRODUCT},
        {"credit_code": traced, "product_name": "  "},
    ]


REASONS = [[], ["lapsed"], ["never_issued"], ["product_not_registered"], ["not_registered"],
           ["invalid_credit_code"], ["product_name_required"]]  # fmt: skip


@pytest.mark.parametrize("kind", ["national", "provincial"])
async def test_national_and_provincial_fairs_admit_traced_products_only(
    service: Service, pg: asyncpg.Connection, kind: str
) -> None:
    fair_id = await _fair(service, kind)
    listed = await _exhibitors(service, pg)
    response = await service.client.post(f"/api/v1/fairs/{fair_id}/exhibitors", json=listed,
                                         headers=service.admin_headers)  # fmt: skip
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["fair"]["rule"] == "traced_only"
    assert (answer["rows"], answer["admitted"], answer["refused"]) == (7, 1, 6)
    items = answer["items"]
    assert [item["line"] for item in items] == [1, 2, 3, 4, 5, 6, 7]  # the list's order
    assert [item["rank"] for item in items] == [1, 2, 3, 4, 5, 6, 7]
    assert [item["admitted"] for item in items] == [True] + [False] * 6
    assert [[r["code"] for r in item["reasons"]] for item in items] == REASONS
    assert all(r["message"] for item in items for r in item["reasons"])
    assert "超过 12 个月" in items[1]["reasons"][0]["message"]
    assert items[0]["producer_name"].startswith("测试合作社") and items[4]["producer_name"] is None


async def test_an_overseas_fair_admits_all_and_ranks_traced_ones_first(
    service: Service, pg: asyncpg.Connection
) -> None:
    fair_id = await _fair(service, "overseas")
    listed = await _exhibitors(service, pg)
    listed = listed[1:] + listed[:1]  # the traced row last in the list
    response = await service.client.post(f"/api/v1/fairs/{fair_id}/exhibitors", json=listed,
                                         headers=service.admin_headers)  # fmt: skip
    answer = response.json()
    assert answer["fair"]["rule"] == "traced_first"
    items = answer["items"]
    assert [(item["rank"], item["line"], item["traced"]) for item in items[:2]] == [(1, 7, True), (2, 1, False)]
    assert [item["line"] for item in items] == [7, 1, 2, 3, 4, 5, 6]
    assert all(item["admitted"] for item in items) and answer["refused"] == 0


async def test_exhibitors_as_csv_with_a_bom_and_the_answer_as_csv(service: Service, pg: asyncpg.Connection) -> None:
    fair_id = await _fair(service)
    listed = await _exhibitors(service, pg)
    text = "product_name,credit_code\r\n" + "".join(f"{e['product_name']},{e['credit_code']}\r\n" for e in listed)
    path = f"/api/v1/fairs/{fair_id}/exhibitors"
    headers = {**service.admin_headers, "Content-Type": "text/csv; charset=utf-8"}
    response = await service.client.post(path, content=b"\xef\xbb\xbf" + text.encode(), headers=headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["line"] for item in items] == [2, 3, 4, 5, 6, 7, 8]  # the file's lines (header: 1)
    assert [[r["code"] for r in item["reasons"]] for item in items] == REASONS

    response = await service.client.post(path, content=text.encode(), headers={**headers, "Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0] == ["排序", "行号", "统一社会信用代码", "产品名称", "生产经营主体", "准予参展", "已实行追溯", "原因"]
    assert [row[5] for row in rows[1:]] == ["是"] + ["否"] * 6
    assert rows[2][7].startswith("该产品最近一次获取追溯码已超过")


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [pytest.param(b"credit_code\r\nX\r\n", "text/csv", 422, "bad_header", id="csv-header"),
     pytest.param(b"credit_code,product_name\r\n", "text/csv", 422, "empty_file", id="csv-no-rows"),
     pytest.param(b"credit_code,product_name\r\n\xff\xfe,x\r\n", "text/csv", 400, "bad_encoding", id="csv-encoding"),
     pytest.param(b'credit_code,product_name\r\n"x,y\r\n', "text/csv", 400, "bad_csv", id="csv-quote"),
     pytest.param(b"[", "application/json", 400, "malformed_json", id="json-malformed"),
     pytest.param(b"[]", "application/json", 422, "invalid_input", id="json-empty"),
     pytest.param(b'{"credit_code": "x"}', "application/json", 422, "invalid_input", id="json-not-a-list"),
     pytest.param(b'[{"credit_code": "x"}]', "application/json", 422, "invalid_input", id="json-member-missing"),
     pytest.param(b"x", "text/plain", 415, "unsupported_media_type", id="media-type")],
)  # fmt: skip
async def test_bad_exhibitor_uploads_are_problem_details(
    service: Service, content: bytes, content_type: str, status: int, code: str
) -> None:
    fair_id = await _fair(service)
    response = await service.client.post(f"/api/v1/fairs/{fair_id}/exhibitors", content=content,
                                         headers={**service.admin_headers, "Content-Type": content_type})  # fmt: skip
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    "body",
    [pytest.param({**FAIR, "kind": "county"}, id="kind"),
     pytest.param({**FAIR, "ends_on": "2026-11-19"}, id="ends-before-start"),
     pytest.param({**FAIR, "starts_on": "2026-13-01"}, id="bad-date"),
     pytest.param({**FAIR, "starts_on": "1999-12-31"}, id="too-early"),
     pytest.param({k: v for k, v in FAIR.items() if k != "name"}, id="no-name")],
)  # fmt: skip
async def test_bad_fairs_are_422(service: Service, body: dict[str, Any]) -> None:
    response = await service.client.post("/api/v1/fairs", json=body, headers=service.admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"


async def test_scopes_of_fairs(service: Service) -> None:
    regulator = await token(service, "regulator", "630000")
    producer = await token(service, "producer", random_credit_code())
    response = await service.client.post("/api/v1/fairs", json=FAIR, headers=regulator)
    assert response.status_code == 201, response.text
    fair_id = response.json()["id"]
    listed = [{"credit_code": random_credit_code(), "product_name": PRODUCT}]
    path = f"/api/v1/fairs/{fair_id}/exhibitors"
    assert (await service.client.post(path, json=listed, headers=regulator)).status_code == 200
    gate = await token(service, "gate", f"{await make_market(service)}/north-1")
    for headers in (producer, gate):
        assert (await service.client.post("/api/v1/fairs", json=FAIR, headers=headers)).status_code == 403
        assert (await service.client.post(path, json=listed, headers=headers)).status_code == 403
    assert (await service.client.post("/api/v1/fairs", json=FAIR)).status_code == 401
    for path in ("/api/v1/fairs/999999999/exhibitors", f"/api/v1/fairs/{2**64}/exhibitors"):
        response = await service.client.post(path, json=listed, headers=service.admin_headers)
        assert response.status_code == 404 and response.json()["code"] == "unknown_fair"


async def test_the_door_resolves_batch_package_circulation_and_long_codes(service: Service) -> None:
    national, overseas = await _fair(service), await _fair(service, "overseas")
    batch = await register_batch(service)
    (package,) = await issue_labels(service, batch["trace_code"], 1)
    market = await make_market(service)
    gate = await token(service, "gate", f"{market}/north-1")
    voucher = (await scan(service, gate, batch["trace_code"], 100))["voucher_code"]
    response = await service.client.post(
        "/api/v1/trades",
        json={"voucher_code": voucher, "buyer": {"name": "城中区刘记牛羊肉店"}, "quantity": 20, "unit": "kg",
              "idempotency_key": secrets.token_hex(8)},
        headers=gate,
    )  # fmt: skip
    circulation = response.json()["circulation_code"]
    for code in (batch["trace_code"], package, circulation, voucher, batch["long_code"]):
        response = await service.client.get(f"/api/v1/fairs/{national}/door/{code}")  # public: no token
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["admitted"], answer["traced"], answer["reasons"]) == (True, True, [])
        assert answer["batch_code"] == batch["trace_code"] and answer["product_name"] == PRODUCT

    recall = f"/api/v1/batches/{batch['trace_code']}/recall"
    response = await service.client.post(recall, json={"reason": "兽药残留超标"}, headers=service.admin_headers)
    assert response.status_code == 200
    for fair_id in (national, overseas):
        answer = (await service.client.get(f"/api/v1/fairs/{fair_id}/door/{package}")).json()
        assert answer["admitted"] is False
        assert [r["code"] for r in answer["reasons"]] == ["recalled"]


async def test_the_door_follows_the_fairs_rule_for_a_lapsed_product(service: Service, pg: asyncpg.Connection) -> None:
    national, overseas = await _fair(service), await _fair(service, "overseas")
    credit_code = await register_producer(service)
    batch = await register_batch(service, credit_code)
    await _lapse(pg, credit_code)
    answer = (await service.client.get(f"/api/v1/fairs/{national}/door/{batch['trace_code']}")).json()
    assert (answer["admitted"], [r["code"] for r in answer["reasons"]]) == (False, ["lapsed"])
    answer = (await service.client.get(f"/api/v1/fairs/{overseas}/door/{batch['trace_code']}")).json()
    assert (answer["admitted"], answer["traced"]) == (True, False)


async def test_bad_door_scans_are_problem_details(service: Service) -> None:
    fair_id = await _fair(service)
    batch = await register_batch(service)
    for path, status, code in (
        (f"/api/v1/fairs/{fair_id}/door/12345", 400, "malformed_code"),
        (f"/api/v1/fairs/{fair_id}/door/{compose(1, '630121', 987_654)}", 404, "unknown_code"),
        (f"/api/v1/fairs/999999999/door/{batch['trace_code']}", 404, "unknown_fair"),
    ):
        response = await service.client.get(path)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
