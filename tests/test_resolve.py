from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable

import httpx
import pytest
import redis.asyncio as aioredis

from codegen.format import check_digits, compose
from resolver.app import create_app
from resolver.edge.responses import PAGE_SECURITY_RAW_HEADERS
from resolver.ops.settings import Settings
from resolver.state import app_worker
from tests.conftest import QueryLog, Service
from tests.helpers import register_batch

DOCUMENT_QUERY = "FROM trace_codes tc"


def never_issued_code(region: str = "630121") -> str:
    return compose(1, region, secrets.randbelow(10**11))


async def test_resolve_answers_the_document(service: Service) -> None:
    created = await register_batch(service)
    code = created["trace_code"]

    response = await service.client.get(f"/api/v1/codes/{code}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["code"] == code
    assert doc["type"] == "production_batch"
    assert doc["status"] == "active"
    assert doc["product"]["name"] == "大通牦牛肉"
    assert doc["producer"]["region"] == {
        "code": "630121",
        "county": "大通回族土族自治县",
        "prefecture": "西宁市",
        "province": "青海省",
    }
    assert doc["batch"]["long_code"] == created["long_code"]
    assert doc["inspection"]["result"] == "pass"
    assert doc["certificate"]["kind"] == "承诺达标合格证"
    assert [e["kind"] for e in doc["chain"]] == ["inspection", "commissioning"]
    assert doc["url"] == f"https://trace.example.cn/t/{code}"


async def test_page_is_chinese_html_and_json_on_request(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]

    page = await service.client.get(f"/t/{code}", headers={"Accept": "text/html"})
    as_json = await service.client.get(f"/t/{code}", headers={"Accept": "application/json"})

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "大通牦牛肉" in page.text and "追溯链" in page.text and "承诺达标合格证" in page.text
    assert "<script" not in page.text
    assert as_json.json()["code"] == code


@pytest.mark.parametrize(
    ("accept", "is_json"),
    [
        pytest.param(None, False, id="absent"),
        pytest.param("*/*", False, id="anything-the-page"),
        pytest.param(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", False, id="browser"
        ),
        pytest.param("application/json", True, id="json"),
        pytest.param("application/json, text/plain, */*", True, id="json-named-beats-wildcard"),
        pytest.param("application/json, text/html", False, id="both-named-the-page"),
        pytest.param("application/json;q=0, text/html", False, id="json-refused"),
        pytest.param("application/json;q=0.9, text/html;q=0.8", True, id="json-preferred-by-q"),
        pytest.param("text/html;q=0.5, application/json", True, id="html-named-lower"),
        pytest.param("application/*", True, id="json-by-subtype-wildcard"),
    ],
)
async def test_page_or_json_by_accept_q_values(service: Service, accept: str | None, is_json: bool) -> None:
    code = (await register_batch(service))["trace_code"]
    headers = {} if accept is None else {"Accept": accept}

    found = await service.client.get(f"/t/{code}", headers=headers)
    malformed = await service.client.get("/t/1630121ABCDEFGHIJK00", headers=headers)

    assert found.status_code == 200 and malformed.status_code == 400
    if is_json:
        assert found.headers["content-type"] == "application/json" and found.json()["code"] == code
        assert malformed.headers["content-type"] == "application/problem+json"
    else:
        assert found.headers["content-type"] == "text/html; charset=utf-8" and "大通牦牛肉" in found.text
        assert malformed.headers["content-type"] == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(lambda c: c, id="plain"),
        pytest.param(lambda c: f"{c[0]} {c[1:7]} {c[7:10]} {c[10:14]} {c[14:18]} {c[18:]}", id="spaces"),
        pytest.param(lambda c: f"{c[0]}-{c[1:7]}-{c[7:18]}-{c[18:]}", id="dashes"),
        pytest.param(lambda c: f"https://trace.example.cn/t/{c}", id="url"),
    ],
)
async def test_scanner_spellings_resolve(service: Service, spell: Callable[[str], str]) -> None:
    code = (await register_batch(service))["trace_code"]

    response = await service.client.get(f"/api/v1/codes/{spell(code)}")

    assert response.status_code == 200
    assert response.json()["code"] == code


async def test_long_form_resolves_to_the_same_batch(service: Service) -> None:
    created = await register_batch(service)

    response = await service.client.get(f"/api/v1/codes/{created['long_code']}")

    assert response.status_code == 200
    assert response.json()["batch"]["trace_code"] == created["trace_code"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1630121ABCDEFGHIJK00", id="letters"),
        pytest.param("163012112345", id="short"),
        pytest.param("9" + never_issued_code()[1:], id="bad-type"),
        pytest.param(never_issued_code()[:-1] + "x", id="bad-last"),
    ],
)
async def test_malformed_code_is_400_without_store_io(service: Service, text: str) -> None:
    cache = app_worker(service.app).cache
    cache_calls_before = (cache.hits, cache.misses, cache.errors)

    response = await service.client.get(f"/api/v1/codes/{text}")

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "malformed_code"
    assert problem["status"] == 400 and problem["title"] and problem["detail"] and problem["type"]
    assert service.query_log.queries == []
    assert (cache.hits, cache.misses, cache.errors) == cache_calls_before


async def test_wrong_check_digits_are_400(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    wrong = code[:18] + f"{(int(code[18:]) + 1) % 100:02d}"
    assert check_digits(code[:18]) != wrong[18:]

    response = await service.client.get(f"/api/v1/codes/{wrong}")

    assert response.status_code == 400
    assert response.json()["reason"] == "bad_check_digits"


async def test_never_issued_code_is_404_and_cached_negative(service: Service) -> None:
    code = never_issued_code()

    first = await service.client.get(f"/api/v1/codes/{code}")
    second = await service.client.get(f"/t/{code}", headers={"Accept": "text/html"})

    assert first.status_code == 404
    assert first.json()["code"] == "unknown_code"
    assert second.status_code == 404 and "未找到" in second.text
    assert service.query_log.count(DOCUMENT_QUERY) == 1


async def test_warm_resolve_makes_no_postgres_query(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    await service.client.get(f"/api/v1/codes/{code}")
    service.query_log.queries.clear()

    for _ in range(5):
        response = await service.client.get(f"/api/v1/codes/{code}")
        assert response.status_code == 200

    assert service.query_log.queries == []


async def test_stampede_on_cold_code_makes_one_query(service: Service, redis: aioredis.Redis) -> None:
    code = (await register_batch(service))["trace_code"]
    await redis.flushdb()
    service.query_log.queries.clear()

    responses = await asyncio.gather(*(service.client.get(f"/api/v1/codes/{code}") for _ in range(50)))

    assert {r.status_code for r in responses} == {200}
    documents = [r.json() for r in responses]
    assert sorted(d.pop("scans")["count"] for d in documents) == list(range(1, 51))  # every scan counted once
    assert all(d == documents[0] for d in documents)
    assert service.query_log.count(DOCUMENT_QUERY) == 1


async def test_resolves_from_postgres_when_redis_is_down(settings: Settings) -> None:
    dead = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    app = create_app(dead)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        async with client:
            service = Service(app, client, dead, {"Authorization": f"Bearer {dead.admin_token}"}, QueryLog())
            code = (await register_batch(service))["trace_code"]

            resolved = await client.get(f"/api/v1/codes/{code}")
            health = await client.get("/healthz")

    assert resolved.status_code == 200
    assert health.json() == {"status": "degraded", "postgres": "ok", "redis": "down"}


async def test_health_is_ok_with_both_stores(service: Service) -> None:
    response = await service.client.get("/healthz")

    assert response.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}


async def test_scan_answers_carry_the_headers_of_a_starlette_response(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]

    document = await service.client.get(f"/api/v1/codes/{code}")
    page = await service.client.get(f"/t/{code}", headers={"Accept": "text/html"})

    assert document.headers.raw == [(b"content-length", str(len(document.content)).encode()),
                                    (b"content-type", b"application/json")]  # fmt: skip
    assert page.headers.raw == [(b"content-length", str(len(page.content)).encode()),
                                (b"content-type", b"text/html; charset=utf-8"), *PAGE_SECURITY_RAW_HEADERS]  # fmt: skip


async def test_scans_member_holds_the_statistics_of_this_scan(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]

    first = (await service.client.get(f"/api/v1/codes/{code}")).json()
    second = (await service.client.get(f"/t/{code}", headers={"Accept": "application/json"})).json()

    assert first["scans"] == {"count": 1, "first_at": first["scans"]["first_at"], "places_recent": 1, "warning": False}
    assert first["scans"]["first_at"].startswith("20") and first["scans"]["first_at"].endswith("+08:00")
    assert second["scans"] == {**first["scans"], "count": 2}
    assert {k: v for k, v in second.items() if k != "scans"} == {k: v for k, v in first.items() if k != "scans"}


@pytest.mark.parametrize("path", [pytest.param("/api/v1/codes/{}", id="document"), pytest.param("/t/{}", id="page")])
async def test_head_answers_as_get_without_a_body(service: Service, path: str) -> None:
    code = (await register_batch(service))["trace_code"]
    await service.client.get(path.format(code))  # first scan: the count of the next two has one digit, as here

    head = await service.client.head(path.format(code))
    get = await service.client.get(path.format(code))

    assert head.status_code == 200
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


@pytest.mark.parametrize("method", ["OPTIONS", "POST", "DELETE"])
@pytest.mark.parametrize("path", [pytest.param("/api/v1/codes/{}", id="document"), pytest.param("/t/{}", id="page")])
async def test_other_methods_are_405_problems_that_allow_get_and_head(service: Service, path: str, method: str) -> None:
    code = (await register_batch(service))["trace_code"]

    response = await service.client.request(method, path.format(code))

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert response.json()["code"] == "method_not_allowed"


async def test_malformed_code_on_the_page_is_a_chinese_html_problem(service: Service) -> None:
    response = await service.client.get("/t/1630121ABCDEFGHIJK00", headers={"Accept": "text/html"})
    as_json = await service.client.get("/t/1630121ABCDEFGHIJK00", headers={"Accept": "application/json"})

    assert response.status_code == 400
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "追溯码格式错误" in response.text
    assert as_json.status_code == 400 and as_json.json()["code"] == "malformed_code"
