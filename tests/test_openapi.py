"""The OpenAPI description at /openapi.json: it names exactly the routes the app serves; a walk through the API
meets every answer it describes, each matching its schema with no member left undescribed and no described member
unmet; and schemathesis, generating valid and invalid requests from it against a real `tracecode serve` on real
Postgres and Redis, finds no 5xx and no error that is not problem details."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from codegen.format import compose
from resolver.api import answers, openapi
from resolver.api.export import EXPORT_FORMATS
from resolver.app import create_app
from resolver.ops.settings import Settings
from tests.conftest import Servers, Service, migrated_database, random_credit_code
from tests.helpers import batch_body, serving_as_admin

PRODUCER_REGION = "630121"  # 大通回族土族自治县
PRODUCER_CREDIT_CODE = "93630121MA7H8Q2K1C"
MAX_EXAMPLES = 10  # per operation, in the fuzzing phase; the examples and coverage phases add their own
PATH, BODY = ParameterLocation.PATH, ParameterLocation.BODY
MAX_SEEDED_LABELS = 1_000  # labels issued for the seeded batch in one generated request, at most
PAGE_ROUTES = {"/t/{code}", "/regions/{code}", "/01/{path}", "/p/{gtin}"}  # a browser gets their errors as HTML


# --- the description names every route ----------------------------------------------------------


def test_the_description_names_every_route_and_nothing_else(settings: Settings) -> None:
    app = create_app(settings)

    served = openapi.route_operations(app.routes)
    described = openapi.document_operations(openapi.DOCUMENT)

    assert served - described == set(), "routes the description lacks"
    assert described - served == set(), "described operations no route serves"


async def test_openapi_json_is_the_document(service: Service) -> None:
    response = await service.client.get("/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi.DOCUMENT
    assert response.json()["openapi"].startswith("3.1")


@pytest.mark.parametrize("path", sorted(openapi.DOCUMENT["paths"]))
async def test_every_path_refuses_a_method_it_lacks(service: Service, path: str) -> None:
    concrete = path.replace("{gtin}", "06901234567892").replace("{id}", "1").replace("{", "").replace("}", "")

    response = await service.client.put(concrete, headers=service.admin_headers)

    assert response.status_code == 405, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"
    assert "PUT" not in response.headers["allow"]


def test_the_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(copy.deepcopy(openapi.DOCUMENT))

    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]

    assert len(operations) == len(openapi.document_operations(openapi.DOCUMENT))


# --- every answer the document describes, from a walk through the API -----------------------------

ANSWERS = {name: model for name, model in vars(answers).items() if isinstance(model, type) and
           issubclass(model, answers.Answer)}  # fmt: skip
Served = tuple[str, str, int, str | None]  # path template, method, status, media type (None: no body)


def _described_answers(document: dict[str, Any]) -> set[Served]:
    """Every answer the document describes other than problem details, in each media type it may come in."""
    described: set[Served] = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    for media_type in response.get("content") or [None]:
                        described.add((path, method.upper(), int(status), media_type))
    return described


def _closed(schema: Any) -> Any:
    """`schema` with every object that lists its members closed to others: an answer with a member the
    description leaves out fails. (The served document leaves them open: members may be added, SPEC.)"""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


def _members(value: object) -> Iterator[tuple[str, str]]:
    """(model, member) of each member present in an answer, and in the answers within it."""
    if isinstance(value, answers.Answer):
        for name in value.model_fields_set:
            yield type(value).__name__, name
            yield from _members(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            yield from _members(item)


@dataclass
class Walk:
    """Requests through the API, each answer checked against the document: the status and media type it describes,
    the schema of that media type (closed to undescribed members), and the answer's model (for its formats)."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    served: set[Served] = field(default_factory=set)
    members: set[tuple[str, str]] = field(default_factory=set)  # (model, member) of answers met
    components: dict[str, Any] = field(default_factory=lambda: _closed(openapi.DOCUMENT["components"]))

    async def call(
        self, method: str, template: str, status: int, *, path: Mapping[str, object] | None = None,
        headers: dict[str, str] | None = None, **kwargs: Any,
    ) -> httpx.Response:  # fmt: skip
        url = template.format(**(path or {}))
        response = await self.client.request(method, url, headers={**self.headers, **(headers or {})}, **kwargs)
        assert response.status_code == status, f"{method} {url}: {response.status_code} {response.text[:500]}"
        operation = openapi.DOCUMENT["paths"][template][method.lower()]
        described = operation["responses"][str(status)]
        media_type = response.headers.get("content-type", "").split(";")[0].strip() or None
        if "content" not in described:
            assert not response.content, f"{method} {url}: a body the document does not describe"
            media_type = None
        else:
            assert media_type is not None and media_type in described["content"], f"{method} {url}: {media_type}"
            schema = described["content"][media_type]["schema"]
            if media_type == "application/json" or media_type.endswith("+json"):
                body = response.json()
                jsonschema.validate(body, {**schema, "components": self.components}, cls=Draft202012Validator)
                if "$ref" in schema:
                    answer = ANSWERS[schema["$ref"].rsplit("/", 1)[1]].model_validate_json(response.content)
                    self.members.update(_members(answer))
        self.served.add((template, method, status, media_type))
        return response


async def test_every_answer_the_document_describes_is_what_the_service_answers(service: Service) -> None:
    walk = Walk(service.client, service.admin_headers)
    today = dt.date.today()
    await walk.call("GET", "/livez", 200)
    await walk.call("GET", "/healthz", 200)
    await walk.call("GET", "/metrics", 200)
    await walk.call("GET", "/openapi.json", 200)
    await walk.call("OPTIONS", "/.well-known/gs1resolver", 204)
    await walk.call("GET", "/.well-known/gs1resolver", 200)

    # access
    token = (await walk.call("POST", "/api/v1/tokens", 201, json={"role": "regulator", "scope": "630121"})).json()
    await walk.call("DELETE", "/api/v1/tokens/{id}", 204, path={"id": token["id"]})

    # the registry
    credit_code, other = random_credit_code(), random_credit_code()
    for code in (credit_code, other):
        producer = {"credit_code": code, "name": f"测试合作社{code[-4:]}", "kind": "cooperative",
                    "region_code": "630121"}  # fmt: skip
        await walk.call("POST", "/api/v1/producers", 201, json=producer)
    by_code = {"credit_code": credit_code}
    await walk.call("GET", "/api/v1/producers", 200, params={"region": "630121", "limit": "1"})
    await walk.call("GET", "/api/v1/producers/{credit_code}", 200, path=by_code)
    await walk.call("PATCH", "/api/v1/producers/{credit_code}", 200, path=by_code, json={"contact": "0971-1234567"})
    gtin = "06901234567892"
    product = {"name": "大通牦牛肉", "category": "yak", "gtin": gtin}
    created = await walk.call("POST", "/api/v1/producers/{credit_code}/products", 201, path=by_code, json=product)
    await walk.call("GET", "/api/v1/producers/{credit_code}/products", 200, path=by_code)
    await walk.call("GET", "/api/v1/products/{id}", 200, path={"id": created.json()["id"]})
    await walk.call("PATCH", "/api/v1/products/{id}", 200, path={"id": created.json()["id"]}, json={"name": "牦牛肉"})
    product["name"] = "牦牛肉"
    spare = await walk.call("POST", "/api/v1/producers/{credit_code}/products", 201, path=by_code,
                            json={"name": "藏羊肉", "category": "tibetan_sheep"})  # fmt: skip
    await walk.call("DELETE", "/api/v1/products/{id}", 204, path={"id": spare.json()["id"]})
    certifications = []
    for code, covered in ((credit_code, None), (other, {"name": "青稞", "category": "highland_barley"})):
        certification = {"kind": "green", "number": f"LB-{code[-6:]}", "credit_code": code, "product": covered,
                         "valid_from": "2025-01-01", "valid_to": "2028-12-31"}  # fmt: skip
        certifications.append((await walk.call("POST", "/api/v1/certifications", 201, json=certification)).json())
    by_id = {"id": certifications[0]["id"]}
    await walk.call("GET", "/api/v1/certifications", 200, params={"credit_code": credit_code})
    await walk.call("GET", "/api/v1/certifications/{id}", 200, path=by_id)
    await walk.call("PATCH", "/api/v1/certifications/{id}", 200, path=by_id, json={"valid_to": "2029-12-31"})
    suspend = {"status": "suspended", "status_reason": "抽检不合格"}
    await walk.call("PATCH", "/api/v1/certifications/{id}", 200, path=by_id, json=suspend)
    await walk.call("PATCH", "/api/v1/certifications/{id}", 200, path=by_id, json={"status": "valid"})
    csv = {"Content-Type": "text/csv"}
    rows = f"credit_code,name,kind,region_code,contact\r\n{random_credit_code()},导入合作社,cooperative,630121,\r\n"
    await walk.call("POST", "/api/v1/imports/producers", 200, content=rows.encode(), headers=csv)
    good = f"organic,OC-{credit_code[-6:]},{credit_code},大通青稞,highland_barley,2025-01-01,2027-12-31"
    bad = good.replace("OC-", "OC-X").replace("highland_barley", "no_such_category")
    rows = "\r\n".join(("kind,number,credit_code,product_name,product_category,valid_from,valid_to", good, bad, good))
    await walk.call("POST", "/api/v1/imports/certifications", 200, content=rows.encode(), headers=csv,
                    params={"mode": "good_rows"})  # fmt: skip

    # batches, and what resolves them
    body = batch_body(credit_code, product=product)
    batch = (await walk.call("POST", "/api/v1/batches", 201, json=body)).json()
    await walk.call("GET", "/api/v1/codes/{code}", 200, path={"code": batch["trace_code"]})
    by_trace_code = {"trace_code": batch["trace_code"]}
    await walk.call("POST", "/api/v1/batches/{trace_code}/labels", 201, path=by_trace_code, json={"count": 3},
                    headers={"Accept": "application/json"})  # fmt: skip
    await walk.call("POST", "/api/v1/batches/{trace_code}/labels", 201, path=by_trace_code, json={"count": 2})
    await walk.call("POST", "/api/v1/batches/{trace_code}/labels", 201, path=by_trace_code,
                    json={"count": 2, "link": "digital_link"}, headers={"Accept": "application/json"})  # fmt: skip
    await walk.call("GET", "/t/{code}", 200, path={"code": batch["trace_code"]}, headers={"Accept": "text/html"})
    await walk.call("GET", "/t/{code}", 200, path={"code": batch["trace_code"]},
                    headers={"Accept": "application/json"})  # fmt: skip
    link = {"path": f"{gtin}/10/{body['lot']}"}
    await walk.call("GET", "/01/{path}", 200, path=link, params={"linkType": "linkset"})
    await walk.call("GET", "/01/{path}", 200, path=link, headers={"Accept": "application/ld+json"})
    await walk.call("GET", "/01/{path}", 307, path=link)
    await walk.call("OPTIONS", "/01/{path}", 204, path=link)
    await walk.call("GET", "/p/{gtin}", 200, path={"gtin": gtin})

    # a market's gate, a trade
    market = await walk.call("POST", "/api/v1/markets", 201, json={"name": "海湖批发市场", "region_code": "630103"})
    scope = f"{market.json()['id']}/north-1"
    gate = (await walk.call("POST", "/api/v1/tokens", 201, json={"role": "gate", "scope": scope})).json()
    gate_headers = {"Authorization": f"Bearer {gate['token']}"}
    scan = {"code": batch["trace_code"], "quantity": 50, "unit": "kg", "idempotency_key": "walk-1"}
    decision = await walk.call("POST", "/api/v1/gate/scans", 200, json=scan, headers=gate_headers)
    await walk.call("POST", "/api/v1/gate/scans", 200, json={**scan, "code": "12345", "idempotency_key": "walk-2"},
                    headers=gate_headers)  # fmt: skip
    voucher = decision.json()["voucher_code"]
    trade = {"voucher_code": voucher, "buyer": {"name": "城中区刘记牛羊肉店"}, "quantity": 20, "unit": "kg",
             "idempotency_key": "walk-3"}  # fmt: skip
    circulation = (await walk.call("POST", "/api/v1/trades", 201, json=trade)).json()["circulation_code"]
    await walk.call("POST", "/api/v1/trades", 200, json=trade)
    for code in (voucher, circulation):
        await walk.call("GET", "/api/v1/codes/{code}", 200, path={"code": code})
    unknown = {**scan, "code": compose(1, "630121", 12_345), "idempotency_key": "walk-4"}
    await walk.call("POST", "/api/v1/gate/scans", 200, json=unknown, headers=gate_headers)  # a rejection in the stats
    period = {"from": (today - dt.timedelta(days=1)).isoformat(), "to": (today + dt.timedelta(days=1)).isoformat()}
    csv_please = {"Accept": "text/csv"}
    for headers in ({}, csv_please):
        await walk.call("GET", "/api/v1/batches/{code}/flow", 200, path={"code": batch["trace_code"]}, headers=headers)
        await walk.call("GET", "/api/v1/markets/{id}/stats", 200, path={"id": market.json()["id"]}, params=period,
                        headers=headers)  # fmt: skip
        await walk.call("GET", "/api/v1/regions/{code}/labels", 200, path={"code": "630121"}, params=period,
                        headers=headers)  # fmt: skip

    # the four hooks
    await walk.call("GET", "/api/v1/regions/{code}/coverage", 200, path={"code": "630121"})
    await walk.call("GET", "/api/v1/regions/{code}/coverage", 200, path={"code": "630100"}, params={"breakdown": "1"})
    await walk.call("GET", "/api/v1/regions/{code}/coverage", 200, path={"code": "630100"},
                    params={"breakdown": "1", "at": (today - dt.timedelta(days=30)).isoformat()})  # fmt: skip
    designation = {"region_code": "630121", "kind": "quality_safety_county", "name": "大通县国家农产品质量安全县",
                   "designated_on": "2018-12-01", "review_on": (today - dt.timedelta(days=1)).isoformat()}  # fmt: skip
    await walk.call("POST", "/api/v1/designations", 201, json=designation)
    for headers in ({}, csv_please):
        await walk.call("GET", "/api/v1/designations", 200, params={"region": "630100"}, headers=headers)
    for code in (credit_code, random_credit_code()):  # registered, and not
        await walk.call("GET", "/api/v1/eligibility/{credit_code}", 200, path={"credit_code": code})
    await walk.call("GET", "/api/v1/certifications/unlisted", 200, params={"region": "630121"})
    await walk.call(
        "GET",
        "/api/v1/certifications/precheck",
        200,
        params={"credit_code": credit_code, "product_id": str(created.json()["id"])},
    )
    brand = (
        await walk.call(
            "POST", "/api/v1/brands", 201, json={"name": "大通牦牛", "kind": "regional_public", "region_code": "630121"}
        )
    ).json()
    by_brand = {"id": brand["id"]}
    await walk.call("POST", "/api/v1/brands/{id}/members", 201, path=by_brand, json=by_code)
    await walk.call("POST", "/api/v1/brands/{id}/members", 200, path=by_brand, json=by_code)
    await walk.call("POST", "/api/v1/brands/{id}/members", 409, path=by_brand, json={"credit_code": other})
    for headers in ({}, csv_please):
        await walk.call("GET", "/api/v1/brands/{id}", 200, path=by_brand, headers=headers)
    for kind in ("national", "overseas"):
        fair = (await walk.call("POST", "/api/v1/fairs", 201, json={"name": "绿博会", "kind": kind,
                                "starts_on": "2026-10-01", "ends_on": "2026-10-05"})).json()  # fmt: skip
        by_fair = {"id": fair["id"]}
        listed = [{"credit_code": credit_code, "product_name": product["name"]},
                  {"credit_code": other, "product_name": "青稞"}]  # fmt: skip
        await walk.call("POST", "/api/v1/fairs/{id}/exhibitors", 200, path=by_fair, json=listed)
        rows = f"credit_code,product_name\r\n{credit_code},{product['name']}\r\n"
        await walk.call("POST", "/api/v1/fairs/{id}/exhibitors", 200, path=by_fair, content=rows.encode(),
                        headers={**csv, **csv_please})  # fmt: skip
        await walk.call("GET", "/api/v1/fairs/{id}/door/{code}", 200, path={**by_fair, "code": batch["trace_code"]})
    period = {"region": "630121", "from": (today - dt.timedelta(days=1)).isoformat(), "to": today.isoformat()}
    for export_format in EXPORT_FORMATS:
        await walk.call("GET", "/api/v1/exports/batches", 200, params={**period, "format": export_format})
    await walk.call("GET", "/regions/{code}", 200, path={"code": "630121"})

    # a lab's result after registration (in force: the latest), and the document that shows it
    by_batch = {"code": batch["trace_code"]}
    lab = (await walk.call("POST", "/api/v1/tokens", 201, json={"role": "lab", "scope": "630121"})).json()
    result = {"result": "pass", "agency": "大通县农产品质量安全检测站", "inspected_on": today.isoformat(),
              "report_no": "DT-2026-0001", "method": "GB 23200.113-2018",
              "items": [{"name": "毒死蜱", "result": "pass"}]}  # fmt: skip
    await walk.call("POST", "/api/v1/batches/{code}/inspections", 201, path=by_batch, json=result,
                    headers={"Authorization": f"Bearer {lab['token']}"})  # fmt: skip
    await walk.call("GET", "/api/v1/codes/{code}", 200, path=by_batch)

    # a recall, twice, and the document it leaves; then what can be deleted
    await walk.call("POST", "/api/v1/batches/{code}/recall", 200, path=by_batch, json={"reason": "兽药残留超标"})
    await walk.call("POST", "/api/v1/batches/{code}/recall", 200, path=by_batch, json={"reason": "again"})
    await walk.call("GET", "/api/v1/codes/{code}", 200, path=by_batch)
    await walk.call("DELETE", "/api/v1/certifications/{id}", 204, path={"id": certifications[1]["id"]})
    await walk.call("DELETE", "/api/v1/producers/{credit_code}", 204, path={"credit_code": other})

    assert _described_answers(openapi.DOCUMENT) - walk.served == set(), "described answers the walk never met"
    described = {(name, member) for name, model in ANSWERS.items() for member in model.model_fields}
    problems = {(name, member) for name, member in described if name in ("Problem", "FieldError")}
    assert described - problems - walk.members == set(), "described members no answer of the walk had"


# --- schemathesis against a real server ----------------------------------------------------------


@dataclass(frozen=True)
class Api:
    base: str
    admin_headers: dict[str, str]
    gate_headers: dict[str, str] = field(default_factory=dict)

    def headers_for(self, case: schemathesis.Case[Any]) -> dict[str, str]:
        """The token of the role that may call the operation: a gate's for gate scans, else an admin's.

        The gate token is made on first use: the run revokes tokens by id (DELETE /api/v1/tokens/{id}), one made
        earlier could be among them.
        """
        if case.operation.path != "/api/v1/gate/scans":
            return self.admin_headers
        if not self.gate_headers:
            scope = f"{SEEDED[0].market_id}/gate-1"
            token = httpx.post(f"{self.base}/api/v1/tokens", json={"role": "gate", "scope": scope},
                               headers=self.admin_headers, timeout=30)  # fmt: skip
            self.gate_headers["Authorization"] = f"Bearer {_created(token)['token']}"
        return self.gate_headers


@dataclass(frozen=True, slots=True)
class Seeded:
    """What the run finds existing, so that some generated requests reach past the 404s."""

    credit_code: str
    trace_code: str
    product_id: int
    certification_id: int
    gtin: str
    lot: str
    market_id: int


# Filled by the `api` fixture once it has seeded the database: generated cases draw path parameters from it.
SEEDED: list[Seeded] = []


@pytest.fixture(scope="module")
async def fuzz_database(servers: Servers) -> AsyncIterator[str]:
    async with migrated_database(servers, "tracecode_openapi", code_partitions=4) as url:
        yield url


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _seed(client: httpx.Client) -> Seeded:
    """A producer with a product (with a GTIN), a batch of it, a green food certification, and a market."""
    product = {"name": "大通牦牛肉", "category": "yak", "gtin": "06901234567892"}
    lot = "L2026A"
    _created(
        client.post(
            "/api/v1/producers",
            json={
                "credit_code": PRODUCER_CREDIT_CODE,
                "name": "大通县测试合作社",
                "kind": "cooperative",
                "region_code": PRODUCER_REGION,
            },
        )
    )
    created_product = _created(client.post(f"/api/v1/producers/{PRODUCER_CREDIT_CODE}/products", json=product))
    batch = _created(client.post("/api/v1/batches", json=batch_body(PRODUCER_CREDIT_CODE, lot=lot, product=product)))
    certification = _created(
        client.post(
            "/api/v1/certifications",
            json={
                "kind": "green",
                "number": "LB-18-0001",
                "credit_code": PRODUCER_CREDIT_CODE,
                "product": {"name": product["name"], "category": product["category"]},
                "valid_from": "2025-01-01",
                "valid_to": "2028-12-31",
            },
        )
    )
    market = _created(client.post("/api/v1/markets", json={"name": "西宁市海湖批发市场", "region_code": "630105"}))
    return Seeded(PRODUCER_CREDIT_CODE, batch["trace_code"], created_product["id"], certification["id"],
                  product["gtin"], lot, market["id"])  # fmt: skip


@pytest.fixture(scope="module")
def api(fuzz_database: str, servers: Servers) -> Iterator[Api]:
    """A real `tracecode serve` on a database of its own, seeded, with an admin token."""
    with serving_as_admin(fuzz_database, servers.redis_url) as (base, headers):
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            seeded = _seed(client)
        SEEDED[:] = [seeded]
        try:
            yield Api(base, headers)
        finally:
            SEEDED.clear()


def _seeded_path_parameters(path: str, seeded: Seeded) -> dict[str, object]:
    """Path parameters naming the seeded records, for the operations at `path`.

    Not the labels route (unless flatmap_case sees a small count): a generated count up to 10,000,000 for an
    existing batch is a benchmark, not a test.
    """
    if "/labels" in path:
        return {}
    values: dict[str, object] = {"credit_code": seeded.credit_code, "gtin": seeded.gtin, "lot": seeded.lot}
    if path.startswith(("/t/", "/api/v1/codes/", "/api/v1/batches/")):
        values["code"] = seeded.trace_code
    elif path.startswith(("/regions/", "/api/v1/regions/")):
        values["code"] = PRODUCER_REGION
    if path.startswith("/api/v1/products/"):
        values["id"] = seeded.product_id
    elif path.startswith("/api/v1/certifications/"):
        values["id"] = seeded.certification_id
    return values


@schemathesis.serializer("text/csv")
def _csv(ctx: schemathesis.SerializationContext, value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


def problem_details(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Every 4xx and 5xx is problem details with a stable code (a page route may answer a browser in HTML)."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    if case.operation.path in PAGE_ROUTES and content_type.startswith("text/html"):
        return
    assert content_type.startswith("application/problem+json"), f"{response.status_code} answered as {content_type!r}"
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("status") == response.status_code, body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("title"), str) and isinstance(body.get("detail"), str), body
    assert str(body.get("type", "")).endswith(body["code"]), body


CHECKS = [
    not_a_server_error,
    problem_details,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    unsupported_method,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20_260_101,
        "generation": {"deterministic": True},
        # The coverage phase (boundary values of every schema, every method no route has) finds nothing the
        # fuzzing phase misses here and takes three times as long; test_every_path_refuses_a_method_it_lacks
        # covers the methods. Turn it on to look deeper: 43 operations pass with it too.
        "phases": {"coverage": {"enabled": False}},
    }
)
SCHEMA = schemathesis.openapi.from_dict(copy.deepcopy(openapi.DOCUMENT), config=CONFIG)


@SCHEMA.hook
def flatmap_case(
    context: schemathesis.HookContext, case: schemathesis.Case[Any]
) -> st.SearchStrategy[schemathesis.Case[Any]]:
    """Half the cases whose path and body are valid name the seeded records instead of random ones."""
    if not SEEDED or case.meta is None:
        return st.just(case)
    seeded = case.derive(keep_auth=True)
    if not case.meta.is_negative_at(PATH):
        values = _seeded_path_parameters(case.operation.path, SEEDED[0])
        if "/labels" in case.operation.path and isinstance(case.body, dict) and _is_small_count(case.body):
            values["trace_code"] = SEEDED[0].trace_code
        seeded.path_parameters = {name: values.get(name, value) for name, value in case.path_parameters.items()}
    if not case.meta.is_negative_at(BODY) and isinstance(case.body, dict):
        values = _seeded_body_members(case.operation.path, SEEDED[0])
        seeded.body = {name: values.get(name, value) for name, value in case.body.items()}  # type: ignore[misc]
    if seeded.path_parameters == case.path_parameters and seeded.body == case.body:
        return st.just(case)
    return st.sampled_from([case, seeded])


def _is_small_count(body: dict[str, Any]) -> bool:
    count = body.get("count")
    return isinstance(count, int) and count <= MAX_SEEDED_LABELS


def _seeded_body_members(path: str, seeded: Seeded) -> dict[str, object]:
    if path == "/api/v1/gate/scans":
        return {"code": seeded.trace_code}
    return {"producer_credit_code": seeded.credit_code, "credit_code": seeded.credit_code}


@SCHEMA.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_every_error_is_problem_details(case: schemathesis.Case[Any], api: Api) -> None:
    case.call_and_validate(base_url=api.base, headers=api.headers_for(case), checks=CHECKS, timeout=30)
