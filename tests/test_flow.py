from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
from typing import Any

import httpx
import pytest

from codegen.format import compose
from resolver.edge.spreadsheet import csv_text
from resolver.scan.documents import china_today
from tests.conftest import Service
from tests.helpers import issue_labels, register_batch, register_producer
from tests.test_gate import make_market, scan, token


async def _trade(service: Service, gate: dict[str, str], voucher: str, quantity: float) -> str:
    response = await service.client.post(
        "/api/v1/trades",
        json={"voucher_code": voucher, "buyer": {"name": "城中区刘记牛羊肉店"}, "quantity": quantity, "unit": "kg",
              "idempotency_key": secrets.token_hex(8)},
        headers=gate,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    code: str = response.json()["circulation_code"]
    return code


def _today_period(days_before: int = 0) -> dict[str, str]:
    day = (china_today() - dt.timedelta(days=days_before)).isoformat()
    return {"from": day, "to": day}


# --- where a batch went --------------------------------------------------------------------------


async def test_flow_lists_entries_trades_and_what_is_left(service: Service) -> None:
    credit_code = await register_producer(service)
    batch = await register_batch(service, credit_code)
    market_a, market_b = await make_market(service), await make_market(service, region="630102")
    gate_a = await token(service, "gate", f"{market_a}/north-1")
    gate_b = await token(service, "gate", f"{market_b}/east-2")
    voucher_a = (await scan(service, gate_a, batch["trace_code"], 100))["voucher_code"]
    voucher_b = (await scan(service, gate_b, batch["trace_code"], 30))["voucher_code"]
    circulation = await _trade(service, gate_a, voucher_a, 20)
    again = (await scan(service, gate_b, circulation, 20))["voucher_code"]  # the buyer takes it to market B
    path = f"/api/v1/batches/{batch['trace_code']}/flow"

    for headers in (service.admin_headers, await token(service, "regulator", "630100"),
                    await token(service, "producer", credit_code)):  # fmt: skip
        response = await service.client.get(path, headers=headers)
        assert response.status_code == 200, response.text

    flow = response.json()
    assert flow["batch"] == {"trace_code": batch["trace_code"], "quantity": 1200, "unit": "kg"}
    entries = {entry["voucher_code"]: entry for entry in flow["entries"]}
    assert [entry["voucher_code"] for entry in flow["entries"]] == [voucher_a, voucher_b, again]
    assert entries[voucher_a]["market_id"] == market_a and entries[voucher_a]["gate"] == "north-1"
    assert (entries[voucher_a]["quantity"], entries[voucher_a]["traded"], entries[voucher_a]["left"]) == (100, 20, 80)
    assert [(t["circulation_code"], t["quantity"]) for t in entries[voucher_a]["trades"]] == [(circulation, 20)]
    assert (entries[voucher_b]["market_id"], entries[voucher_b]["left"], entries[voucher_b]["trades"]) == (
        market_b, 30, [])  # fmt: skip
    assert entries[again]["via_circulation_code"] == circulation and entries[again]["left"] == 20
    assert entries[voucher_a]["via_circulation_code"] is None
    assert flow["total"] == {"entered": 130, "traded": 20, "left": 130, "not_entered": 1070}


async def test_flow_of_a_batch_never_scanned_is_empty(service: Service) -> None:
    batch = await register_batch(service)

    response = await service.client.get(f"/api/v1/batches/{batch['long_code']}/flow", headers=service.admin_headers)

    assert response.status_code == 200, response.text
    assert response.json()["entries"] == []
    assert response.json()["total"] == {"entered": 0, "traded": 0, "left": 0, "not_entered": 1200}


async def test_flow_scopes(service: Service) -> None:
    batch = await register_batch(service)  # a producer of 630121 (大通县)
    path = f"/api/v1/batches/{batch['trace_code']}/flow"
    refused = [
        await token(service, "regulator", "630103"),  # another county
        await token(service, "regulator", "632200"),  # another prefecture
        await token(service, "producer", await register_producer(service)),  # another producer
        await token(service, "gate", f"{await make_market(service)}/north-1"),
    ]

    for headers in refused:
        response = await service.client.get(path, headers=headers)
        assert response.status_code == 403 and response.json()["code"] == "forbidden", response.text
    assert (await service.client.get(path)).status_code == 401
    assert (await service.client.get(path, headers=await token(service, "regulator", "630000"))).status_code == 200


@pytest.mark.parametrize(
    ("code", "status", "problem"),
    [
        pytest.param(compose(1, "630121", secrets.randbelow(10**11)), 404, "unknown_code", id="never-issued"),
        pytest.param(compose(3, "630121", 1), 422, "not_a_batch_code", id="voucher"),
        pytest.param("12345", 400, "malformed_code", id="malformed"),
    ],
)
async def test_flow_of_an_unknown_or_wrong_code(service: Service, code: str, status: int, problem: str) -> None:
    response = await service.client.get(f"/api/v1/batches/{code}/flow", headers=service.admin_headers)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json" and response.json()["code"] == problem


async def test_a_recall_lists_the_markets_that_hold_some_of_the_batch(service: Service) -> None:
    batch = await register_batch(service)
    market_a, market_b, market_c = [await make_market(service) for _ in range(3)]
    gate_a, gate_b, gate_c = [await token(service, "gate", f"{m}/north-1") for m in (market_a, market_b, market_c)]
    voucher_a = (await scan(service, gate_a, batch["trace_code"], 100))["voucher_code"]
    await scan(service, gate_a, batch["trace_code"], 5)
    await scan(service, gate_b, batch["trace_code"], 30)
    voucher_c = (await scan(service, gate_c, batch["trace_code"], 10))["voucher_code"]
    await _trade(service, gate_a, voucher_a, 20.5)
    await _trade(service, gate_c, voucher_c, 10)  # all of it sold: market C holds none

    response = await service.client.post(
        f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "兽药残留超标"}, headers=service.admin_headers
    )

    assert response.status_code == 200, response.text
    holding = response.json()["markets_holding"]
    assert [(m["market_id"], m["quantity_left"], m["unit"]) for m in holding] == [
        (market_a, 84.5, "kg"), (market_b, 30, "kg")]  # fmt: skip
    assert all(m["name"].startswith("西宁海湖农产品批发市场") for m in holding)
    again = await service.client.post(
        f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "again"}, headers=service.admin_headers
    )
    assert again.json()["already_recalled"] is True and again.json()["markets_holding"] == holding


# --- a market's figures ----------------------------------------------------------------------------


async def test_market_stats_count_scans_by_gate_and_reason_and_inflow_by_county(service: Service) -> None:
    market = await make_market(service)  # 城中区
    north = await token(service, "gate", f"{market}/north-1")
    south = await token(service, "gate", f"{market}/south-2")
    datong = await register_batch(service)  # 大通县
    huangyuan = await register_batch(service, await register_producer(service, region="630123"))  # 湟源县
    uncertified = await register_batch(service, certificate=None)
    expired = await register_batch(service, certificate=None, produced_on="2025-01-01", expires_on="2025-06-01")
    decisions = [
        await scan(service, north, datong["trace_code"], 100),
        await scan(service, north, datong["trace_code"], 50),
        await scan(service, south, huangyuan["trace_code"], 7.5),
        await scan(service, south, huangyuan["trace_code"], 2000),  # more than the batch
        await scan(service, north, uncertified["trace_code"], 1),
        await scan(service, south, expired["trace_code"], 1),
        await scan(service, south, compose(1, "630121", secrets.randbelow(10**11)), 1),
    ]
    assert [d["decision"] for d in decisions] == ["accept"] * 3 + ["reject"] * 4
    other_market_gate = await token(service, "gate", f"{await make_market(service)}/north-1")
    await scan(service, other_market_gate, datong["trace_code"], 1)  # another market's: not counted

    response = await service.client.get(
        f"/api/v1/markets/{market}/stats", params=_today_period(), headers=await token(service, "regulator", "630103")
    )

    assert response.status_code == 200, response.text
    stats = response.json()
    assert (stats["market_id"], stats["region_code"], stats["from"]) == (market, "630103", china_today().isoformat())
    assert (stats["scans"], stats["accepted"], stats["rejected"]) == (7, 3, 4)
    by_reason = {r["reason"]: r["scans"] for r in stats["rejected_by_reason"]}
    assert by_reason == {"quantity_exceeds_batch": 1, "no_certificate": 2, "expired": 1, "unknown_code": 1}
    assert {r["reason"]: r["message"] for r in stats["rejected_by_reason"]}["expired"] == "该批次已过保质期，禁止入场"
    gates = {g["gate"]: g for g in stats["gates"]}
    assert list(gates) == ["north-1", "south-2"]
    assert (gates["north-1"]["accepted"], gates["north-1"]["rejected"]) == (2, 1)
    assert (gates["south-2"]["scans"], gates["south-2"]["accepted"], gates["south-2"]["rejected"]) == (4, 1, 3)
    assert {r["reason"]: r["scans"] for r in gates["north-1"]["rejected_by_reason"]} == {"no_certificate": 1}
    assert [(i["region_code"], i["region_name"], i["quantity"], i["unit"], i["entries"]) for i in stats["inflow"]] == [
        ("630121", "大通回族土族自治县", 150, "kg", 2), ("630123", "湟源县", 7.5, "kg", 1)]  # fmt: skip

    yesterday = await service.client.get(
        f"/api/v1/markets/{market}/stats", params=_today_period(1), headers=service.admin_headers
    )
    assert yesterday.status_code == 200
    assert (yesterday.json()["scans"], yesterday.json()["gates"], yesterday.json()["inflow"]) == (0, [], [])


async def test_market_stats_scopes(service: Service) -> None:
    market = await make_market(service, region="630103")
    path = f"/api/v1/markets/{market}/stats"
    for scope, status in (("630103", 200), ("630100", 200), ("630000", 200), ("630121", 403), ("632200", 403)):
        response = await service.client.get(
            path, params=_today_period(), headers=await token(service, "regulator", scope)
        )
        assert response.status_code == status, (scope, response.text)
    for role, scope in (("producer", await register_producer(service)), ("gate", f"{market}/north-1")):
        response = await service.client.get(path, params=_today_period(), headers=await token(service, role, scope))
        assert response.status_code == 403, response.text
    assert (await service.client.get(path, params=_today_period())).status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "status", "problem"),
    [
        pytest.param("/api/v1/markets/{market}/stats", {"to": "2026-01-01"}, 422, "invalid_input", id="no-from"),
        pytest.param("/api/v1/markets/{market}/stats", {"from": "2026-01-01"}, 422, "invalid_input", id="no-to"),
        pytest.param("/api/v1/markets/{market}/stats", {"from": "2026-02-01", "to": "2026-01-01"}, 422,
                     "invalid_input", id="to-before-from"),
        pytest.param("/api/v1/markets/{market}/stats", {"from": "2026-13-01", "to": "2026-12-31"}, 422,
                     "invalid_input", id="no-such-month"),
        pytest.param("/api/v1/markets/{market}/stats", {"from": "1999-12-31", "to": "2026-12-31"}, 422,
                     "invalid_input", id="too-early"),
        pytest.param("/api/v1/markets/{market}/stats", {"from": "2026-1-1", "to": "2026-12-31"}, 422,
                     "invalid_input", id="short-date"),
        pytest.param("/api/v1/markets/99999999999/stats", {"from": "2026-01-01", "to": "2026-01-01"}, 404,
                     "unknown_market", id="unknown-market"),
        pytest.param("/api/v1/markets/99999999999999999999999/stats", {"from": "2026-01-01", "to": "2026-01-01"},
                     404, "unknown_market", id="beyond-bigint"),
        pytest.param("/api/v1/regions/630121/labels", {"from": "2026-01-01", "to": "x"}, 422, "invalid_input",
                     id="labels-bad-to"),
        pytest.param("/api/v1/regions/639999/labels", {"from": "2026-01-01", "to": "2026-01-01"}, 404,
                     "unknown_region", id="unknown-region"),
        pytest.param("/api/v1/regions/63012/labels", {"from": "2026-01-01", "to": "2026-01-01"}, 404,
                     "unknown_region", id="short-region"),
    ],
)  # fmt: skip
async def test_bad_parameters_are_problems(
    service: Service, path: str, params: dict[str, str], status: int, problem: str
) -> None:
    market = await make_market(service)

    response = await service.client.get(path.format(market=market), params=params, headers=service.admin_headers)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json" and response.json()["code"] == problem
    if status == 422:
        assert response.json()["field"] in ("from", "to")


async def test_a_market_id_that_is_no_number_is_not_found(service: Service) -> None:
    response = await service.client.get("/api/v1/markets/abc/stats", headers=service.admin_headers)

    assert response.status_code == 404


# --- labels issued ---------------------------------------------------------------------------------


async def _labels(service: Service, headers: dict[str, str], region: str, period: dict[str, str]) -> dict[str, Any]:
    response = await service.client.get(f"/api/v1/regions/{region}/labels", params=period, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_labels_issued_per_producer_of_the_region(service: Service) -> None:
    busy, quiet = await register_producer(service), await register_producer(service)  # both of 大通县
    elsewhere = await register_producer(service, region="630123")
    first, second = await register_batch(service, busy), await register_batch(service, busy)
    await issue_labels(service, first["trace_code"], 3)
    await issue_labels(service, first["trace_code"], 2)
    await issue_labels(service, second["trace_code"], 4)
    await issue_labels(service, (await register_batch(service, quiet))["trace_code"], 1)
    await issue_labels(service, (await register_batch(service, elsewhere))["trace_code"], 7)
    regulator = await token(service, "regulator", "630121")

    county = await _labels(service, regulator, "630121", _today_period())

    producers = {p["credit_code"]: p for p in county["producers"]}
    assert (producers[busy]["labels"], producers[busy]["requests"], producers[busy]["batches"]) == (9, 3, 2)
    assert (producers[quiet]["labels"], producers[quiet]["requests"], producers[quiet]["batches"]) == (1, 1, 1)
    assert elsewhere not in producers and producers[busy]["region_code"] == "630121"
    assert county["labels"] == sum(p["labels"] for p in county["producers"])
    assert (county["region_code"], county["region_name"]) == ("630121", "大通回族土族自治县")
    labels = [p["labels"] for p in county["producers"]]
    assert labels == sorted(labels, reverse=True)
    prefecture = await _labels(service, service.admin_headers, "630100", _today_period())
    assert {busy, quiet, elsewhere} <= {p["credit_code"] for p in prefecture["producers"]}
    before = await _labels(service, regulator, "630121", _today_period(1))
    assert busy not in {p["credit_code"] for p in before["producers"]}


async def test_labels_scopes(service: Service) -> None:
    path = "/api/v1/regions/630121/labels"
    for scope, status in (("630121", 200), ("630100", 200), ("630123", 403), ("632200", 403)):
        response = await service.client.get(
            path, params=_today_period(), headers=await token(service, "regulator", scope)
        )
        assert response.status_code == status, (scope, response.text)
    producer = await token(service, "producer", await register_producer(service))
    assert (await service.client.get(path, params=_today_period(), headers=producer)).status_code == 403
    assert (await service.client.get(path, params=_today_period())).status_code == 401


# --- the lists as CSV ------------------------------------------------------------------------------


def _csv(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads the Chinese as UTF-8
    assert b"\r\n" in response.content
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


async def test_each_list_answers_csv_for_excel_when_accept_prefers_it(service: Service) -> None:
    credit_code = await register_producer(service)
    batch = await register_batch(service, credit_code)
    await issue_labels(service, batch["trace_code"], 2)
    market = await make_market(service)
    gate = await token(service, "gate", f"{market}/north-1")
    voucher = (await scan(service, gate, batch["trace_code"], 100))["voucher_code"]
    await scan(service, gate, compose(1, "630121", secrets.randbelow(10**11)), 1)
    circulation = await _trade(service, gate, voucher, 20)
    csv_please = {**service.admin_headers, "Accept": "text/csv"}

    flow = _csv(await service.client.get(f"/api/v1/batches/{batch['trace_code']}/flow", headers=csv_please))
    stats = _csv(
        await service.client.get(f"/api/v1/markets/{market}/stats", params=_today_period(), headers=csv_please)
    )
    labels = _csv(await service.client.get("/api/v1/regions/630121/labels", params=_today_period(), headers=csv_please))

    assert flow[0][:3] == ["入场凭证码", "市场编号", "市场"] and len(flow) == 2
    assert flow[1][0] == voucher and flow[1][9:12] == ["20", "80", circulation] and flow[1][13] == "城中区刘记牛羊肉店"
    assert stats[0][0] == "项目"
    assert ["接收", "north-1", "", "", "", "", "", "", "1"] in stats
    assert ["拒收原因", "north-1", "unknown_code", "追溯码未登记，禁止入场", "", "", "", "", "1"] in stats
    assert ["来源", "", "", "", "630121", "大通回族土族自治县", "kg", "100", "1"] in stats
    assert labels[0][0] == "统一社会信用代码"
    mine = [row for row in labels if row[0] == credit_code]
    assert len(mine) == 1 and mine[0][1].startswith("测试合作社") and mine[0][2:] == ["630121", "2", "1", "1"]
    json_answer = await service.client.get(
        f"/api/v1/batches/{batch['trace_code']}/flow",
        headers={**service.admin_headers, "Accept": "text/csv;q=0.5, */*"},
    )
    assert json_answer.headers["content-type"] == "application/json" and json_answer.headers["vary"] == "Accept"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        pytest.param('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")', id="formula"),
        pytest.param("+1", "'+1", id="plus"),
        pytest.param("@SUM(A1)", "'@SUM(A1)", id="at"),
        pytest.param("大通县合作社", "大通县合作社", id="plain"),
        pytest.param(None, "", id="none"),
    ],
)
def test_csv_cells_are_never_formulas(value: str | None, cell: str) -> None:
    text = csv_text(["名称", "数量"], [[value, -1]])

    assert text.startswith("\ufeff名称,数量\r\n")
    assert list(csv.reader(io.StringIO(text[1:])))[1] == [cell, "-1"]
