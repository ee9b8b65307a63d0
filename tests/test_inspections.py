"""Lab results after registration (resolver.api.inspections): scopes, input, the gate at once, every document within a
second, and the chain."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pytest

from codegen.format import compose
from resolver.api import recall
from resolver.api.auth import Principal
from resolver.scan.documents import china_today
from resolver.state import app_worker
from tests.conftest import Service
from tests.helpers import issue_labels, register_batch, register_producer
from tests.test_gate import make_market, reasons, scan, token

FAILED: dict[str, Any] = {
    "result": "fail",
    "agency": "青海省农产品质量安全检测中心",
    "method": "GB 23200.113-2018",
    "items": [{"name": "腐霉利", "value": "0.35 mg/kg", "limit": "0.2 mg/kg", "result": "fail"}, "毒死蜱"],
    "report_no": "QH-JC-2026-0418",
}


def _result(**overrides: Any) -> dict[str, Any]:
    return {**FAILED, "inspected_on": china_today().isoformat(), **overrides}


async def _add(service: Service, code: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await service.client.post(
        f"/api/v1/batches/{code}/inspections", json=body, headers=service.admin_headers if headers is None else headers
    )


def test_a_lab_inspects_in_its_region_and_acts_on_nothing_else() -> None:
    county, prefecture, province = Principal("lab", "630121"), Principal("lab", "630100"), Principal("lab", "630000")

    assert county.inspects_region("630121") and not county.inspects_region("630123")
    assert prefecture.inspects_region("630123") and not prefecture.inspects_region("620102")
    assert province.inspects_region("632223")
    assert not county.covers_region("630121")  # a lab is no regulator
    assert not Principal("regulator", "630121").inspects_region("630121")


@pytest.mark.parametrize(
    ("role", "scope", "status"),
    [
        pytest.param("lab", "630121", 201, id="lab-of-the-county"),
        pytest.param("lab", "630100", 201, id="lab-of-the-prefecture"),
        pytest.param("regulator", "630000", 201, id="regulator-of-the-province"),
        pytest.param("lab", "630123", 403, id="lab-of-another-county"),
        pytest.param("lab", "620100", 403, id="lab-of-another-province"),
        pytest.param("regulator", "630123", 403, id="regulator-of-another-county"),
        pytest.param("producer", None, 403, id="the-producer-itself"),
    ],
)
async def test_scopes(service: Service, role: str, scope: str | None, status: int) -> None:
    credit_code = await register_producer(service)  # 大通县 630121
    batch = await register_batch(service, credit_code)
    headers = await token(service, role, scope or credit_code)

    response = await _add(service, batch["trace_code"], _result(result="pass"), headers)

    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["code"] == "forbidden"
        doc = (await service.client.get(f"/api/v1/codes/{batch['trace_code']}")).json()
        assert [e["kind"] for e in doc["chain"]] == ["inspection", "commissioning"]  # nothing added


async def test_a_gate_token_and_no_token_may_not(service: Service) -> None:
    batch = await register_batch(service)
    gate = await token(service, "gate", f"{await make_market(service)}/north-1")

    assert (await _add(service, batch["trace_code"], _result(), gate)).status_code == 403
    assert (await _add(service, batch["trace_code"], _result(), {})).status_code == 401


@pytest.mark.parametrize(
    "scope",
    [pytest.param("", id="none"), pytest.param("999999", id="no-such-region"), pytest.param("63012", id="short")],
)
async def test_a_lab_token_needs_a_region(service: Service, scope: str) -> None:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": "lab", "scope": scope}, headers=service.admin_headers
    )

    assert response.status_code == 422 and response.json()["field"] == "scope"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"result": "unknown"}, "result", id="result"),
        pytest.param({"result": None}, "result", id="no-result"),
        pytest.param({"agency": ""}, "agency", id="no-lab"),
        pytest.param({"agency": "检测中心\u202e"}, "agency", id="bidi-lab"),
        pytest.param({"inspected_on": "2999-01-01"}, "inspected_on", id="future"),
        pytest.param({"inspected_on": "yesterday"}, "inspected_on", id="not-a-date"),
        pytest.param({"report_no": "QH\nJC"}, "report_no", id="report-line-break"),
        pytest.param({"report_no": "R" * 65}, "report_no", id="report-too-long"),
        pytest.param({"items": ["毒死蜱"] * 101}, "items", id="too-many-items"),
        pytest.param({"lab": "另一个名称"}, "lab", id="unknown-member"),
    ],
)
async def test_bad_input_is_422(service: Service, change: dict[str, Any], field: str) -> None:
    batch = await register_batch(service)
    body = {key: value for key, value in _result(**change).items() if value is not None}

    response = await _add(service, batch["trace_code"], body)

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_input" and problem["errors"][0]["field"].split(".")[0] == field


@pytest.mark.parametrize(
    ("code", "status", "problem"),
    [
        pytest.param(compose(1, "630121", 12_345_678), 404, "unknown_code", id="never-issued"),
        pytest.param(compose(3, "630121", 1), 422, "not_a_batch_code", id="voucher"),
    ],
)
async def test_an_unknown_or_wrong_code(service: Service, code: str, status: int, problem: str) -> None:
    response = await _add(service, code, _result())

    assert response.status_code == status and response.json()["code"] == problem


async def test_a_failed_result_rejects_at_the_gate_at_once_and_shows_on_every_document(service: Service) -> None:
    batch = await register_batch(service)
    code = batch["trace_code"]
    packages = await issue_labels(service, code, 2)
    gate = await token(service, "gate", f"{await make_market(service)}/north-1")
    assert reasons(await scan(service, gate, code, 10)) == []
    assert reasons(await scan(service, gate, packages[0], 1)) == []
    for each in (code, *packages):  # cached as passing: in this worker, in Redis and in Postgres
        assert (await service.client.get(f"/api/v1/codes/{each}")).json()["inspection"]["result"] == "pass"
        assert "状态正常" in (await service.client.get(f"/t/{each}", headers={"Accept": "text/html"})).text
    lab = await token(service, "lab", "630121")

    response = await _add(service, code, _result(), lab)

    assert response.status_code == 201, response.text
    added = response.json()
    assert added["trace_code"] == code and added["is_in_force"] is True and added["result_in_force"] == "fail"
    assert added["caches_invalidated"] is True
    assert added["inspection"] == {**FAILED, "inspected_on": china_today().isoformat()}
    for each in (code, packages[0], packages[1]):
        assert reasons(await scan(service, gate, each, 1)) == ["inspection_failed"]
    for each in (code, *packages):
        doc = (await service.client.get(f"/api/v1/codes/{each}")).json()
        assert doc["inspection"]["result"] == "fail" and doc["inspection"]["report_no"] == FAILED["report_no"]
        inspections = [e for e in doc["chain"] if e["kind"] == "inspection"]
        assert [e["result"] for e in inspections] == ["pass", "fail"]
        assert inspections[-1]["agency"] == FAILED["agency"] and inspections[-1]["report_no"] == FAILED["report_no"]
        page = (await service.client.get(f"/t/{each}", headers={"Accept": "text/html"})).text
        assert "该批次检测不合格" in page and "status bad" in page and "状态正常" not in page
        assert FAILED["report_no"] in page and "腐霉利" in page


async def _seen_failed_within(other: Service, code: str, since: float, limit_s: float) -> float:
    """Seconds after `since` at which `other` first answered `code` with a failed inspection; fails after limit_s."""
    while True:
        doc = (await other.client.get(f"/api/v1/codes/{code}")).json()
        elapsed = time.monotonic() - since
        if doc["inspection"]["result"] == "fail":
            return elapsed
        assert elapsed < limit_s, f"another worker still showed the batch passing {elapsed:.3f} s after"
        await asyncio.sleep(0.01)


async def test_a_failed_result_reaches_another_workers_cached_copy_within_a_second(
    service: Service, second_service: Service
) -> None:
    batch = await register_batch(service)
    package = (await issue_labels(service, batch["trace_code"], 1))[0]
    for each in (batch["trace_code"], package):
        assert (await second_service.client.get(f"/api/v1/codes/{each}")).json()["inspection"]["result"] == "pass"
    assert len(app_worker(second_service.app).local) == 1  # one document for both, held in the other worker

    response = await _add(service, batch["trace_code"], _result())
    returned_at = time.monotonic()

    assert response.status_code == 201, response.text
    for each in (package, batch["trace_code"]):
        assert await _seen_failed_within(second_service, each, returned_at, 1.0) < 1.0


async def test_a_failed_result_reaches_other_workers_within_a_second_when_redis_cannot_tell_them(
    service: Service, second_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No invalidation message (Redis away): the change feed of each worker reads the batch's new version."""
    batch = await register_batch(service)
    code = batch["trace_code"]
    for client in (service.client, second_service.client):
        assert (await client.get(f"/api/v1/codes/{code}")).json()["inspection"]["result"] == "pass"

    async def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("redis away")

    monkeypatch.setattr(recall, "invalidate_batch", unreachable)
    response = await _add(service, code, _result())
    returned_at = time.monotonic()

    assert response.status_code == 201 and response.json()["caches_invalidated"] is False
    for each in (second_service, service):
        assert await _seen_failed_within(each, code, returned_at, 1.0) < 1.0


async def test_a_passing_result_adds_to_the_chain(service: Service) -> None:
    batch = await register_batch(service)  # inspected two days ago: pass
    code = batch["trace_code"]
    gate = await token(service, "gate", f"{await make_market(service)}/north-1")
    before = (await service.client.get(f"/api/v1/codes/{code}")).json()

    response = await _add(service, code, _result(result="pass", items=[], method=""))

    assert response.status_code == 201, response.text
    assert (response.json()["is_in_force"], response.json()["result_in_force"]) == (True, "pass")
    doc = (await service.client.get(f"/api/v1/codes/{code}")).json()
    assert doc["status"] == "active"
    expected = {"result": "pass", "agency": FAILED["agency"], "method": "", "items": [],
                "inspected_on": china_today().isoformat(), "report_no": FAILED["report_no"]}  # fmt: skip
    assert doc["inspection"] == expected
    # in time order: inspected today (at 00:00, as registration's results), registered earlier today
    assert [e["kind"] for e in doc["chain"]] == ["inspection", "inspection", "commissioning"]
    added = doc["chain"][1]
    assert [doc["chain"][0], doc["chain"][2]] == before["chain"]
    assert (added["result"], added["agency"], added["report_no"], added["biz_step"]) == (
        "pass", FAILED["agency"], FAILED["report_no"], "inspecting")  # fmt: skip
    assert "items" not in added and "method" not in added  # only the members the lab gave
    assert reasons(await scan(service, gate, code, 10)) == []


async def test_an_older_pass_is_recorded_but_not_in_force(service: Service) -> None:
    batch = await register_batch(service)  # inspected two days ago: pass
    week_ago = (china_today() - dt.timedelta(days=7)).isoformat()

    response = await _add(service, batch["trace_code"], _result(result="pass", inspected_on=week_ago))

    assert (response.json()["is_in_force"], response.json()["result_in_force"]) == (False, "pass")
    doc = (await service.client.get(f"/api/v1/codes/{batch['trace_code']}")).json()
    assert "report_no" not in doc["inspection"]  # registration's result stays in force
    assert [e["kind"] for e in doc["chain"]] == ["inspection", "inspection", "commissioning"]  # in time order


async def test_a_pass_after_a_failure_does_not_clear_it(service: Service) -> None:
    batch = await register_batch(service)
    code = batch["trace_code"]
    gate = await token(service, "gate", f"{await make_market(service)}/north-1")
    yesterday = (china_today() - dt.timedelta(days=1)).isoformat()
    assert (await _add(service, code, _result(inspected_on=yesterday))).status_code == 201

    retest = await _add(service, code, _result(result="pass", report_no="QH-JC-2026-0420"))

    assert retest.status_code == 201
    assert (retest.json()["is_in_force"], retest.json()["result_in_force"]) == (False, "fail")
    doc = (await service.client.get(f"/api/v1/codes/{code}")).json()
    assert doc["inspection"]["result"] == "fail"
    assert [e["result"] for e in doc["chain"] if e["kind"] == "inspection"] == ["pass", "fail", "pass"]
    assert reasons(await scan(service, gate, code, 1)) == ["inspection_failed"]
