"""Designations: registered by the admin or the region's regulator, listed with coverage at the review day and
keep or revoke. On a database of their own per test (tests.test_hooks' fixtures): coverage counts every producer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from resolver.edge.spreadsheet import UTF8_BOM
from tests import test_hooks
from tests.conftest import Service
from tests.helpers import register_producer
from tests.test_hooks import HAIBEI, MENYUAN, QILIAN, _producers, _token, history

template_database = test_hooks.template_database
own_service = test_hooks.own_service


def _designation(region: str = MENYUAN, **overrides: Any) -> dict[str, Any]:
    return {
        "region_code": region,
        "kind": "quality_safety_county",
        "name": "门源县国家农产品质量安全县",
        "designated_on": "2018-12-01",
        "review_on": "2025-03-01",
        **overrides,
    }


async def _create(service: Service, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    response = await service.client.post("/api/v1/designations", json=body, headers=headers or service.admin_headers)
    assert response.status_code == 201, response.text
    designation_id: int = response.json()["id"]
    return designation_id


async def _list(service: Service, headers: dict[str, str] | None = None, **params: str) -> dict[str, Any]:
    response = await service.client.get("/api/v1/designations", params=params, headers=headers or service.admin_headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _county_history(service: Service) -> None:
    """门源: 4 of 5 traced on 2025-03-01 (keep), 1 of 5 on 2026-06-01; 祁连: 1 of 2 on 2025-03-01 (revoke)."""
    codes = await _producers(service, MENYUAN, traced=5, untraced=0)
    for code in codes[:4]:
        await history(service, code, registered_on=dt.date(2024, 1, 10), issued_on=(dt.date(2024, 12, 1),))
    await history(service, codes[4], registered_on=dt.date(2024, 1, 10), issued_on=(dt.date(2025, 7, 1),))
    for code, day in zip(await _producers(service, QILIAN, traced=2, untraced=0), (2024, 2023), strict=True):
        await history(service, code, registered_on=dt.date(2023, 1, 10), issued_on=(dt.date(day, 12, 1),))


async def test_the_review_list_keeps_or_revokes_at_each_review_day(own_service: Service) -> None:
    await _county_history(own_service)
    kept = await _create(own_service, _designation())
    revoked = await _create(own_service, _designation(QILIAN, kind="demonstration_zone", name="祁连县现代农业示范区"))
    later = await _create(own_service, _designation(name="门源县复核", review_on="2026-06-01"))

    body = await _list(own_service, region=HAIBEI)

    assert body["at"] is None
    items = {item["id"]: item for item in body["items"]}
    assert items[kept]["at"] == "2025-03-01" and items[kept]["verdict"] == "keep"
    assert items[kept]["meets_line"] is True and items[kept]["coverage"]["meets_line"] is True
    assert (items[kept]["coverage"]["registered"], items[kept]["coverage"]["traced"]) == (5, 4)
    assert items[kept]["coverage"]["products_traced"] == 4
    assert items[revoked] | {"coverage": None, "id": 0, "created_at": None} == {
        "id": 0, "region_code": QILIAN, "region_name": "祁连县", "kind": "demonstration_zone",
        "kind_label": "示范区（现代农业示范区、绿色发展先行区、产业园）", "name": "祁连县现代农业示范区",
        "designated_on": "2018-12-01", "review_on": "2025-03-01", "created_at": None, "at": "2025-03-01",
        "coverage": None, "meets_line": False, "verdict": "revoke",
    }  # fmt: skip
    assert (items[later]["coverage"]["traced"], items[later]["verdict"]) == (1, "revoke")


async def test_at_reviews_every_designation_on_one_day(own_service: Service) -> None:
    await _county_history(own_service)
    await _create(own_service, _designation())
    await _create(own_service, _designation(QILIAN))

    body = await _list(own_service, region=HAIBEI, at="2024-12-31")
    earlier = await _list(own_service, region=MENYUAN, at="2024-11-30")

    assert body["at"] == "2024-12-31"
    assert [(item["region_code"], item["at"], item["verdict"]) for item in body["items"]] == [
        (MENYUAN, "2024-12-31", "keep"),
        (QILIAN, "2024-12-31", "revoke"),  # one of 祁连's two had lapsed on 2024-12-01
    ]
    assert [(item["at"], item["coverage"]["traced"], item["verdict"]) for item in earlier["items"]] == [
        ("2024-11-30", 0, "revoke")  # 门源's four registered their batches on 2024-12-01
    ]


async def test_a_review_day_still_to_come_is_read_today(own_service: Service) -> None:
    await _producers(own_service, MENYUAN, traced=1, untraced=0)
    review_on = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    await _create(own_service, _designation(review_on=review_on))

    (item,) = (await _list(own_service))["items"]

    assert item["review_on"] == review_on and item["at"] <= (dt.date.today() + dt.timedelta(days=1)).isoformat()
    assert item["verdict"] == "keep"


async def test_a_regulator_registers_and_sees_only_its_region(own_service: Service) -> None:
    menyuan = await _token(own_service, "regulator", MENYUAN)
    await _create(own_service, _designation(), menyuan)
    await _create(own_service, _designation(QILIAN))

    refused = await own_service.client.post("/api/v1/designations", json=_designation(QILIAN), headers=menyuan)
    own = await _list(own_service, menyuan)
    other = await own_service.client.get("/api/v1/designations", params={"region": HAIBEI}, headers=menyuan)
    producer = await _token(own_service, "producer", await register_producer(own_service, region=MENYUAN))
    by_producer = await own_service.client.get("/api/v1/designations", headers=producer)
    anonymous = await own_service.client.get("/api/v1/designations")

    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert [item["region_code"] for item in own["items"]] == [MENYUAN]
    assert other.status_code == 403
    assert by_producer.status_code == 403
    assert anonymous.status_code == 401
    assert len((await _list(own_service))["items"]) == 2  # the admin sees all


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"kind": "county"}, "kind", id="kind"),
        pytest.param({"region_code": "999999"}, "region_code", id="unknown-region"),
        pytest.param({"region_code": "630000"}, "region_code", id="province"),
        pytest.param({"region_code": "6322"}, "region_code", id="malformed-region"),
        pytest.param({"review_on": "2017-01-01"}, "", id="review-before-designation"),
        pytest.param({"designated_on": "2018-02-30"}, "designated_on", id="no-such-day"),
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "门源\u202e县"}, "name", id="bidi-name"),
    ],
)
async def test_bad_designations_are_422(own_service: Service, overrides: dict[str, Any], field: str) -> None:
    response = await own_service.client.post(
        "/api/v1/designations", json=_designation(**overrides), headers=own_service.admin_headers
    )

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "invalid_input"
    assert problem.get("field", "") == field or [e["field"] for e in problem.get("errors", [])] == [field]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"at": "2025-02-30"}, id="bad-at"),
        pytest.param({"at": "2999-01-01"}, id="future-at"),
        pytest.param({"region": "63"}, id="bad-region"),
    ],
)
async def test_bad_list_parameters_are_422(own_service: Service, params: dict[str, str]) -> None:
    response = await own_service.client.get("/api/v1/designations", params=params, headers=own_service.admin_headers)

    assert response.status_code == 422 and response.json()["code"] == "invalid_input"


async def test_the_list_as_csv_for_excel(own_service: Service) -> None:
    await _county_history(own_service)
    await _create(own_service, _designation(QILIAN, name="=HYPERLINK(1)"))

    response = await own_service.client.get(
        "/api/v1/designations", params={"region": QILIAN}, headers={**own_service.admin_headers, "Accept": "text/csv"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    text = response.content.decode()
    assert text.startswith(UTF8_BOM + "编号,行政区划代码")
    row = text.splitlines()[1].split(",")
    assert row[1:5] == [QILIAN, "祁连县", "国家农产品质量安全县", "'=HYPERLINK(1)"]
    assert row[7:] == ["2025-03-01", "2", "1", "50.0", "2", "1", "50.0", "否", "撤销"]
