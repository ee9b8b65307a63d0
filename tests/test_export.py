"""Export of batches and events: JSON lines in the national platform's names, and EPCIS 2.0 documents that
validate against GS1's EPCIS 2.0 JSON schema (tests/data/epcis)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft7Validator, FormatChecker

from resolver.ops.settings import Settings
from resolver.scan.documents import china_today
from resolver.state import app_worker
from tests.conftest import Service
from tests.helpers import TRACECODE, register_batch, register_producer, subprocess_env

EPCIS_DIR = Path(__file__).with_name("data") / "epcis"
REGION, PREFECTURE = "632802", "632800"  # 德令哈市, 海西州
_URI = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*|_):[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _is_uri(value: object) -> bool:
    """An absolute URI of RFC 3986 (a scheme, then only characters a URI may hold, escapes well-formed), or a
    JSON-LD blank node identifier `_:name`, which the standard's own example uses as a document id."""
    return not isinstance(value, str) or (_URI.fullmatch(value) is not None and _PERCENT.search(value) is None)


def _is_date_time(value: object) -> bool:
    """An RFC 3339 date-time: with seconds and an offset, a real date and time."""
    if not isinstance(value, str):
        return True
    if _DATE_TIME.fullmatch(value) is None:
        return False
    dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


# jsonschema checks "uri" and "date-time" only with optional packages, which are not installed: these stand in.
_checker = FormatChecker()
_checker.checks("uri")(_is_uri)
_checker.checks("date-time", raises=ValueError)(_is_date_time)
EPCIS = Draft7Validator(json.loads((EPCIS_DIR / "EPCIS-JSON-Schema.json").read_text()), format_checker=_checker)


def assert_valid_epcis(document: dict[str, Any]) -> None:
    errors = sorted(EPCIS.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def test_the_validator_accepts_the_standards_example() -> None:
    assert_valid_epcis(json.loads((EPCIS_DIR / "Example_9.6.1-ObjectEventWithDigitalLink.jsonld").read_text()))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("eventTime", "2005-04-03 20:33", id="time"),
        pytest.param("eventTime", "2005-02-30T20:33:31.116-06:00", id="no-such-day"),
        pytest.param("epcList", ["not a uri"], id="epc"),
        pytest.param("epcList", ["https://trace.example.cn/t/1 2"], id="space"),
        pytest.param("action", "ADDED", id="action"),
        pytest.param("eventTimeZoneOffset", "+8:00", id="offset"),
        pytest.param("bizStep", "urn:epcglobal:cbv:bizstep:shipping", id="cbv-urn"),
    ],
)
def test_the_validator_rejects_broken_events(key: str, value: object) -> None:
    example = json.loads((EPCIS_DIR / "Example_9.6.1-ObjectEventWithDigitalLink.jsonld").read_text())
    event = example["epcisBody"]["eventList"][0]

    broken = {**example, "epcisBody": {"eventList": [{**event, key: value}]}}

    assert list(EPCIS.iter_errors(broken))


async def _token(service: Service, role: str, scope: str) -> dict[str, str]:
    response = await service.client.post(
        "/api/v1/tokens", json={"role": role, "scope": scope}, headers=service.admin_headers
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def _batch_with_a_full_chain(service: Service) -> str:
    """A batch issued, inspected, admitted at a market gate, partly sold on and recalled: every kind of event."""
    credit_code = await register_producer(service, region=REGION)
    goji = {"name": "柴达木枸杞", "category": "goji", "gtin": None}
    code: str = (await register_batch(service, credit_code, product=goji))["trace_code"]
    market = await service.client.post(
        "/api/v1/markets", json={"name": "德令哈农贸市场", "region_code": REGION}, headers=service.admin_headers
    )
    gate = await _token(service, "gate", f"{market.json()['id']}/east-1")
    scan = await service.client.post(
        "/api/v1/gate/scans",
        json={"code": code, "quantity": 50, "unit": "kg", "idempotency_key": secrets.token_hex(8)},
        headers=gate,
    )
    assert scan.json()["decision"] == "accept", scan.text
    trade = await service.client.post(
        "/api/v1/trades",
        json={"voucher_code": scan.json()["voucher_code"], "buyer": {"name": "西宁某超市"}, "quantity": 10,
              "unit": "kg", "idempotency_key": secrets.token_hex(8)},
        headers=gate,
    )  # fmt: skip
    assert trade.status_code == 201, trade.text
    recall = await service.client.post(
        f"/api/v1/batches/{code}/recall", json={"reason": "农药残留超标"}, headers=service.admin_headers
    )
    assert recall.status_code == 200, recall.text
    return code


def _period() -> dict[str, str]:
    today = china_today()
    return {"region": PREFECTURE, "from": (today - dt.timedelta(days=7)).isoformat(), "to": today.isoformat()}


async def test_national_export_has_the_batch_and_its_events(service: Service) -> None:
    code = await _batch_with_a_full_chain(service)

    response = await service.client.get("/api/v1/exports/batches", params=_period(), headers=service.admin_headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert lines[0]["recordType"] == "header" and lines[0]["areaCode"] == PREFECTURE
    assert lines[0]["schema"].startswith("tracecode-national/provisional")
    (batch,) = [r for r in lines if r["recordType"] == "batch" and r["traceCode"] == code]
    expected = {
        "productName": "柴达木枸杞", "productCategory": "goji", "productCategoryName": "枸杞",
        "productClassCode": "01050100", "areaCode": REGION, "areaName": "德令哈市", "entityType": "cooperative",
        "entityTypeCode": "2", "quantity": 1200, "unit": "kg", "inspectionResult": "pass",
        "certificateType": "承诺达标合格证", "status": "recalled", "recallReason": "农药残留超标",
    }  # fmt: skip
    assert {key: batch[key] for key in expected} == expected
    assert batch["longTraceCode"] and batch["creditCode"] and batch["createTime"].endswith("+08:00")
    events = [r for r in lines if r["recordType"] == "event" and r["traceCode"] == code]
    assert [e["eventType"] for e in events] == ["inspection", "commissioning", "market_entry", "trade", "recall"]
    entry, trade = events[2], events[3]
    assert (entry["marketName"], entry["gate"], entry["quantity"]) == ("德令哈农贸市场", "east-1", 50)
    assert (trade["buyerName"], trade["quantity"]) == ("西宁某超市", 10) and trade["circulationCode"]
    assert events[4]["recallReason"] == "农药残留超标"


async def test_national_export_lists_only_valid_certifications(service: Service) -> None:
    credit_code = await register_producer(service, region=REGION)
    code = (await register_batch(service, credit_code))["trace_code"]
    numbers = {}
    for kind, status in (("green", None), ("organic", "suspended"), ("gi", "revoked")):
        body = {"kind": kind, "number": f"EX-{secrets.token_hex(5)}", "credit_code": credit_code, "product": None,
                "valid_from": "2025-01-01", "valid_to": "2030-12-31"}  # fmt: skip
        created = await service.client.post("/api/v1/certifications", json=body, headers=service.admin_headers)
        numbers[kind] = body["number"]
        if status is not None:
            changed = await service.client.patch(
                f"/api/v1/certifications/{created.json()['id']}", json={"status": status},
                headers=service.admin_headers,
            )  # fmt: skip
            assert changed.status_code == 200, changed.text

    response = await service.client.get("/api/v1/exports/batches", params=_period(), headers=service.admin_headers)

    lines = [orjson.loads(line) for line in response.content.splitlines()]
    (batch,) = [r for r in lines if r["recordType"] == "batch" and r["traceCode"] == code]
    assert [c["certificationNumber"] for c in batch["qualityCertifications"]] == [numbers["green"]]


async def test_epcis_export_validates_and_maps_each_event(service: Service) -> None:
    code = await _batch_with_a_full_chain(service)

    response = await service.client.get(
        "/api/v1/exports/batches", params={**_period(), "format": "epcis"}, headers=service.admin_headers
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/ld+json")
    document = response.json()
    assert_valid_epcis(document)
    assert document["@context"][0] == "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
    assert (document["type"], document["schemaVersion"]) == ("EPCISDocument", "2.0")
    uri = f"https://trace.example.cn/t/{code}"
    events = [e for e in document["epcisBody"]["eventList"] if e["epcList"] == [uri]]
    assert [(e["action"], e["bizStep"], e.get("disposition")) for e in events] == [
        ("OBSERVE", "inspecting", "conformant"),
        ("ADD", "commissioning", "active"),
        ("OBSERVE", "accepting", "active"),
        ("OBSERVE", "shipping", "in_transit"),
        ("OBSERVE", "holding", "recalled"),
    ]
    assert all(e["eventTimeZoneOffset"] == "+08:00" and e["eventTime"].endswith("+08:00") for e in events)
    assert len({e["eventID"] for e in events}) == 5
    commissioning, entry = events[1], events[2]
    assert commissioning["ilmd"]["cbvmda:lotNumber"] and commissioning["tc:quantity"] == 1200
    assert commissioning["readPoint"] == {"id": f"https://trace.example.cn/regions/{REGION}"}
    assert entry["readPoint"]["id"].endswith("/gates/east-1") and entry["bizLocation"]["id"] in entry["readPoint"]["id"]
    assert entry["tc:voucher"].startswith("https://trace.example.cn/t/3")


async def test_export_takes_only_the_period(service: Service) -> None:
    old = (await register_batch(service, await register_producer(service, region=REGION)))["trace_code"]
    async with app_worker(service.app).pool.acquire() as conn:
        batch_id = await conn.fetchval("SELECT id FROM batches WHERE trace_code = $1", old)
        await conn.execute("UPDATE batches SET created_at = created_at - interval '40 days' WHERE id = $1", batch_id)
        await conn.execute(
            "UPDATE events SET event_time = event_time - interval '40 days' WHERE batch_id = $1", batch_id
        )
    params = _period()
    earlier = {**params, "from": (china_today() - dt.timedelta(days=50)).isoformat()}

    recent = (await service.client.get("/api/v1/exports/batches", params=params, headers=service.admin_headers)).text
    longer = (await service.client.get("/api/v1/exports/batches", params=earlier, headers=service.admin_headers)).text

    assert old not in recent
    assert old in longer


async def test_export_of_an_empty_region_is_a_valid_document(service: Service) -> None:
    params = {"region": "650000", "from": "2020-01-01", "to": "2020-01-31", "format": "epcis"}  # 新疆, before any data

    response = await service.client.get("/api/v1/exports/batches", params=params, headers=service.admin_headers)

    assert response.json()["epcisBody"]["eventList"] == []
    assert_valid_epcis(response.json())


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        pytest.param({"region": "632802", "from": "2026-02-30", "to": "2026-03-01"}, 422, "from", id="bad-date"),
        pytest.param({"region": "632802", "from": "2026-03-01", "to": "2026-02-01"}, 422, "to", id="reversed"),
        pytest.param({"region": "632802", "from": "2026-03-01"}, 422, "to", id="missing"),
        pytest.param({"region": "632802", "from": "2026-03-01", "to": "9999-12-31"}, 422, "to", id="far-future"),
        pytest.param({"region": "6328", "from": "2026-01-01", "to": "2026-02-01"}, 422, "region", id="region"),
        pytest.param({"region": "632802", "from": "2026-01-01", "to": "2026-02-01", "format": "xml"}, 422, "format",
                     id="format"),
        pytest.param({"region": "999999", "from": "2026-01-01", "to": "2026-02-01"}, 404, None, id="unknown-region"),
    ],
)  # fmt: skip
async def test_export_parameters_are_checked(
    service: Service, params: dict[str, str], status: int, field: str | None
) -> None:
    response = await service.client.get("/api/v1/exports/batches", params=params, headers=service.admin_headers)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json().get("field") == field


async def test_export_is_for_the_regions_regulator(service: Service) -> None:
    haixi = await _token(service, "regulator", PREFECTURE)
    xining = await _token(service, "regulator", "630100")
    params = _period()

    inside = await service.client.get("/api/v1/exports/batches", params={**params, "region": REGION}, headers=haixi)
    outside = await service.client.get("/api/v1/exports/batches", params=params, headers=xining)
    anonymous = await service.client.get("/api/v1/exports/batches", params=params)

    assert (inside.status_code, outside.status_code, anonymous.status_code) == (200, 403, 401)


async def test_export_from_the_command_line(service: Service, settings: Settings, tmp_path: Path) -> None:
    code = await _batch_with_a_full_chain(service)
    out = tmp_path / "export.jsonld"
    env = subprocess_env(
        DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url, TRACECODE_PUBLIC_URL=settings.public_url
    )
    period = _period()

    done = await asyncio.to_thread(
        subprocess.run,
        [TRACECODE, "export", "batches", "--region", REGION, "--from", period["from"], "--to", period["to"],
         "--format", "epcis", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert_valid_epcis(document)
    assert any(e["epcList"] == [f"https://trace.example.cn/t/{code}"] for e in document["epcisBody"]["eventList"])
