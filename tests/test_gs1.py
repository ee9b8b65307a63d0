"""GS1 Digital Link resolution (resolver.scan.gs1, gs1_index, gs1_links) on the real Postgres and Redis: what each
level resolves to, the product page, the memory tier and what keeps it current. The standard's statements, one by
one, are in test_gs1_conformance.py; the path syntax in test_gs1_uri.py."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import quote

import asyncpg
import pytest

from resolver import queries
from resolver.scan import gs1_links
from resolver.scan.gs1_index import UNKNOWN_TTL_S, DigitalLinkIndex
from resolver.state import app_worker
from tests.conftest import Service
from tests.gs1_support import (
    BASE_SCHEMA_URI,
    BROWSER_ACCEPT,
    GS1_SCHEMA_URI,
    PRODUCT_NAME,
    PUBLIC_URL,
    certify,
    example,
    make_entity,
    random_lot,
    schema_errors,
    without_gs1_members,
)
from tests.helpers import issue_labels, next_package_code, package_code, random_gtin, register_batch
from tests.test_faults import OwnServers, own_servers, own_service  # noqa: F401 (fixtures)

# --- the three levels --------------------------------------------------------------------------------------------


async def test_gtin_resolves_to_the_product_page_and_its_linkset(service: Service, pg: asyncpg.Connection) -> None:
    entity = await make_entity(service)
    await certify(pg, entity.credit_code, "organic")

    redirected = await service.client.get(f"/01/{entity.gtin}")
    linkset = (await service.client.get(f"/01/{entity.gtin}", params={"linkType": "linkset"})).json()

    assert redirected.headers["location"] == f"{PUBLIC_URL}/p/{entity.gtin}"
    (context,) = linkset["linkset"]
    assert context["anchor"] == f"{PUBLIC_URL}/01/{entity.gtin}"
    assert context["itemDescription"] == PRODUCT_NAME
    assert context[gs1_links.CERTIFICATION_INFO] == [
        {"href": f"{PUBLIC_URL}/p/{entity.gtin}#certifications", "title": "认证信息：有机农产品",
         "type": "text/html", "hreflang": ["zh"]}
    ]  # fmt: skip
    assert context[gs1_links.RECALL_STATUS][0]["title"] == "召回状态：无召回批次"


async def test_serial_resolves_to_the_package_document(service: Service) -> None:
    entity = await make_entity(service)

    redirected = await service.client.get(entity.path("serial"))
    json_link = await service.client.get(
        entity.path("serial"), params={"linkType": "gs1:traceability"}, headers={"Accept": "application/json"}
    )
    linkset = (await service.client.get(entity.path("serial"), params={"linkType": "linkset"})).json()
    document = await service.client.get(f"/api/v1/codes/{entity.package_code}")

    assert redirected.headers["location"] == f"{PUBLIC_URL}/t/{entity.package_code}"
    assert json_link.headers["location"] == f"{PUBLIC_URL}/api/v1/codes/{entity.package_code}"
    package, batch, product = linkset["linkset"]
    assert package["itemDescription"] == f"{PRODUCT_NAME}（批号 {entity.lot}，追溯码 {entity.package_code}）"
    assert package[gs1_links.PIP][0]["href"] == f"{PUBLIC_URL}/t/{entity.package_code}"
    assert batch[gs1_links.PIP][0]["href"] == f"{PUBLIC_URL}/t/{entity.batch_code}"
    assert product[gs1_links.PIP][0]["href"] == f"{PUBLIC_URL}/p/{entity.gtin}"
    assert document.json()["code"] == entity.package_code and document.json()["scans"]["count"] == 1


async def test_serial_without_a_lot_resolves_when_the_package_is_of_that_gtin(service: Service) -> None:
    entity = await make_entity(service)
    stranger = await make_entity(service)

    own = await service.client.get(f"/01/{entity.gtin}/21/{entity.package_code}")
    foreign = await service.client.get(f"/01/{entity.gtin}/21/{stranger.package_code}")
    linkset = (await service.client.get(f"/01/{entity.gtin}/21/{entity.package_code}?linkType=linkset")).json()

    assert own.headers["location"] == f"{PUBLIC_URL}/t/{entity.package_code}"
    assert foreign.headers["location"] == f"{PUBLIC_URL}/p/{entity.gtin}"  # walks up to the GTIN
    anchors = [context["anchor"] for context in linkset["linkset"]]
    assert anchors == [f"{PUBLIC_URL}/01/{entity.gtin}/21/{entity.package_code}", f"{PUBLIC_URL}/01/{entity.gtin}"]


@pytest.mark.parametrize(
    "serial",
    [
        pytest.param("S1", id="not-a-code"),
        pytest.param("00000000000000000000", id="bad-check-digits"),
        pytest.param("batch", id="batch-code"),
        pytest.param("unissued", id="unissued-package-code"),
    ],
)
async def test_a_serial_that_is_no_package_of_the_lot_walks_up_to_the_lot(service: Service, serial: str) -> None:
    entity = await make_entity(service)
    unissued = package_code(service, entity.package_code[1:7], 10**11 - 1 - secrets.randbelow(1_000))
    serial = {"batch": entity.batch_code, "unissued": unissued}.get(serial, serial)

    response = await service.client.get(f"{entity.path('lot')}/21/{serial}")

    assert response.status_code == 307
    assert response.headers["location"] == f"{PUBLIC_URL}/t/{entity.batch_code}"


@pytest.mark.parametrize("length", [8, 12, 13, 14])
async def test_short_gtins_are_padded(service: Service, length: int) -> None:
    gtin = random_gtin(prefix="000000")  # a GTIN-8 written as 14 digits: every shorter form is valid too
    entity = await make_entity(service, gtin=gtin)

    response = await service.client.get(f"/01/{gtin[-length:]}/10/{entity.lot}")

    assert response.headers["location"] == f"{PUBLIC_URL}/t/{entity.batch_code}"
    assert f"{PUBLIC_URL}/01/{gtin}/10/{entity.lot}?linkType=linkset" in response.headers["link"]


async def test_encoded_slash_belongs_to_the_lot(service: Service) -> None:
    entity = await make_entity(service, lot=f"A/{secrets.token_hex(3)}")

    encoded = await service.client.get(entity.path("lot"))
    bare = await service.client.get(f"/01/{entity.gtin}/10/{entity.lot}")

    assert "%2F" in entity.path("lot")
    assert encoded.headers["location"] == f"{PUBLIC_URL}/t/{entity.batch_code}"
    assert (bare.status_code, bare.json()["code"]) == (400, "malformed_path")  # /10/A/{hex}: a lone segment


async def test_most_recently_registered_batch_wins(service: Service) -> None:
    gtin, lot = random_gtin(), random_lot()
    await make_entity(service, gtin=gtin, lot=lot)
    later = await make_entity(service, gtin=gtin, lot=lot)  # another producer, same GTIN and lot

    response = await service.client.get(f"/01/{gtin}/10/{lot}")

    assert response.headers["location"] == f"{PUBLIC_URL}/t/{later.batch_code}"


# --- answers to clients ------------------------------------------------------------------------------------------


async def test_browser_gets_the_chinese_error_page(service: Service) -> None:
    response = await service.client.get("/01/06901234567893/10/L1", headers={"Accept": BROWSER_ACCEPT})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "校验位" in response.text


async def test_certification_info_of_a_batch_with_a_certificate_of_conformity_only(service: Service) -> None:
    entity = await make_entity(service)  # its batch carries a certificate of conformity, its producer no certification
    bare_lot = random_lot()
    product = {"name": PRODUCT_NAME, "category": "yak", "gtin": entity.gtin}
    await register_batch(service, entity.credit_code, product=product, lot=bare_lot, certificate=None)

    with_certificate = await service.client.get(entity.path("lot"), params={"linkType": "gs1:certificationInfo"})
    linkset = (await service.client.get(entity.path("lot"), params={"linkType": "linkset"})).json()
    bare = await service.client.get(f"/01/{entity.gtin}/10/{bare_lot}", params={"linkType": "gs1:certificationInfo"})

    assert with_certificate.headers["location"] == f"{PUBLIC_URL}/t/{entity.batch_code}#certificate"
    assert linkset["linkset"][0][gs1_links.CERTIFICATION_INFO][0]["title"] == "认证信息：承诺达标合格证"
    assert bare.status_code == 404  # nothing certifies it, at its level or the product's


@pytest.mark.parametrize(
    "spelling",
    ["gs1:", "https://gs1.org/voc/", "http://gs1.org/voc/", "https://ref.gs1.org/voc/", "https://www.gs1.org/voc/"],
)
async def test_every_spelling_of_the_gs1_vocabulary_names_its_link_types(service: Service, spelling: str) -> None:
    entity = await make_entity(service)

    response = await service.client.get(entity.path("lot"), params={"linkType": spelling + "traceability"})

    assert response.headers["location"] == f"{PUBLIC_URL}/api/v1/codes/{entity.batch_code}"


async def test_json_client_is_sent_to_the_json_link(service: Service) -> None:
    entity = await make_entity(service)

    response = await service.client.get(
        entity.path("lot"), params={"linkType": "gs1:recallStatus"}, headers={"Accept": "application/json"}
    )

    assert response.headers["location"] == f"{PUBLIC_URL}/api/v1/codes/{entity.batch_code}"


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        pytest.param("", 307, id="empty"),
        pytest.param("*/*", 307, id="any"),
        pytest.param(BROWSER_ACCEPT, 307, id="browser"),
        pytest.param("garbage", 307, id="garbage"),
        pytest.param(";;;,,,/,*/json", 307, id="punctuation"),
        pytest.param("text/html;q=abc", 307, id="bad-q"),
        pytest.param("application/linkset+json;q=nan", 307, id="nan-q"),
        pytest.param("application/linkset+json;q=0", 307, id="refused"),
        pytest.param("application/json;q=0.5, text/html", 307, id="html-preferred"),
        pytest.param("application/*", 307, id="application-wildcard"),
        pytest.param(", ".join(["image/png"] * 100 + ["application/linkset+json"]), 307, id="past-the-cap"),
        pytest.param("APPLICATION/LINKSET+JSON", 200, id="upper-case"),
        pytest.param("application/linkset+json;q=0.9, text/html;q=0.1", 200, id="linkset-preferred"),
        pytest.param("application/json, */*;q=0.1", 200, id="json-preferred"),
    ],
)
async def test_odd_accept_headers_are_served(service: Service, accept: str, status: int) -> None:
    entity = await make_entity(service)

    response = await service.client.get(entity.path("lot"), headers={"Accept": accept, "Accept-Language": accept})

    assert response.status_code == status


async def test_served_without_accept_or_accept_language(service: Service) -> None:
    entity = await make_entity(service)
    answers = []
    for url in (entity.path("serial"), f"{entity.path('gtin')}?linkType=all", "/01/06901234567893/10/L1"):
        request = service.client.build_request("GET", url)
        del request.headers["accept"]
        assert "accept" not in request.headers and "accept-language" not in request.headers
        answers.append(await service.client.send(request))

    redirected, linkset, invalid = answers
    assert redirected.status_code == 307 and redirected.headers["location"] == entity.default_target("serial")
    assert linkset.status_code == 200 and schema_errors(GS1_SCHEMA_URI, linkset.json()) == []
    assert invalid.status_code == 400 and invalid.json()["code"] == "invalid_gtin"


async def test_preflight_asks_no_store(service: Service) -> None:
    service.query_log.queries.clear()

    response = await service.client.options(f"/01/{random_gtin()}/10/L1/21/S1")

    assert response.status_code == 204
    assert service.query_log.queries == []


async def test_invalid_gtin_is_400_without_store_io(service: Service) -> None:
    service.query_log.queries.clear()

    response = await service.client.get("/01/06901234567893/10/L1")

    assert (response.status_code, response.json()["code"], response.json()["reason"]) == (
        400, "invalid_gtin", "bad_check_digit",
    )  # fmt: skip
    assert service.query_log.queries == []


# --- the memory tier, and what keeps it current ------------------------------------------------------------------


async def test_a_warm_redirect_asks_no_store(service: Service) -> None:
    entity = await make_entity(service)
    for level in ("gtin", "lot", "serial"):
        await service.client.get(entity.path(level))  # cold: each level read once
    service.query_log.queries.clear()

    answers = [await service.client.get(entity.path(level)) for level in ("gtin", "lot", "serial")]

    assert [answer.status_code for answer in answers] == [307, 307, 307]
    assert service.query_log.queries == []


async def test_a_recall_shows_in_the_linkset_and_the_product_page_at_once(service: Service) -> None:
    entity = await make_entity(service)
    before = (await service.client.get(entity.path("serial"), params={"linkType": "linkset"})).json()

    recalled = await service.client.post(
        f"/api/v1/batches/{entity.batch_code}/recall", json={"reason": "抽检不合格"}, headers=service.admin_headers
    )
    assert recalled.status_code == 200, recalled.text
    after = (await service.client.get(entity.path("serial"), params={"linkType": "linkset"})).json()
    page = await service.client.get(f"/p/{entity.gtin}")

    assert before["linkset"][0][gs1_links.RECALL_STATUS][0]["title"] == "召回状态：未召回"
    assert [c[gs1_links.RECALL_STATUS][0]["title"] for c in after["linkset"]] == [
        "召回状态：已召回", "召回状态：已召回", "召回状态：1个批次已召回",
    ]  # fmt: skip
    assert "已召回" in page.text and "抽检不合格" in page.text


async def test_a_batch_changed_elsewhere_is_read_again(service: Service, pg: asyncpg.Connection) -> None:
    """A product that moves to another GTIN: the change feed tells this worker, whatever Redis did."""
    entity = await make_entity(service)
    await service.client.get(entity.path("lot"))  # warm
    new_gtin = random_gtin()

    await pg.execute("UPDATE products SET gtin = $1 WHERE gtin = $2", new_gtin, entity.gtin)
    for _ in range(40):  # the change feed polls twice a second
        old = await service.client.get(entity.path("lot"))
        if old.status_code == 404:
            break
        await asyncio.sleep(0.05)
    moved = await service.client.get(f"/01/{new_gtin}/10/{entity.lot}")

    assert old.status_code == 404
    assert moved.headers["location"] == f"{PUBLIC_URL}/t/{entity.batch_code}"


async def test_a_lot_registered_after_it_was_asked_shows_soon(service: Service) -> None:
    entity = await make_entity(service)
    lot = random_lot()
    assert (await service.client.get(f"/01/{entity.gtin}/10/{lot}")).headers["location"].endswith(f"/p/{entity.gtin}")

    created = await register_batch(
        service, entity.credit_code, product={"name": PRODUCT_NAME, "category": "yak", "gtin": entity.gtin}, lot=lot
    )
    await asyncio.sleep(UNKNOWN_TTL_S)
    response = await service.client.get(f"/01/{entity.gtin}/10/{lot}")

    assert response.headers["location"] == f"{PUBLIC_URL}/t/{created['trace_code']}"


async def test_a_serial_labelled_after_it_was_asked_shows_soon(service: Service) -> None:
    entity = await make_entity(service)
    upcoming = next_package_code(service, entity.package_code)  # the next label of the region, not issued yet
    path = f"{entity.path('lot')}/21/{upcoming}"
    assert (await service.client.get(path)).headers["location"] == f"{PUBLIC_URL}/t/{entity.batch_code}"

    assert await issue_labels(service, entity.batch_code, 1) == [upcoming]
    await asyncio.sleep(UNKNOWN_TTL_S)
    response = await service.client.get(path)

    assert response.headers["location"] == f"{PUBLIC_URL}/t/{upcoming}"


async def test_cold_lookups_of_one_moment_share_one_query(service: Service) -> None:
    entity = await make_entity(service)
    state = app_worker(service.app)
    fresh = DigitalLinkIndex(state.pool, state.local, state.ranges)
    service.query_log.queries.clear()

    batches = await asyncio.gather(*(fresh.lot_batch(entity.gtin, entity.lot) for _ in range(10)))

    assert {batch.code for batch in batches if batch} == {entity.batch_code}
    assert service.query_log.count(queries.GS1_LOT_BATCH) == 1


# --- the product page --------------------------------------------------------------------------------------------


async def test_product_page_shows_producer_certifications_and_batches_recalled_first(
    service: Service, pg: asyncpg.Connection
) -> None:
    entity = await make_entity(service)
    await certify(pg, entity.credit_code, "green")
    await certify(pg, entity.credit_code, "gi", days_left=-10)  # expired: not shown
    recalled = await make_entity(service, gtin=entity.gtin, credit_code=entity.credit_code)
    later = await make_entity(service, gtin=entity.gtin, credit_code=entity.credit_code)
    response = await service.client.post(
        f"/api/v1/batches/{recalled.batch_code}/recall", json={"reason": "农残超标"}, headers=service.admin_headers
    )
    assert response.status_code == 200

    page = await service.client.get(f"/p/{entity.gtin}")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    text = page.text
    assert PRODUCT_NAME in text and entity.gtin in text and "绿色食品" in text and "农产品地理标志" not in text
    assert "1 个批次已被召回" in text and "农残超标" in text
    order = [text.index(code) for code in (recalled.batch_code, later.batch_code, entity.batch_code)]
    assert order == sorted(order)  # the recalled batch first, then the newest


@pytest.mark.parametrize(("gtin", "status"), [("06901234567893", 400), ("12", 400), ("06901234567892", 404)])
async def test_product_page_of_a_bad_or_unknown_gtin_is_a_chinese_error_page(
    service: Service, gtin: str, status: int
) -> None:
    response = await service.client.get(f"/p/{gtin}")

    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert "商品" in response.text


# --- the schemas the tests use -----------------------------------------------------------------------------------


def test_schema_harness_tells_gs1_examples_apart() -> None:
    assert schema_errors(GS1_SCHEMA_URI, example("valid-gs1-example.json")) == []
    assert schema_errors(GS1_SCHEMA_URI, example("invalid-gs1-example.json")) != []
    assert schema_errors(GS1_SCHEMA_URI, example("ExampleLinkset.json")) != []  # `@context` in the body


def test_base_schema_refuses_the_gs1_item_description() -> None:
    """GS1's own valid example fails the RFC 9264 base schema on itemDescription alone: why it is set aside."""
    valid = example("valid-gs1-example.json")
    assert isinstance(valid, dict)

    errors = schema_errors(BASE_SCHEMA_URI, valid)

    assert len(errors) == 1 and "'itemDescription' does not match any of the regexes" in errors[0]
    assert schema_errors(BASE_SCHEMA_URI, without_gs1_members(valid)) == []


async def test_labels_of_a_package_resolve_through_their_digital_link(service: Service) -> None:
    """The path a label prints (codegen.digitallink) resolves to the package it names."""
    from codegen.digitallink import digital_link_path

    entity = await make_entity(service, lot="A/B-1")
    (code,) = await issue_labels(service, entity.batch_code, 1)

    response = await service.client.get(digital_link_path(entity.gtin, entity.lot, code))

    assert "%2F" in quote(entity.lot, safe="")
    assert response.headers["location"] == f"{PUBLIC_URL}/t/{code}"


# --- a store away ------------------------------------------------------------------------------------------------


async def test_postgres_away_warm_links_still_redirect_cold_ones_are_503_with_cors(
    own_service: Service,  # noqa: F811 (the fixture imported above)
    own_servers: OwnServers,  # noqa: F811
) -> None:
    entity = await make_entity(own_service)
    await own_service.client.get(entity.path("serial"))  # warm: the GTIN, the lot and the package are in memory

    own_servers.postgres.stop()
    try:
        warm = await own_service.client.get(entity.path("serial"))
        cold = await own_service.client.get(f"/01/{entity.gtin}/10/{random_lot()}")  # an unknown lot: ask Postgres
        page = await own_service.client.get(f"/01/{random_gtin()}", headers={"Accept": BROWSER_ACCEPT})
    finally:
        own_servers.postgres.start()

    assert (warm.status_code, warm.headers["location"]) == (307, entity.default_target("serial"))
    assert (cold.status_code, cold.json()["code"]) == (503, "store_unavailable")
    assert int(cold.headers["retry-after"]) > 0 and cold.headers["access-control-allow-origin"] == "*"
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
