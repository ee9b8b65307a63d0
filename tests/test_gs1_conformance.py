"""The GS1-Conformant resolver standard (1.1 / 1.2), statement by statement, on GTIN, GTIN+lot and GTIN+lot+serial.

Each test is named after a conformance statement (section 5 of the standard, and the checks of GS1's resolver test
suite that stand for it) and runs on each of the three levels where the statement applies. Statements the service
cannot meet in-process (HTTPS: the deployment's TLS) or does not take up (compressed and EPC binary URIs) are not
here; the issue's note says so.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from resolver.scan import gs1_links
from tests.conftest import Service
from tests.gs1_support import (
    BASE_SCHEMA_URI,
    BROWSER_ACCEPT,
    DESCRIPTION_SCHEMA_URI,
    GS1_SCHEMA_URI,
    LEVELS,
    PUBLIC_URL,
    Entity,
    Level,
    certify,
    link_header,
    make_entity,
    random_lot,
    schema_errors,
    without_gs1_members,
)
from tests.helpers import random_gtin

# Link types of the GS1 Web Vocabulary (https://ref.gs1.org/voc/?show=linktypes), a subset that holds every one
# this resolver could use; the test below asks that each `gs1:` link type served is one of them.
GS1_VOCABULARY_LINK_TYPES = frozenset({
    "activityIdeas", "allergenInfo", "appDownload", "certificationInfo", "consumerHandlingStorageInfo",
    "defaultLink", "defaultLinkMulti", "epcis", "faqs", "handledBy", "homepage", "ingredientsInfo", "instructions",
    "leaflet", "locationInfo", "logisticsInfo", "masterData", "nutritionalInfo", "pip", "promotion", "recallStatus",
    "recipeInfo", "relatedImage", "relatedVideo", "review", "safetyInfo", "serviceInfo", "socialMedia", "support",
    "sustainabilityInfo", "traceability", "tutorial", "verificationService", "warrantyInfo",
})  # fmt: skip
CORS_METHODS = {"GET", "HEAD", "OPTIONS"}
LINKSET_REQUESTS = [
    pytest.param({"linkType": "linkset"}, {}, id="linkType-linkset"),
    pytest.param({"linkType": "all"}, {}, id="linkType-all"),
    pytest.param({}, {"Accept": "application/linkset+json"}, id="accept-linkset"),
    pytest.param({}, {"Accept": "application/json"}, id="accept-json"),
]
ON_EACH_LEVEL = pytest.mark.parametrize("level", LEVELS)


@pytest.fixture
async def entity(service: Service) -> Entity:
    return await make_entity(service)


async def linkset_of(service: Service, entity: Entity, level: Level) -> dict[str, Any]:
    response = await service.client.get(entity.path(level), params={"linkType": "linkset"})
    assert response.status_code == 200, response.text
    linkset: dict[str, Any] = response.json()
    return linkset


def non_conformant_paths(entity: Entity, level: Level) -> list[str]:
    """Syntactically non-conformant variants of the entity's Digital Link at `level`."""
    path = entity.path(level)
    bad_gtin = entity.gtin[:-1] + str((int(entity.gtin[-1]) + 1) % 10)
    return [
        path.replace(entity.gtin, bad_gtin, 1),  # wrong check digit
        path + "/foo",  # GS1's test suite: a segment with no value
        path + "/99/X",  # an AI that is no qualifier of the GTIN
        path + "/17/261231",  # a data attribute in the path
        path.replace(f"/01/{entity.gtin}", f"/01/{entity.gtin}/21/S1", 1) + ("/10/L1" if level == "gtin" else ""),
        f"/01/{entity.gtin}/10/L%7E1" + ("/21/S1" if level == "serial" else ""),  # `~` is not in set 82
        f"/01/{entity.gtin}/10/{'L' * 21}" + ("/21/S1" if level == "serial" else ""),  # too long
    ]


# --- HTTP --------------------------------------------------------------------------------------------------------


@ON_EACH_LEVEL
async def test_shall_support_http_get_head_and_options(service: Service, entity: Entity, level: Level) -> None:
    path = entity.path(level)

    get = await service.client.get(path)
    head = await service.client.head(path)
    options = await service.client.options(
        path, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    )
    linkset_head = await service.client.head(path, params={"linkType": "linkset"})
    linkset_get = await service.client.get(path, params={"linkType": "linkset"})

    assert (get.status_code, head.status_code, options.status_code) == (307, 307, 204)
    assert head.headers["location"] == get.headers["location"] and head.content == b""
    assert set(options.headers["allow"].split(", ")) == CORS_METHODS
    assert set(options.headers["access-control-allow-methods"].split(", ")) == CORS_METHODS
    assert linkset_head.status_code == 200 and linkset_head.content == b""
    assert linkset_head.headers["content-length"] == str(len(linkset_get.content))


@ON_EACH_LEVEL
async def test_shall_support_cors(service: Service, entity: Entity, level: Level) -> None:
    path = entity.path(level)
    answers = [
        await service.client.get(path),  # redirect
        await service.client.get(path, params={"linkType": "linkset"}),  # linkset
        await service.client.get(path, params={"linkType": "gs1:nosuchlt"}),  # 404 problem
        await service.client.get(non_conformant_paths(entity, level)[0]),  # 400 problem
        await service.client.get(non_conformant_paths(entity, level)[0], headers={"Accept": BROWSER_ACCEPT}),  # page
        await service.client.options(path),  # preflight
        await service.client.get("/.well-known/gs1resolver"),
    ]

    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == "*", answer
        assert set(answer.headers["access-control-allow-methods"].split(", ")) == CORS_METHODS
        assert "Link" in answer.headers["access-control-expose-headers"]


# --- errors ------------------------------------------------------------------------------------------------------


@ON_EACH_LEVEL
async def test_shall_report_syntactically_non_conformant_uris_with_400(
    service: Service, entity: Entity, level: Level
) -> None:
    for path in non_conformant_paths(entity, level):
        response = await service.client.get(path)

        assert response.status_code == 400, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 400


@ON_EACH_LEVEL
async def test_valid_uri_of_nothing_known_is_404(service: Service, level: Level) -> None:
    unknown = Entity(random_gtin(), random_lot(), "", "40000000000000000000", "")

    response = await service.client.get(unknown.path(level))

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_gtin"


@ON_EACH_LEVEL
async def test_shall_not_use_200_for_an_error(service: Service, entity: Entity, level: Level) -> None:
    path = entity.path(level)
    errors = [await service.client.get(bad) for bad in non_conformant_paths(entity, level)]
    errors += [
        await service.client.get(path, params={"linkType": "gs1:nosuchlt"}),
        await service.client.get(path.replace(entity.gtin, random_gtin(), 1)),
        await service.client.get(path + "/foo", headers={"Accept": BROWSER_ACCEPT}),  # the Chinese error page
    ]

    for error in errors:
        assert error.status_code in (400, 404), error.request.url


# --- the linkset -------------------------------------------------------------------------------------------------


@ON_EACH_LEVEL
@pytest.mark.parametrize(("params", "headers"), LINKSET_REQUESTS)
async def test_shall_return_the_linkset_on_linkType_linkset_or_accept(
    service: Service, entity: Entity, level: Level, params: dict[str, str], headers: dict[str, str]
) -> None:
    response = await service.client.get(entity.path(level), params=params, headers=headers)

    assert response.status_code == 200  # not redirected
    assert response.headers["content-type"] == "application/linkset+json"
    linkset = response.json()
    assert schema_errors(GS1_SCHEMA_URI, linkset) == []
    assert schema_errors(BASE_SCHEMA_URI, without_gs1_members(linkset)) == []
    assert list(linkset) == ["linkset"]
    assert "Accept" in response.headers["vary"]


@ON_EACH_LEVEL
async def test_linkset_shall_include_the_links_of_each_level_up_to_the_primary_key(
    service: Service, entity: Entity, level: Level
) -> None:
    linkset = await linkset_of(service, entity, level)

    anchors = [context["anchor"] for context in linkset["linkset"]]
    levels_up = LEVELS[LEVELS.index(level) :: -1]  # serial, lot, gtin
    assert anchors == [PUBLIC_URL + entity.path(up) for up in levels_up]  # uncompressed, most specific first


@ON_EACH_LEVEL
async def test_linkset_response_should_link_to_a_json_ld_context(
    service: Service, entity: Entity, level: Level
) -> None:
    response = await service.client.get(entity.path(level), headers={"Accept": "application/linkset+json"})

    contexts = [(t, p) for t, p in link_header(response) if p["rel"] == gs1_links.JSON_LD_CONTEXT_REL]
    assert contexts == [
        (gs1_links.JSON_LD_CONTEXT, {"rel": gs1_links.JSON_LD_CONTEXT_REL, "type": "application/ld+json"})
    ]
    assert "@context" not in response.json()  # GS1's schema refuses it in the body


@ON_EACH_LEVEL
async def test_json_ld_requested_should_embed_the_context(service: Service, entity: Entity, level: Level) -> None:
    linkset = await linkset_of(service, entity, level)

    response = await service.client.get(entity.path(level), headers={"Accept": "application/ld+json"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ld+json"
    assert response.json() == {"@context": gs1_links.JSON_LD_CONTEXT, **linkset}


@ON_EACH_LEVEL
async def test_should_expose_the_linkset_in_a_link_header_even_when_redirecting(
    service: Service, entity: Entity, level: Level
) -> None:
    answers = [
        await service.client.get(entity.path(level)),
        await service.client.get(entity.path(level), params={"linkType": "gs1:pip"}),
        await service.client.get(entity.path(level), params={"linkType": "linkset"}),
    ]

    for answer in answers:
        links = link_header(answer)
        linkset_links = [target for target, params in links if params["rel"] == "linkset"]
        assert linkset_links == [f"{PUBLIC_URL}{entity.path(level)}?linkType=linkset"]
        assert not any(params["rel"].startswith(("gs1:", gs1_links.GS1_VOCABULARY)) for _, params in links)


@ON_EACH_LEVEL
async def test_exactly_one_default_link_per_entity_with_a_title_and_no_other_attribute(
    service: Service, entity: Entity, level: Level
) -> None:
    linkset = await linkset_of(service, entity, level)

    for context in linkset["linkset"]:
        (default,) = context[gs1_links.DEFAULT_LINK]
        assert set(default) == {"href", "title"} and default["title"]
        # ... and described by a descriptive link type too
        assert default["href"] in {target["href"] for target in context[gs1_links.PIP]}


@ON_EACH_LEVEL
async def test_all_links_shall_include_target_link_type_and_title(
    service: Service, entity: Entity, level: Level
) -> None:
    linkset = await linkset_of(service, entity, level)

    for context in linkset["linkset"]:
        for rel, targets in context.items():
            if rel in ("anchor", "itemDescription"):
                continue
            for target in targets:
                assert target["href"].startswith(PUBLIC_URL + "/") and target["title"]
                assert target.get("type", "text/html") in {"text/html", "application/json"}  # IANA media types


@ON_EACH_LEVEL
async def test_shall_redirect_to_the_default_link(service: Service, entity: Entity, level: Level) -> None:
    linkset = await linkset_of(service, entity, level)

    response = await service.client.get(entity.path(level))

    assert response.status_code == 307
    assert response.headers["location"] == linkset["linkset"][0][gs1_links.DEFAULT_LINK][0]["href"]
    assert response.headers["location"] == entity.default_target(level)


@ON_EACH_LEVEL
async def test_shall_redirect_to_the_requested_link_type(service: Service, entity: Entity, level: Level) -> None:
    linkset = await linkset_of(service, entity, level)
    seen: set[str] = set()
    for context in linkset["linkset"]:  # most specific first: a type seen already is that level's
        for rel, targets in context.items():
            if rel in ("anchor", "itemDescription") or rel in seen:
                continue
            seen.add(rel)
            for target in targets:
                accept = {"Accept": target["type"]} if "type" in target else {}

                response = await service.client.get(
                    entity.path(level), params={"linkType": gs1_links.compact(rel)}, headers=accept
                )

                assert response.status_code == 307, (rel, target)
                assert response.headers["location"] == target["href"]
    assert gs1_links.TRACEABILITY in seen or level == "gtin"


@ON_EACH_LEVEL
async def test_shall_answer_404_when_the_requested_link_type_is_not_available(
    service: Service, entity: Entity, level: Level
) -> None:
    response = await service.client.get(entity.path(level), params={"linkType": "gs1:nosuchlt"})

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_link_type"


@ON_EACH_LEVEL
async def test_shall_pass_on_the_query_string_when_redirecting(service: Service, entity: Entity, level: Level) -> None:
    default = await service.client.get(f"{entity.path(level)}?foo=bar&17=261231")
    typed = await service.client.get(f"{entity.path(level)}?foo=bar&linkType=gs1%3Apip&3103=000189")

    assert default.headers["location"] == f"{entity.default_target(level)}?foo=bar&17=261231"
    # linkType was the resolver's to read: it goes no further (GS1's test suite strips it before comparing)
    assert typed.headers["location"] == f"{entity.default_target(level)}?foo=bar&3103=000189"


@ON_EACH_LEVEL
async def test_certification_info_redirects_to_the_certifications_of_a_certified_product(
    service: Service, pg: asyncpg.Connection, level: Level
) -> None:
    certified = await make_entity(service)
    await certify(pg, certified.credit_code)

    response = await service.client.get(certified.path(level), params={"linkType": "gs1:certificationInfo"})

    assert response.status_code == 307
    assert response.headers["location"] == certified.default_target(level) + "#certifications"


async def test_a_product_whose_only_certification_is_revoked_has_no_certification_info(
    service: Service, pg: asyncpg.Connection
) -> None:
    revoked = await make_entity(service)
    await certify(pg, revoked.credit_code)
    certification_id = await pg.fetchval(
        "SELECT c.id FROM certifications c JOIN producers p ON p.id = c.producer_id WHERE p.credit_code = $1",
        revoked.credit_code,
    )
    before = await service.client.get(revoked.path("gtin"), params={"linkType": "gs1:certificationInfo"})
    changed = await service.client.patch(
        f"/api/v1/certifications/{certification_id}", json={"status": "revoked"}, headers=service.admin_headers
    )

    response = await service.client.get(revoked.path("gtin"), params={"linkType": "gs1:certificationInfo"})
    linkset = (await service.client.get(revoked.path("gtin"), params={"linkType": "linkset"})).json()

    assert before.status_code == 307  # answered while the certification was valid, then revoked
    assert changed.status_code == 200 and changed.json()["status"] == "revoked"
    assert response.status_code == 404
    assert gs1_links.CERTIFICATION_INFO not in linkset["linkset"][0]


async def test_an_uncertified_product_has_no_certification_info(service: Service, entity: Entity) -> None:
    response = await service.client.get(entity.path("gtin"), params={"linkType": "gs1:certificationInfo"})

    assert response.status_code == 404  # its batches carry a certificate of conformity; the product has none


@ON_EACH_LEVEL
async def test_link_types_under_gs1_are_gs1_web_vocabulary_link_types(
    service: Service, pg: asyncpg.Connection, level: Level
) -> None:
    certified = await make_entity(service)
    await certify(pg, certified.credit_code)
    description = (await service.client.get("/.well-known/gs1resolver")).json()
    namespaces = {entry["namespace"] for entry in description["supportedLinkType"]}

    linkset = await linkset_of(service, certified, level)

    for context in linkset["linkset"]:
        for rel in set(context) - {"anchor", "itemDescription"}:
            if rel.startswith(gs1_links.GS1_VOCABULARY):
                assert rel.removeprefix(gs1_links.GS1_VOCABULARY) in GS1_VOCABULARY_LINK_TYPES
            else:  # our own would be under a namespace the description declares
                assert any(rel.startswith(namespace) for namespace in namespaces), rel


# --- walking up the tree -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unknown", "walks_up_to"),
    [
        pytest.param("lot", "gtin", id="unknown-lot"),
        pytest.param("serial", "lot", id="unknown-serial"),
        pytest.param("serial-of-another-batch", "lot", id="serial-of-another-batch"),
        pytest.param("serial-of-unknown-lot", "gtin", id="serial-under-unknown-lot"),
    ],
)
async def test_an_unknown_qualifier_walks_up_to_the_next_known_level_without_an_http_redirect(
    service: Service, entity: Entity, unknown: str, walks_up_to: Level
) -> None:
    other = await make_entity(service, gtin=entity.gtin)
    path = {
        "lot": f"/01/{entity.gtin}/10/{random_lot()}",
        "serial": f"{entity.path('lot')}/21/NOT-A-CODE",
        "serial-of-another-batch": f"{entity.path('lot')}/21/{other.package_code}",
        "serial-of-unknown-lot": f"/01/{entity.gtin}/10/{random_lot()}/21/{entity.package_code}",
    }[unknown]

    redirected = await service.client.get(path)
    linkset = await service.client.get(path, params={"linkType": "linkset"})

    assert redirected.status_code == 307
    assert redirected.headers["location"] == entity.default_target(walks_up_to)  # the level's own link, not /01/...
    assert linkset.status_code == 200
    assert linkset.json()["linkset"][0]["anchor"] == PUBLIC_URL + entity.path(walks_up_to)


@ON_EACH_LEVEL
async def test_should_tolerate_a_trailing_slash(service: Service, entity: Entity, level: Level) -> None:
    without = await service.client.get(entity.path(level))
    with_slash = await service.client.get(entity.path(level) + "/")

    assert (with_slash.status_code, with_slash.headers["location"]) == (307, without.headers["location"])


# --- the resolver description ------------------------------------------------------------------------------------


async def test_shall_provide_a_resolver_description_file_valid_against_gs1s_schema(service: Service) -> None:
    response = await service.client.get("/.well-known/gs1resolver")

    assert response.status_code == 200
    description = response.json()
    assert schema_errors(DESCRIPTION_SCHEMA_URI, description) == []
    assert description["resolverRoot"] == PUBLIC_URL
    assert description["supportedPrimaryKeys"] == ["01"]  # the supported primary keys SHALL be listed
    assert description["jsonLdContextLocation"] == gs1_links.JSON_LD_CONTEXT  # SHOULD be declared
    assert description["supportedLinkType"] == [{"namespace": gs1_links.GS1_VOCABULARY, "prefix": "gs1:"}]
    assert description["linkTypeDefaultCanBeLinkset"] is False


def test_description_schema_harness_refuses_what_gs1s_schema_refuses() -> None:
    assert schema_errors(DESCRIPTION_SCHEMA_URI, {"resolverRoot": PUBLIC_URL}) != []  # supportedPrimaryKeys missing
    assert schema_errors(DESCRIPTION_SCHEMA_URI, {"resolverRoot": PUBLIC_URL, "supportedPrimaryKeys": ["99"]}) != []
    bad_prefix = {"resolverRoot": PUBLIC_URL, "supportedPrimaryKeys": ["01"], "supportedLinkType": [{"prefix": "gs1"}]}
    assert schema_errors(DESCRIPTION_SCHEMA_URI, bad_prefix) != []
