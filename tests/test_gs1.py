"""GS1 Digital Link resolution (resolver.scan.gs1) on the real Postgres and Redis."""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg
import httpx
import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from resolver.scan import gs1
from tests.conftest import Service
from tests.helpers import random_gtin, register_batch, register_producer

PUBLIC_URL = "https://trace.example.cn"  # the `settings` fixture's public_url
SCHEMA_DIR = Path(__file__).parent / "data" / "gs1-linkset"
# Both schema files call themselves "@id": https://ref.gs1.org/standards/resolver/linkset-schema, which is no
# JSON Schema keyword: each is registered under a local URI of its own, and nothing is fetched.
GS1_SCHEMA_URI = "urn:tracecode:test:gs1-linkset-schema"
BASE_SCHEMA_URI = "urn:tracecode:test:linkset-schema"
GS1_ONLY_MEMBERS = ("itemDescription",)  # required by the GS1 schema, refused by the RFC 9264 base schema
LINK_TYPES = {gs1.DEFAULT_LINK, gs1.PIP, gs1.TRACEABILITY, gs1.CERTIFICATION_INFO, gs1.RECALL_STATUS}
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def random_lot() -> str:
    return f"L{secrets.token_hex(4)}"


def product(gtin: str, name: str = "祁连有机牦牛肉") -> dict[str, Any]:
    return {"name": name, "category": "yak", "gtin": gtin}


async def register_gtin_batch(service: Service, *, gtin: str | None = None, lot: str | None = None) -> dict[str, Any]:
    """A batch of a product with a GTIN; the answer of POST /api/v1/batches plus the `gtin` and `lot` used."""
    gtin, lot = gtin or random_gtin(), lot or random_lot()
    created = await register_batch(service, product=product(gtin), lot=lot)
    return {**created, "gtin": gtin, "lot": lot}


def page_of(created: dict[str, Any]) -> str:
    return f"{PUBLIC_URL}/t/{created['trace_code']}"


def document_of(created: dict[str, Any]) -> str:
    return f"{PUBLIC_URL}/api/v1/codes/{created['trace_code']}"


def link_path(created: dict[str, Any]) -> str:
    return f"/01/{created['gtin']}/10/{quote(created['lot'], safe='')}"


@functools.cache
def _registry() -> Registry[Any]:
    """The two schemas under their local URIs; a Registry retrieves nothing it was not given, so no network."""
    resources = [
        (uri, Resource.from_contents(json.loads((SCHEMA_DIR / name).read_text()), default_specification=DRAFT7))
        for uri, name in ((GS1_SCHEMA_URI, "gs1-linkset-schema.json"), (BASE_SCHEMA_URI, "linkset-schema.json"))
    ]
    return Registry().with_resources(resources)


def schema_errors(uri: str, instance: object) -> list[str]:
    """The messages of every error of `instance` against the schema registered as `uri`."""
    validator = Draft7Validator({"$ref": uri}, registry=_registry())
    return [error.message for error in validator.iter_errors(instance)]


def without_gs1_members(linkset: dict[str, Any]) -> dict[str, Any]:
    return {"linkset": [{k: v for k, v in c.items() if k not in GS1_ONLY_MEMBERS} for c in linkset["linkset"]]}


def example(name: str) -> object:
    return json.loads((SCHEMA_DIR / name).read_text())


def link_header_rels(response: httpx.Response) -> dict[str, list[str]]:
    """rel -> targets of the response's Link header (targets hold no commas or angle brackets here)."""
    rels: dict[str, list[str]] = {}
    for value in response.headers["link"].split(", <"):
        target, _, params = value.lstrip("<").partition(">")
        rel = next(p.split("=", 1)[1].strip('"') for p in params.split("; ") if p.startswith("rel="))
        rels.setdefault(rel, []).append(target)
    return rels


# --- redirection --------------------------------------------------------------------------------------------


async def test_redirects_to_the_batch_page_with_its_links(service: Service) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(link_path(created))

    assert response.status_code == 307
    assert response.headers["location"] == page_of(created)
    rels = link_header_rels(response)
    anchor = f"{PUBLIC_URL}{link_path(created)}"
    assert rels["linkset"] == [f"{anchor}?linkType=linkset"]
    assert set(rels) == LINK_TYPES | {"linkset"}
    assert rels[gs1.PIP] == [page_of(created)]
    assert rels[gs1.TRACEABILITY] == [document_of(created)]
    assert 'type="application/linkset+json"' in response.headers["link"]
    assert "title*=UTF-8''%E4%BA%A7%E5%93%81" in response.headers["link"]  # 产品追溯信息, RFC 8187
    assert response.headers["vary"] == "Accept"
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("length", [8, 12, 13, 14])
async def test_short_gtins_are_padded(service: Service, length: int) -> None:
    gtin = random_gtin(prefix="000000")  # a GTIN-8 written as 14 digits: every shorter form is valid too
    created = await register_gtin_batch(service, gtin=gtin)

    response = await service.client.get(f"/01/{gtin[-length:]}/10/{created['lot']}")

    assert response.status_code == 307
    assert response.headers["location"] == page_of(created)
    assert f"{PUBLIC_URL}/01/{gtin}/10/{created['lot']}?linkType=linkset" in response.headers["link"]


@pytest.mark.parametrize(
    ("gtin", "reason"),
    [
        pytest.param("06901234567893", "bad_check_digit", id="check-digit"),
        pytest.param("6901234567893", "bad_check_digit", id="check-digit-13"),
        pytest.param("12345", "bad_format", id="short"),
        pytest.param("069012345678925", "bad_format", id="15-digits"),
        pytest.param("0690123456789X", "bad_format", id="letter"),
        pytest.param("０６９０１２３４５６７８９２", "bad_format", id="full-width"),
    ],
)
async def test_invalid_gtin_is_400_without_store_io(service: Service, gtin: str, reason: str) -> None:
    response = await service.client.get(f"/01/{gtin}/10/L1")

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["reason"]) == ("invalid_gtin", reason)
    assert problem["title"] and problem["detail"] and problem["type"]
    assert service.query_log.queries == []


@pytest.mark.parametrize(
    "lot",
    [
        pytest.param("A" * 21, id="21-characters"),
        pytest.param("批号1", id="chinese"),
        pytest.param("L%201", id="space"),
        pytest.param("L~1", id="tilde"),
        pytest.param("L%231", id="hash"),
        pytest.param("", id="empty"),
    ],
)
async def test_invalid_lot_is_400(service: Service, lot: str) -> None:
    response = await service.client.get(f"/01/{random_gtin()}/10/{lot}")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_lot"
    assert service.query_log.queries == []


async def test_unknown_lot_is_404(service: Service) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(f"/01/{created['gtin']}/10/{random_lot()}")

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_lot"


async def test_unknown_gtin_is_404(service: Service) -> None:
    response = await service.client.get(f"/01/{random_gtin()}/10/{random_lot()}")

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_gtin"


async def test_browser_gets_the_chinese_error_page(service: Service) -> None:
    response = await service.client.get("/01/06901234567893/10/L1", headers={"Accept": BROWSER_ACCEPT})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "校验位" in response.text


@pytest.mark.parametrize(
    ("link_type", "target"),
    [
        pytest.param("gs1:pip", "page", id="pip"),
        pytest.param("https://gs1.org/voc/pip", "page", id="pip-uri"),
        pytest.param("gs1:defaultLink", "page", id="default"),
        pytest.param("gs1:traceability", "document", id="traceability"),
        pytest.param("gs1:certificationInfo", "page#certifications", id="certification"),
        pytest.param("https://ref.gs1.org/voc/certificationInfo", "page#certifications", id="certification-ref-uri"),
        pytest.param("gs1:recallStatus", "page", id="recall"),
    ],
)
async def test_link_type_redirects_to_its_link(service: Service, link_type: str, target: str) -> None:
    created = await register_gtin_batch(service)
    base, _, fragment = target.partition("#")
    expected = page_of(created) if base == "page" else document_of(created)

    response = await service.client.get(link_path(created), params={"linkType": link_type})

    assert response.status_code == 307
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == expected
    assert location.fragment == fragment
    assert parse_qs(location.query) == {"linkType": [link_type]}  # the query string is passed on


async def test_json_client_is_sent_to_the_json_link(service: Service) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(
        link_path(created), params={"linkType": "gs1:certificationInfo"}, headers={"Accept": "application/json"}
    )

    assert response.status_code == 307
    assert response.headers["location"] == f"{document_of(created)}?linkType=gs1%3AcertificationInfo"


async def test_unavailable_link_type_is_404_listing_the_available_ones(service: Service) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(link_path(created), params={"linkType": "gs1:nutritionalInfo"})

    assert response.status_code == 404
    problem = response.json()
    assert problem["code"] == "unknown_link_type"
    assert set(problem["link_types"]) == {"gs1:" + t.removeprefix(gs1.GS1_VOCABULARY) for t in LINK_TYPES}
    assert gs1.PIP in link_header_rels(response)


async def test_data_attributes_are_passed_on(service: Service) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(f"{link_path(created)}?17=261231")

    assert response.headers["location"] == f"{page_of(created)}?17=261231"


async def test_encoded_slash_belongs_to_the_lot(service: Service) -> None:
    created = await register_gtin_batch(service, lot=f"A/{secrets.token_hex(3)}")

    encoded = await service.client.get(link_path(created))
    bare = await service.client.get(f"/01/{created['gtin']}/10/{created['lot']}")
    with_serial = await service.client.get(f"{link_path(created)}/21/S1")

    assert "%2F" in link_path(created)
    assert encoded.status_code == 307 and encoded.headers["location"] == page_of(created)
    assert (bare.status_code, bare.json()["code"]) == (404, "unsupported_path")
    assert (with_serial.status_code, with_serial.json()["code"]) == (404, "unsupported_path")


async def test_trailing_slash_is_tolerated(service: Service) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(f"{link_path(created)}/")

    assert response.status_code == 307
    assert response.headers["location"] == page_of(created)


async def test_most_recently_registered_batch_wins(service: Service) -> None:
    gtin, lot = random_gtin(), random_lot()
    await register_gtin_batch(service, gtin=gtin, lot=lot)
    later = await register_gtin_batch(service, gtin=gtin, lot=lot)  # another producer, same GTIN and lot

    response = await service.client.get(f"/01/{gtin}/10/{lot}")

    assert response.headers["location"] == page_of(later)


async def test_one_postgres_query_and_no_scan_counted(service: Service) -> None:
    created = await register_gtin_batch(service)
    service.query_log.queries.clear()

    redirected = await service.client.get(link_path(created))
    document = await service.client.get(document_of(created).removeprefix(PUBLIC_URL))

    assert redirected.status_code == 307
    assert service.query_log.queries[0] == gs1.LOOKUP_BATCH
    assert service.query_log.count(gs1.LOOKUP_BATCH) == 1
    assert document.json()["scans"]["count"] == 1  # the document's own scan; the redirect counted none


# --- linkset -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        pytest.param({"linkType": "all"}, {}, id="linkType-all"),
        pytest.param({"linkType": "linkset"}, {}, id="linkType-linkset"),
        pytest.param({}, {"Accept": "application/linkset+json"}, id="accept-linkset"),
        pytest.param({}, {"Accept": "application/json"}, id="accept-json"),
    ],
)
async def test_linkset_validates_against_the_linkset_schemas(
    service: Service, params: dict[str, str], headers: dict[str, str]
) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(link_path(created), params=params, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/linkset+json"
    linkset = response.json()
    assert schema_errors(GS1_SCHEMA_URI, linkset) == []
    assert schema_errors(BASE_SCHEMA_URI, without_gs1_members(linkset)) == []
    (context,) = linkset["linkset"]
    assert context["anchor"] == f"{PUBLIC_URL}{link_path(created)}"
    assert context["itemDescription"] == f"祁连有机牦牛肉（批号 {created['lot']}）"
    assert set(context) - {"anchor", "itemDescription"} == LINK_TYPES
    assert context[gs1.DEFAULT_LINK] == [{"href": page_of(created), "title": "产品追溯信息"}]
    assert context[gs1.PIP] == [
        {"href": page_of(created), "title": "产品追溯信息", "type": "text/html", "hreflang": ["zh"]}
    ]
    assert [t["href"] for t in context[gs1.TRACEABILITY]] == [document_of(created)]
    rels = link_header_rels(response)
    assert rels[gs1.JSON_LD_CONTEXT_REL] == [gs1.JSON_LD_CONTEXT]  # the JSON-LD context, not an @context member
    assert rels["linkset"] == [f"{context['anchor']}?linkType=linkset"]


async def test_linkset_titles_follow_recall_and_certifications(service: Service, pg: asyncpg.Connection) -> None:
    credit_code = await register_producer(service)
    gtin, lot = random_gtin(), random_lot()
    created = await register_batch(service, credit_code, product=product(gtin), lot=lot)
    producer_id = await pg.fetchval("SELECT id FROM producers WHERE credit_code = $1", credit_code)
    today = dt.date.today()
    for kind, valid_to in (("green", today + dt.timedelta(days=300)), ("organic", today - dt.timedelta(days=400))):
        await pg.execute(
            "INSERT INTO certifications (kind, number, producer_id, valid_from, valid_to) VALUES ($1, $2, $3, $4, $5)",
            kind, f"TEST-{secrets.token_hex(6)}", producer_id, today - dt.timedelta(days=800), valid_to,
        )  # fmt: skip
    before = (await service.client.get(f"/01/{gtin}/10/{lot}", params={"linkType": "linkset"})).json()
    recalled = await service.client.post(
        f"/api/v1/batches/{created['trace_code']}/recall", json={"reason": "抽检不合格"}, headers=service.admin_headers
    )
    assert recalled.status_code == 200, recalled.text

    after = (await service.client.get(f"/01/{gtin}/10/{lot}", params={"linkType": "linkset"})).json()

    (context,) = before["linkset"]
    # the organic certification has expired; the certificate of conformity came with the batch
    assert context[gs1.CERTIFICATION_INFO][0]["title"] == "认证信息：绿色食品、承诺达标合格证"
    assert context[gs1.RECALL_STATUS][0]["title"] == "召回状态：未召回"
    assert after["linkset"][0][gs1.RECALL_STATUS][0]["title"] == "召回状态：已召回"
    assert schema_errors(GS1_SCHEMA_URI, after) == []


def test_schema_harness_tells_gs1_examples_apart() -> None:
    assert schema_errors(GS1_SCHEMA_URI, example("valid-gs1-example.json")) == []
    assert schema_errors(GS1_SCHEMA_URI, example("invalid-gs1-example.json")) != []


def test_base_schema_refuses_the_gs1_item_description() -> None:
    """GS1's own valid example fails the RFC 9264 base schema on itemDescription alone: why it is set aside."""
    valid = example("valid-gs1-example.json")
    assert isinstance(valid, dict)

    errors = schema_errors(BASE_SCHEMA_URI, valid)

    assert len(errors) == 1 and "'itemDescription' does not match any of the regexes" in errors[0]
    assert schema_errors(BASE_SCHEMA_URI, without_gs1_members(valid)) == []


# --- content negotiation --------------------------------------------------------------------------------------


async def test_served_without_accept_or_accept_language(service: Service) -> None:
    created = await register_gtin_batch(service)
    answers = []
    for url in (link_path(created), f"{link_path(created)}?linkType=all", "/01/06901234567893/10/L1"):
        request = service.client.build_request("GET", url)
        del request.headers["accept"]
        assert "accept" not in request.headers and "accept-language" not in request.headers
        answers.append(await service.client.send(request))

    redirected, linkset, invalid = answers
    assert redirected.status_code == 307 and redirected.headers["location"] == page_of(created)
    assert linkset.status_code == 200 and schema_errors(GS1_SCHEMA_URI, linkset.json()) == []
    assert invalid.status_code == 400 and invalid.json()["code"] == "invalid_gtin"


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
        pytest.param("application/linkset+json;q=1e999", 307, id="infinite-q"),
        pytest.param("application/linkset+json;q=0", 307, id="refused"),
        pytest.param("application/json;q=0.5, text/html", 307, id="html-preferred"),
        pytest.param("application/*", 307, id="application-wildcard"),
        pytest.param(", ".join(["image/png"] * 100 + ["application/linkset+json"]), 307, id="past-the-cap"),
        pytest.param("APPLICATION/LINKSET+JSON", 200, id="upper-case"),
        pytest.param("application/linkset+json;q=0.9, text/html;q=0.1", 200, id="linkset-preferred"),
        pytest.param("application/json, */*;q=0.1", 200, id="json-preferred"),
        pytest.param("text/html;level=1;q=0.2, application/linkset+json; q = 0.3", 200, id="spaces-and-params"),
    ],
)
async def test_odd_accept_headers_are_served(service: Service, accept: str, status: int) -> None:
    created = await register_gtin_batch(service)

    response = await service.client.get(link_path(created), headers={"Accept": accept, "Accept-Language": accept})

    assert response.status_code == status


async def test_options_answers_the_cors_preflight(service: Service) -> None:
    response = await service.client.options(f"/01/{random_gtin()}/10/L1")

    assert response.status_code == 204
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    assert response.headers["access-control-allow-origin"] == "*"
    assert service.query_log.queries == []


# --- resolver description -------------------------------------------------------------------------------------


async def test_well_known_describes_the_resolver(service: Service) -> None:
    response = await service.client.get("/.well-known/gs1resolver")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    description = response.json()
    assert set(description) == {
        "name",
        "resolverRoot",
        "supportedPrimaryKeys",
        "supportedLinkType",
        "linkTypeDefaultCanBeLinkset",
        "jsonLdContextLocation",
    }
    assert description["resolverRoot"] == PUBLIC_URL
    assert description["supportedPrimaryKeys"] == ["01"]
    assert description["supportedLinkType"] == [{"namespace": "https://gs1.org/voc/", "prefix": "gs1:"}]
    assert description["linkTypeDefaultCanBeLinkset"] is False
    assert response.headers["access-control-allow-origin"] == "*"
