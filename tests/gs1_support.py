"""What the GS1 Digital Link tests share: an entity known at its three levels, the schemas, Link header parsing."""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import asyncpg
import httpx
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.conftest import Service
from tests.helpers import issue_labels, random_gtin, register_batch, register_producer

PUBLIC_URL = "https://trace.example.cn"  # the `settings` fixture's public_url
DATA = Path(__file__).parent / "data"
# Both linkset schema files call themselves "@id": https://ref.gs1.org/standards/resolver/linkset-schema, which is
# no JSON Schema keyword: each is registered under a local URI of its own, and nothing is fetched.
GS1_SCHEMA_URI = "urn:tracecode:test:gs1-linkset-schema"
BASE_SCHEMA_URI = "urn:tracecode:test:linkset-schema"
DESCRIPTION_SCHEMA_URI = "urn:tracecode:test:description-file-schema"
GS1_ONLY_MEMBERS = ("itemDescription",)  # required by the GS1 schema, refused by the RFC 9264 base schema
PRODUCT_NAME = "祁连有机牦牛肉"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

Level = Literal["gtin", "lot", "serial"]
LEVELS: tuple[Level, ...] = ("gtin", "lot", "serial")


def random_lot() -> str:
    return f"L{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Entity:
    """A product with a GTIN, one of its batches (by lot) and one package code of that batch."""

    gtin: str
    lot: str
    batch_code: str
    package_code: str
    credit_code: str

    def path(self, level: Level) -> str:
        """The Digital Link path of the entity at `level`."""
        path = f"/01/{self.gtin}"
        if level != "gtin":
            path += f"/10/{quote(self.lot, safe='')}"
        if level == "serial":
            path += f"/21/{self.package_code}"
        return path

    def default_target(self, level: Level) -> str:
        """Where the Digital Link of `level` redirects by default."""
        if level == "gtin":
            return f"{PUBLIC_URL}/p/{self.gtin}"
        return f"{PUBLIC_URL}/t/{self.batch_code if level == 'lot' else self.package_code}"


async def make_entity(
    service: Service, *, gtin: str | None = None, lot: str | None = None, credit_code: str | None = None
) -> Entity:
    credit_code = credit_code or await register_producer(service)
    gtin, lot = gtin or random_gtin(), lot or random_lot()
    created = await register_batch(
        service, credit_code, product={"name": PRODUCT_NAME, "category": "yak", "gtin": gtin}, lot=lot
    )
    (package,) = await issue_labels(service, created["trace_code"], 1)
    return Entity(gtin, lot, created["trace_code"], package, credit_code)


async def certify(pg: asyncpg.Connection, credit_code: str, kind: str = "green", *, days_left: int = 300) -> None:
    """A certification of the producer, valid for `days_left` more days (negative: expired)."""
    today = dt.date.today()
    await pg.execute(
        "INSERT INTO certifications (kind, number, producer_id, valid_from, valid_to)"
        " SELECT $1, $2, id, $3, $4 FROM producers WHERE credit_code = $5",
        kind, f"TEST-{secrets.token_hex(6)}", today - dt.timedelta(days=800), today + dt.timedelta(days=days_left),
        credit_code,
    )  # fmt: skip


@functools.cache
def _registry() -> Registry[Any]:
    """The schemas under local URIs; a Registry retrieves nothing it was not given, so no network."""
    files = (
        (GS1_SCHEMA_URI, "gs1-linkset/gs1-linkset-schema.json"),
        (BASE_SCHEMA_URI, "gs1-linkset/linkset-schema.json"),
        (DESCRIPTION_SCHEMA_URI, "gs1-resolver/description-file-schema.json"),
    )
    resources = [
        (uri, Resource.from_contents(json.loads((DATA / name).read_text()), default_specification=DRAFT7))
        for uri, name in files
    ]
    return Registry().with_resources(resources)


def schema_errors(uri: str, instance: object) -> list[str]:
    """The messages of every error of `instance` against the schema registered as `uri`."""
    validator = Draft7Validator({"$ref": uri}, registry=_registry())
    return [error.message for error in validator.iter_errors(instance)]


def without_gs1_members(linkset: dict[str, Any]) -> dict[str, Any]:
    return {"linkset": [{k: v for k, v in c.items() if k not in GS1_ONLY_MEMBERS} for c in linkset["linkset"]]}


def example(name: str) -> object:
    return json.loads((DATA / "gs1-linkset" / name).read_text())


def link_header(response: httpx.Response) -> list[tuple[str, dict[str, str]]]:
    """(target, parameters) of each link of the response's Link header (targets hold no `>` here)."""
    links = []
    for value in response.headers.get("link", "").split(", <"):
        if not value:
            continue
        target, _, rest = value.lstrip("<").partition(">")
        params = dict(p.strip().split("=", 1) for p in rest.split(";") if "=" in p)
        links.append((target, {k: v.strip('"') for k, v in params.items()}))
    return links


def link_header_rels(response: httpx.Response) -> dict[str, list[str]]:
    rels: dict[str, list[str]] = {}
    for target, params in link_header(response):
        rels.setdefault(params["rel"], []).append(target)
    return rels
