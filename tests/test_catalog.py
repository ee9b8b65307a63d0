"""The registry's records over the API: producers, products and certifications, within the token scopes."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any

import pytest

from tests.conftest import Service, random_credit_code
from tests.helpers import register_batch, register_producer

HAIXI, DELINGHA, GOLMUD = "632800", "632802", "632801"


async def _token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _certification(credit_code: str, **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "green",
        "number": f"LB-18-{secrets.token_hex(5).upper()}",
        "credit_code": credit_code,
        "product": {"name": "柴达木枸杞", "category": "goji"},
        "valid_from": "2025-03-01",
        "valid_to": "2028-02-28",
        **overrides,
    }


# --- producers -----------------------------------------------------------------------------------


async def test_producer_reads_itself_only(service: Service) -> None:
    own = await register_producer(service, region=DELINGHA)
    other = await register_producer(service, region=DELINGHA)
    producer = await _token(service, "producer", own)

    mine = await service.client.get(f"/api/v1/producers/{own}", headers=producer)
    theirs = await service.client.get(f"/api/v1/producers/{other}", headers=producer)
    listing = await service.client.get("/api/v1/producers", headers=producer)
    elsewhere = await service.client.get(f"/api/v1/producers?region={HAIXI}", headers=producer)

    assert mine.status_code == 200
    assert mine.json() | {"id": 0, "created_at": None, "name": None} == {
        "id": 0, "credit_code": own, "name": None, "kind": "cooperative", "kind_label": "农民专业合作社",
        "region_code": DELINGHA, "region_name": "德令哈市", "contact": "0971-0000000", "batch_count": 0,
        "last_issued_at": None, "traced": False, "tags": [], "created_at": None,
    }  # fmt: skip
    assert theirs.status_code == 403 and theirs.json()["code"] == "forbidden"
    assert [p["credit_code"] for p in listing.json()["items"]] == [own]
    assert elsewhere.status_code == 403


async def test_regulator_lists_its_region(service: Service) -> None:
    inside = await register_producer(service, region=DELINGHA)
    outside = await register_producer(service, region="630121")
    haixi = await _token(service, "regulator", HAIXI)

    default = await service.client.get("/api/v1/producers?limit=1000", headers=haixi)
    one = await service.client.get(f"/api/v1/producers?credit_code={inside}", headers=haixi)
    forbidden = await service.client.get("/api/v1/producers?region=630100", headers=haixi)
    stranger = await service.client.get(f"/api/v1/producers/{outside}", headers=haixi)

    codes = {p["credit_code"] for p in default.json()["items"]}
    assert inside in codes and outside not in codes
    assert all(p["region_code"].startswith("6328") for p in default.json()["items"])
    assert [p["credit_code"] for p in one.json()["items"]] == [inside]
    assert forbidden.status_code == 403 and stranger.status_code == 403


async def test_listing_pages_with_after(service: Service) -> None:
    region = "632823"  # 天峻县
    codes = [await register_producer(service, region=region) for _ in range(3)]

    first = (
        await service.client.get(f"/api/v1/producers?region={region}&limit=2", headers=service.admin_headers)
    ).json()
    after = first["next_after"]
    rest = (
        await service.client.get(f"/api/v1/producers?region={region}&after={after}", headers=service.admin_headers)
    ).json()

    seen = [p["credit_code"] for p in first["items"] + rest["items"]]
    assert [c for c in seen if c in codes] == codes
    assert rest["next_after"] is None


async def test_producer_updates_its_contact_but_not_its_kind(service: Service) -> None:
    own = await register_producer(service, region=DELINGHA)
    producer = await _token(service, "producer", own)

    contact = await service.client.patch(f"/api/v1/producers/{own}", json={"contact": "13800000000"}, headers=producer)
    kind = await service.client.patch(f"/api/v1/producers/{own}", json={"kind": "enterprise"}, headers=producer)

    assert contact.status_code == 200 and contact.json()["contact"] == "13800000000"
    assert kind.status_code == 403


async def test_regulator_moves_a_producer_only_within_its_region(service: Service) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    haixi = await _token(service, "regulator", HAIXI)

    moved = await service.client.patch(
        f"/api/v1/producers/{credit_code}", json={"region_code": GOLMUD, "kind": "enterprise"}, headers=haixi
    )
    away = await service.client.patch(f"/api/v1/producers/{credit_code}", json={"region_code": "630121"}, headers=haixi)
    province = await service.client.patch(
        f"/api/v1/producers/{credit_code}", json={"region_code": "630000"}, headers=service.admin_headers
    )

    assert moved.status_code == 200
    assert (moved.json()["region_code"], moved.json()["kind"]) == (GOLMUD, "enterprise")
    assert away.status_code == 403
    assert province.status_code == 422 and province.json()["field"] == "region_code"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"kind": "emperor"}, id="kind"),
        pytest.param({"name": ""}, id="empty-name"),
        pytest.param({"credit_code": "x"}, id="unknown-field"),
        pytest.param({"name": "合作社\x00"}, id="control-character"),
    ],
)
async def test_producer_update_is_validated(service: Service, body: dict[str, Any]) -> None:
    credit_code = await register_producer(service, region=DELINGHA)

    response = await service.client.patch(f"/api/v1/producers/{credit_code}", json=body, headers=service.admin_headers)

    assert response.status_code == 422 and response.json()["code"] == "invalid_input"


async def test_producer_with_batches_cannot_be_deleted(service: Service) -> None:
    with_batch = (await register_batch(service))["trace_code"]
    credit_code = (await service.client.get(f"/api/v1/codes/{with_batch}")).json()["producer"]["credit_code"]
    without = await register_producer(service, region=DELINGHA)
    await service.client.post("/api/v1/certifications", json=_certification(without), headers=service.admin_headers)

    refused = await service.client.delete(f"/api/v1/producers/{credit_code}", headers=service.admin_headers)
    deleted = await service.client.delete(f"/api/v1/producers/{without}", headers=service.admin_headers)
    gone = await service.client.get(f"/api/v1/producers/{without}", headers=service.admin_headers)

    assert refused.status_code == 409 and refused.json()["code"] == "producer_has_batches"
    assert deleted.status_code == 204
    assert gone.status_code == 404 and gone.json()["code"] == "unknown_producer"


async def test_unknown_and_malformed_producers(service: Service) -> None:
    unknown = await service.client.get(f"/api/v1/producers/{random_credit_code()}", headers=service.admin_headers)
    malformed = await service.client.get("/api/v1/producers/91630121MA7XXXXXXX", headers=service.admin_headers)
    anonymous = await service.client.get("/api/v1/producers")

    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_producer"
    assert malformed.status_code == 422 and malformed.json()["field"] == "credit_code"
    assert anonymous.status_code == 401


# --- products ------------------------------------------------------------------------------------


async def test_producer_manages_its_products(service: Service) -> None:
    own = await register_producer(service, region=DELINGHA)
    producer = await _token(service, "producer", own)
    body = {"name": "柴达木黑枸杞", "category": "goji", "gtin": "6901234567892"}

    created = await service.client.post(f"/api/v1/producers/{own}/products", json=body, headers=producer)
    again = await service.client.post(f"/api/v1/producers/{own}/products", json=body, headers=producer)
    product_id = created.json()["id"]
    cleared = await service.client.patch(f"/api/v1/products/{product_id}", json={"gtin": None}, headers=producer)
    bad_gtin = await service.client.patch(
        f"/api/v1/products/{product_id}", json={"gtin": "6901234567893"}, headers=producer
    )
    listing = await service.client.get(f"/api/v1/producers/{own}/products", headers=producer)
    deleted = await service.client.delete(f"/api/v1/products/{product_id}", headers=producer)

    assert created.status_code == 201
    assert created.json()["gtin"] == "06901234567892" and created.json()["category_label"] == "枸杞"
    assert again.status_code == 409 and again.json()["code"] == "product_exists"
    assert cleared.status_code == 200 and cleared.json()["gtin"] is None
    assert bad_gtin.status_code == 422 and bad_gtin.json()["field"] == "gtin"
    assert [p["name"] for p in listing.json()["items"]] == ["柴达木黑枸杞"]
    assert deleted.status_code == 204


async def test_product_in_use_stays_and_others_cannot_touch_it(service: Service) -> None:
    trace_code = (await register_batch(service))["trace_code"]
    document = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()
    credit_code = document["producer"]["credit_code"]
    products = await service.client.get(f"/api/v1/producers/{credit_code}/products", headers=service.admin_headers)
    product_id = products.json()["items"][0]["id"]
    stranger = await _token(service, "producer", random_credit_code())

    in_use = await service.client.delete(f"/api/v1/products/{product_id}", headers=service.admin_headers)
    not_theirs = await service.client.patch(f"/api/v1/products/{product_id}", json={"name": "x"}, headers=stranger)
    missing = await service.client.get("/api/v1/products/999999999", headers=service.admin_headers)
    beyond = await service.client.get(f"/api/v1/certifications/{10**30}", headers=service.admin_headers)

    assert in_use.status_code == 409 and in_use.json()["code"] == "product_in_use"
    assert not_theirs.status_code == 403
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_product"
    assert beyond.status_code == 404 and beyond.json()["code"] == "unknown_certification"


# --- certifications ------------------------------------------------------------------------------


async def test_certification_shows_on_the_consumer_document_at_once(service: Service) -> None:
    trace_code = (await register_batch(service))["trace_code"]
    credit_code = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()["producer"]["credit_code"]
    body = _certification(credit_code, product={"name": "大通牦牛肉", "category": "yak"})

    created = await service.client.post("/api/v1/certifications", json=body, headers=service.admin_headers)
    document = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()  # was cached before

    assert created.status_code == 201
    assert created.json()["product"]["name"] == "大通牦牛肉"
    assert [(c["kind"], c["number"]) for c in document["certifications"]] == [("green", body["number"])]


async def test_certification_lifecycle(service: Service) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    haixi = await _token(service, "regulator", HAIXI)
    body = _certification(credit_code)

    created = await service.client.post("/api/v1/certifications", json=body, headers=haixi)
    duplicate = await service.client.post("/api/v1/certifications", json=body, headers=haixi)
    certification_id = created.json()["id"]
    renewed = await service.client.patch(
        f"/api/v1/certifications/{certification_id}", json={"valid_to": "2031-02-28"}, headers=haixi
    )
    reversed_dates = await service.client.patch(
        f"/api/v1/certifications/{certification_id}", json={"valid_from": "2032-01-01"}, headers=haixi
    )
    producer_wide = await service.client.patch(
        f"/api/v1/certifications/{certification_id}", json={"product": None}, headers=haixi
    )
    listed = await service.client.get(f"/api/v1/certifications?credit_code={credit_code}", headers=haixi)
    deleted = await service.client.delete(f"/api/v1/certifications/{certification_id}", headers=haixi)
    gone = await service.client.get(f"/api/v1/certifications/{certification_id}", headers=haixi)

    assert created.status_code == 201 and created.json()["kind_label"] == "绿色食品"
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "certification_exists"
    assert renewed.status_code == 200 and renewed.json()["valid_to"] == "2031-02-28"
    assert reversed_dates.status_code == 422
    assert producer_wide.status_code == 200 and producer_wide.json()["product"] is None
    assert [c["id"] for c in listed.json()["items"]] == [certification_id]
    assert deleted.status_code == 204 and gone.status_code == 404


async def _set_status(service: Service, certification_id: int, headers: dict[str, str], **body: Any) -> Any:
    return await service.client.patch(f"/api/v1/certifications/{certification_id}", json=body, headers=headers)


async def test_certification_status_is_the_regulators_to_change(service: Service) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    created = await service.client.post(
        "/api/v1/certifications", json=_certification(credit_code), headers=service.admin_headers
    )
    certification_id = created.json()["id"]
    haixi = await _token(service, "regulator", HAIXI)

    by_producer = await _set_status(
        service, certification_id, await _token(service, "producer", credit_code), status="suspended"
    )
    by_other_region = await _set_status(
        service, certification_id, await _token(service, "regulator", "630100"), status="suspended"
    )
    by_region = await _set_status(service, certification_id, haixi, status="suspended", status_reason="抽检不合格")
    stored = await service.client.get(f"/api/v1/certifications/{certification_id}", headers=haixi)

    assert created.json()["status"] == "valid" and created.json()["status_label"] == "有效"
    assert by_producer.status_code == 403 and by_producer.json()["code"] == "forbidden"
    assert by_other_region.status_code == 403 and by_other_region.json()["code"] == "forbidden"
    assert by_region.status_code == 200, by_region.text
    assert stored.json()["status"] == "suspended" and stored.json()["status_label"] == "暂停"
    assert stored.json()["status_reason"] == "抽检不合格" and stored.json()["status_changed_at"] is not None


async def test_certification_state_transitions(service: Service) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    created = await service.client.post(
        "/api/v1/certifications", json=_certification(credit_code), headers=service.admin_headers
    )
    certification_id = created.json()["id"]
    admin = service.admin_headers

    steps = [
        await _set_status(service, certification_id, admin, status="suspended", status_reason="整改期间"),
        await _set_status(service, certification_id, admin, valid_to="2029-02-28"),  # a renewal keeps the state
        await _set_status(service, certification_id, admin, status="valid"),  # the suspension lifted
        await _set_status(service, certification_id, admin, status="revoked", status_reason="冒用标志"),
        await _set_status(service, certification_id, admin, status="revoked"),  # once more: nothing changes
    ]
    reinstated = await _set_status(service, certification_id, admin, status="valid")
    suspended = await _set_status(service, certification_id, admin, status="suspended")

    assert [r.status_code for r in steps] == [200] * 5
    assert [(r.json()["status"], r.json()["status_reason"]) for r in steps] == [
        ("suspended", "整改期间"), ("suspended", "整改期间"), ("valid", None), ("revoked", "冒用标志"),
        ("revoked", "冒用标志"),
    ]  # fmt: skip
    assert steps[1].json()["valid_to"] == "2029-02-28"
    assert reinstated.status_code == 409 and reinstated.json()["code"] == "certification_revoked"
    assert suspended.status_code == 409 and suspended.json()["code"] == "certification_revoked"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"status": "expired"}, "status", id="expired-is-derived"),
        pytest.param({"status": "cancelled"}, "status", id="unknown"),
        pytest.param({"status": None, "status_reason": "x"}, "(body)", id="reason-without-status"),
        pytest.param({"status_reason": "原因"}, "(body)", id="reason-alone"),
        pytest.param({"status": "suspended", "status_reason": "x" * 501}, "status_reason", id="long-reason"),
        pytest.param({"status": "suspended", "status_reason": " "}, "status_reason", id="blank-reason"),
        pytest.param({"status": 1}, "status", id="not-text"),
    ],
)
async def test_certification_status_is_validated(service: Service, body: dict[str, Any], field: str) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    created = await service.client.post(
        "/api/v1/certifications", json=_certification(credit_code), headers=service.admin_headers
    )

    response = await _set_status(service, created.json()["id"], service.admin_headers, **body)
    stored = await service.client.get(f"/api/v1/certifications/{created.json()['id']}", headers=service.admin_headers)

    assert response.status_code == 422, response.text
    assert {e["field"] or "(body)" for e in response.json()["errors"]} == {field}
    assert stored.json()["status"] == "valid"


async def test_expired_is_derived_from_valid_to(service: Service) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    yesterday = dt.date.today() - dt.timedelta(days=1)
    created = await service.client.post(
        "/api/v1/certifications",
        json=_certification(credit_code, valid_from="2020-01-01", valid_to=yesterday.isoformat()),
        headers=service.admin_headers,
    )

    renewed = await _set_status(service, created.json()["id"], service.admin_headers, valid_to="2030-12-31")

    assert created.json()["status"] == "expired" and created.json()["status_label"] == "过期"
    assert renewed.json()["status"] == "valid"


def _numbers(document: dict[str, Any]) -> list[str]:
    return [c["number"] for c in document["certifications"]]


async def test_a_suspended_certification_leaves_the_cached_document_at_once(service: Service) -> None:
    trace_code = (await register_batch(service))["trace_code"]
    credit_code = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()["producer"]["credit_code"]
    body = _certification(credit_code, product={"name": "大通牦牛肉", "category": "yak"})
    created = await service.client.post("/api/v1/certifications", json=body, headers=service.admin_headers)
    shown = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()  # cached now
    page_before = (await service.client.get(f"/t/{trace_code}")).text

    await _set_status(service, created.json()["id"], service.admin_headers, status="suspended")
    hidden = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()
    page_after = (await service.client.get(f"/t/{trace_code}")).text
    await _set_status(service, created.json()["id"], service.admin_headers, status="valid")
    again = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()

    assert _numbers(shown) == [body["number"]] and body["number"] in page_before
    assert _numbers(hidden) == [] and body["number"] not in page_after
    assert _numbers(again) == [body["number"]]


async def test_a_certification_revoked_elsewhere_reaches_another_workers_cached_document_within_a_second(
    service: Service, second_service: Service
) -> None:
    trace_code = (await register_batch(service))["trace_code"]
    credit_code = (await service.client.get(f"/api/v1/codes/{trace_code}")).json()["producer"]["credit_code"]
    body = _certification(credit_code, product={"name": "大通牦牛肉", "category": "yak"})
    created = await service.client.post("/api/v1/certifications", json=body, headers=service.admin_headers)
    assert _numbers((await second_service.client.get(f"/api/v1/codes/{trace_code}")).json()) == [body["number"]]

    revoked = await _set_status(service, created.json()["id"], service.admin_headers, status="revoked")
    returned_at = time.monotonic()
    seen: list[tuple[float, list[str]]] = []
    while time.monotonic() - returned_at < 1.5:
        document = (await second_service.client.get(f"/api/v1/codes/{trace_code}")).json()
        seen.append((time.monotonic() - returned_at, _numbers(document)))

    assert revoked.status_code == 200
    last_shown = max((at for at, numbers in seen if numbers), default=0.0)
    assert last_shown < 1.0, f"the other worker still showed the revoked certification {last_shown:.3f} s after"
    assert seen[-1][1] == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"valid_from": "2028-01-01", "valid_to": "2027-01-01"}, "(body)", id="reversed"),
        pytest.param({"kind": "halal"}, "kind", id="kind"),
        pytest.param({"number": " "}, "number", id="empty-number"),
        pytest.param({"valid_to": "2026-02-30"}, "valid_to", id="no-such-day"),
        pytest.param({"product": {"name": "枸杞", "category": "caviar"}}, "product.category", id="category"),
    ],
)
async def test_certification_is_validated(service: Service, overrides: dict[str, Any], field: str) -> None:
    credit_code = await register_producer(service, region=DELINGHA)

    response = await service.client.post(
        "/api/v1/certifications", json=_certification(credit_code, **overrides), headers=service.admin_headers
    )

    assert response.status_code == 422
    assert {e["field"] or "(body)" for e in response.json()["errors"]} == {field}


async def test_certifications_are_the_regulators_to_write(service: Service) -> None:
    credit_code = await register_producer(service, region=DELINGHA)
    producer = await _token(service, "producer", credit_code)
    xining = await _token(service, "regulator", "630100")
    created = await service.client.post(
        "/api/v1/certifications", json=_certification(credit_code), headers=service.admin_headers
    )

    by_producer = await service.client.post(
        "/api/v1/certifications", json=_certification(credit_code), headers=producer
    )
    by_other_region = await service.client.post(
        "/api/v1/certifications", json=_certification(credit_code), headers=xining
    )
    read_own = await service.client.get(f"/api/v1/certifications/{created.json()['id']}", headers=producer)
    read_other = await service.client.get(f"/api/v1/certifications/{created.json()['id']}", headers=xining)

    assert by_producer.status_code == 403 and by_other_region.status_code == 403
    assert read_own.status_code == 200 and read_other.status_code == 403


async def test_unknown_producer_of_a_certification(service: Service) -> None:
    response = await service.client.post(
        "/api/v1/certifications",
        json=_certification(random_credit_code(), valid_to=(dt.date.today() + dt.timedelta(days=9)).isoformat()),
        headers=service.admin_headers,
    )

    assert response.status_code == 404 and response.json()["code"] == "unknown_producer"
