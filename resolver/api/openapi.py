"""The API described as OpenAPI 3.1, served at GET /openapi.json.

Every operation is one row of OPERATIONS: method, path, the pydantic model of its request body (what the route
validates with), the model of its answer (resolver.api.answers), the roles whose tokens it accepts, and the
problems it may answer beyond those its roles and body imply. Request and answer schemas both come from the models
(`models_json_schema`), so the description cannot drift from what the service accepts or answers; every error is
described as problem details (RFC 9457, resolver.edge.problems). The document is built once, at import, and answered
as the same bytes. tests/test_openapi.py checks that it names exactly the routes the app serves, validates every
answer of a walk through the API against it, and runs schemathesis against a real server from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from resolver.api import answers, brands, catalog, designations, fairs, gate, hooks, inspections, labels, recall
from resolver.api.export import EARLIEST_EXPORT_DATE, EXPORT_FORMATS, LATEST_EXPORT_DATE, MEDIA_TYPES
from resolver.api.imports import IMPORT_MODES, MAX_IMPORT_BYTES
from resolver.categories import CERTIFICATION_LABELS, PRODUCER_KIND_LABELS
from resolver.edge import bodies

API_VERSION: Final = "1.0.0"
SCHEMA_REF: Final = "#/components/schemas/{model}"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
JSON: Final = "application/json"
HTML: Final = "text/html"
TEXT: Final = "text/plain"
# Methods Starlette adds on its own (HEAD beside GET); they answer like the method they stand for.
IMPLIED_METHODS: Final = frozenset({"HEAD"})
_CONVERTOR: Final = re.compile(r"\{(\w+):\w+\}")

# --- pieces of operations ------------------------------------------------------------------------

_STRING: Final = {"type": "string"}
_INTEGER: Final = {"type": "integer"}
_REGION_CODE: Final = {"type": "string", "pattern": "^[0-9]{6}$"}

_ERROR_DESCRIPTIONS: Final = {
    400: "Malformed request: a code, GTIN or lot that does not parse, or a body that is not UTF-8 JSON",
    401: "No bearer token, or an unknown or revoked one",
    403: "The token's role or scope does not allow this",
    404: "Not found",
    409: "Conflicts with what is registered",
    413: "Body too large",
    415: "Wrong Content-Type",
    422: "Well-formed but invalid input (`errors` names each member)",
    429: "Too many malformed or never-issued codes from this client: wait `Retry-After` seconds",
    503: "Postgres unavailable: retry after `Retry-After` seconds; nothing was written",
}
_TOKEN_PROBLEMS: Final = (401, 403)
_BODY_PROBLEMS: Final = (400, 413, 415, 422)
_STORE_PROBLEMS: Final = (503,)

ADMIN: Final = ("admin",)
ADMIN_REGULATOR: Final = ("admin", "regulator")
REGISTRY_READERS: Final = ("admin", "regulator", "producer")  # a regulator its region, a producer itself
ADMIN_PRODUCER: Final = ("admin", "producer")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMA_REF.format(model=name)}


Schema = type[BaseModel] | dict[str, Any]  # a model, whose schema goes to the components, or a schema


def _answer(description: str, *content: tuple[str, Schema], **extra: Any) -> dict[str, Any]:
    """An answer: its description, and the schema of each media type it may come in."""
    response: dict[str, Any] = {"description": description, **extra}
    if content:
        response["content"] = {media_type: {"schema": schema} for media_type, schema in content}
    return response


def _referred(response: dict[str, Any]) -> dict[str, Any]:
    """`response` with each model in its content replaced by a reference to the model's schema."""
    if "content" not in response:
        return response
    content = {media_type: {"schema": _schema_of(media["schema"])} for media_type, media in response["content"].items()}
    return {**response, "content": content}


def _schema_of(schema: Schema) -> dict[str, Any]:
    return _ref(schema.__name__) if isinstance(schema, type) else schema


def _json(description: str, model: type[BaseModel]) -> dict[str, Any]:
    return _answer(description, (JSON, model))


def _csv_or_json(description: str, model: type[BaseModel]) -> dict[int, dict[str, Any]]:
    """A list's 200: JSON, or CSV for Excel (UTF-8 with BOM) when Accept prefers `text/csv`."""
    return {200: _answer(f"{description}: JSON, or CSV (UTF-8 with BOM) for `Accept: text/csv`", (JSON, model),
                         ("text/csv", _STRING))}  # fmt: skip


def _problem(status: int, *, html: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {PROBLEM_MEDIA_TYPE: {"schema": _ref(answers.Problem.__name__)}}
    if html:  # pages answer a browser with the same error as a Chinese page
        content[HTML] = {"schema": _STRING}
    response: dict[str, Any] = {"description": _ERROR_DESCRIPTIONS[status], "content": content}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": _INTEGER, "required": True}}
    return response


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema or _STRING}


def _query(name: str, description: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _choice_filter(name: str, choices: Iterable[str]) -> dict[str, Any]:
    return _query(name, f"only this {name} (empty: any)", {"enum": [*choices, ""]})


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return _query("limit", f"page size (default {default})", {"type": "integer", "minimum": 1, "maximum": maximum})


_CODE = _path("code", "a trace code: 20 digits (spaces, dashes or a full /t/ URL accepted) or the national long form")
_BATCH_CODE = _path("code", "a production batch code (type 1) or its national long form")
_CREDIT_CODE = _path("credit_code", "unified social credit code (GB 32100-2015), 18 characters")
_ID = _path("id", "record id", {"type": "integer", "minimum": 0})
_REGION_PATH = _path("code", "GB/T 2260 region code: a county, prefecture or province", _REGION_CODE)
_REGION_QUERY = _query("region", "region code", _REGION_CODE, required=True)
_AFTER = _query("after", "page after this id (`next_after` of the last page)",
                {"type": "integer", "minimum": 0, "maximum": 2**62})  # fmt: skip
# An optional filter left empty (`?region=`) means "any", as a form with an empty field sends it.
_REGION_FILTER = _query("region", "only records of this region and those under it (empty: any)",
                        {"type": "string", "pattern": "^([0-9]{6})?$"})  # fmt: skip
_CREDIT_FILTER = _query("credit_code", "only this producer (empty: any)", _STRING)
_PAGE = _limit(catalog.PAGE_DEFAULT, catalog.PAGE_MAX)
_PREFLIGHT_PARAMETERS: Final = (_path("path", "anything: a preflight is answered alike"),)
_GS1_PARAMETERS: Final = (
    _path(
        "path",
        "the GTIN (AI 01: 8, 12, 13 or 14 digits), then in this order and each at most once `/22/{variant}`, "
        "`/10/{lot}`, `/21/{serial}` (a package code), or `/235/{serial}` alone: 1 to 20 (235: 28) GS1 set 82 "
        "characters, percent-encoded",
    ),
    _query("linkType", "`linkset`, `all`, or a GS1 link type (`gs1:pip`, ...)", _STRING),
)
_DATE_RANGE: Final = {
    "type": "string",
    "format": "date",
    "description": f"{EARLIEST_EXPORT_DATE}..{LATEST_EXPORT_DATE}",
}
_EXPORT_PARAMETERS: Final = (
    _REGION_QUERY, _query("from", "first day", _DATE_RANGE, required=True),
    _query("to", "last day", _DATE_RANGE, required=True),
    _query("format", "national (default) or epcis", {"enum": list(EXPORT_FORMATS)}),
)  # fmt: skip
_AT: Final = _query(
    "at", "as things stood at the end of this day (China time), not after today", {"type": "string", "format": "date"}
)
_PERIOD_PARAMETERS: Final = (
    _query("from", "first day (China time)", _DATE_RANGE, required=True),
    _query("to", "last day (China time)", _DATE_RANGE, required=True),
)
_IMPORT_PARAMETERS: Final = (
    _query("mode", "all_or_nothing (default) or good_rows", {"enum": list(IMPORT_MODES)}),
    _query("dry_run", "check only, import nothing", {"type": "boolean"}),
)
_CSV_BODY: Final = {
    "required": True,
    "description": f"UTF-8 CSV with a header row, at most {MAX_IMPORT_BYTES // (1024 * 1024)} MiB",
    "content": {"text/csv": {"schema": _STRING}},
}

_EXHIBITOR_BODY: Final = {
    "required": True,
    "description": f"a JSON list (at most {fairs.MAX_EXHIBITOR_ROWS} rows), or UTF-8 CSV with the header "
    f"credit_code,product_name (at most {fairs.MAX_EXHIBITOR_CSV_BYTES // (1024 * 1024)} MiB; Excel's BOM accepted)",
    "content": {JSON: {"schema": fairs.ExhibitorList}, "text/csv": {"schema": _STRING}},
}

_LINK_HEADERS: Final = {"Link": {"schema": _STRING, "description": "RFC 8288 link to the linkset (and context)"}}
_PREFLIGHT: Final = {204: _answer("allowed methods and headers")}
_DELETED: Final = {204: _answer("deleted")}
_PAGE_OR_DOCUMENT: Final = {200: _answer("the page, or the document", (HTML, _STRING), (JSON, answers.CodeDocument))}
_DIGITAL_LINK: Final = {
    200: _answer("the RFC 9264 linkset of every known level (`linkType=linkset`, or Accept prefers JSON); as JSON-LD, "
                 "its context in the body, when Accept prefers `application/ld+json`",
                 ("application/linkset+json", answers.Linkset), ("application/ld+json", {"type": "object"}),
                 headers=_LINK_HEADERS),
    307: _answer("to the link of the asked type at the most specific known level (default: the product page, or the "
                 "consumer page of the batch or package)",
                 headers={"Location": {"schema": _STRING, "required": True}, **_LINK_HEADERS}),
}  # fmt: skip
_EXPORT: Final = {
    200: _answer(
        "JSON lines in the national platform's names, or EPCIS 2.0 JSON-LD",
        (MEDIA_TYPES["national"], _STRING),
        (MEDIA_TYPES["epcis"], answers.EpcisDocument),
    )
}
_LABELS: Final = {201: _answer("the codes", ("text/csv", _STRING), (JSON, answers.Labels))}
_TRADE: Final = {200: _json("a replay", answers.Trade), 201: _json("the circulation code", answers.Trade)}


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the API. `roles` are those whose tokens it accepts (none: public); `problems` are those it
    may answer beyond what its roles (401, 403), its body (400, 413, 415, 422) and its store (503) imply."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, dict[str, Any]]
    body: type[BaseModel] | dict[str, Any] | None = None  # a model of a JSON body, or the request body itself
    roles: Sequence[str] = ()
    problems: Sequence[int] = ()
    parameters: Sequence[dict[str, Any]] = ()
    html_errors: bool = False  # a browser gets its errors as a Chinese page
    uses_store: bool = True

    def as_json(self) -> dict[str, Any]:
        problems = set(self.problems)
        if self.roles:
            problems.update(_TOKEN_PROBLEMS)
        if self.body is not None:
            problems.update(_BODY_PROBLEMS)
        if self.uses_store:
            problems.update(_STORE_PROBLEMS)
        responses = {str(status): _referred(response) for status, response in self.answers.items()}
        responses |= {str(status): _problem(status, html=self.html_errors) for status in sorted(problems)}
        operation: dict[str, Any] = {"operationId": self.operation_id, "summary": self.summary, "tags": [self.tag]}
        if self.parameters:
            operation["parameters"] = list(self.parameters)
        if isinstance(self.body, type):
            operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _schema_of(self.body)}}}
        elif self.body is not None:
            operation["requestBody"] = _referred(self.body)
        operation["responses"] = responses
        # OpenAPI 3.1: for a scheme other than OAuth2 and OpenID Connect, the list may name roles.
        operation["security"] = [{"bearer": list(self.roles)}] if self.roles else []
        return operation


OPERATIONS: Final = (
    # operations
    Operation("GET", "/livez", "livez", "Liveness: the process answers (no I/O)", "operations",
      {200: _answer("ok", (TEXT, _STRING))}, uses_store=False),
    Operation("GET", "/healthz", "healthz", "Health of Postgres and Redis (`degraded` when one is away)", "operations",
      {200: _json("health", answers.Health)}, uses_store=False),
    Operation("GET", "/metrics", "metrics", "Prometheus metrics, summed over this run's workers", "operations",
      {200: _answer("Prometheus text format", (TEXT, _STRING))}, uses_store=False),
    Operation("GET", "/openapi.json", "openapi", "This description (OpenAPI 3.1)", "operations",
      {200: _answer("the OpenAPI document", (JSON, {"type": "object"}))}, uses_store=False),
    # resolve (the raw ASGI scan routes, resolver.scan.resolve, and GS1 Digital Link)
    Operation("GET", "/t/{code}", "consumer_page",
      "The consumer page of a code (HTML); the JSON document for `Accept: application/json`", "resolve",
      _PAGE_OR_DOCUMENT, problems=(400, 404, 429), parameters=[_CODE], html_errors=True),
    Operation("GET", "/api/v1/codes/{code}", "code_document",
      "The JSON document of a code, with its chain and scan statistics",
      "resolve", {200: _json("the document", answers.CodeDocument)}, problems=(400, 404, 429), parameters=[_CODE]),
    Operation("GET", "/01/{path}", "digital_link",
      "GS1 Digital Link of a product, batch or package: 307 to one of its links, or its linkset",
      "resolve", _DIGITAL_LINK, problems=(400, 404, 429), parameters=_GS1_PARAMETERS, html_errors=True),
    Operation("OPTIONS", "/01/{path}", "digital_link_preflight", "CORS preflight", "resolve", _PREFLIGHT,
      parameters=_PREFLIGHT_PARAMETERS, uses_store=False),
    Operation("GET", "/p/{gtin}", "product_page",
      "The product page of a GTIN (HTML): producer, certifications, batches with recalled ones first", "resolve",
      {200: _answer("the page", (HTML, _STRING))}, problems=(400, 404),
      parameters=[_path("gtin", "GTIN-8, -12, -13 or -14", {"type": "string", "pattern": "^[0-9]{8,14}$"})],
      html_errors=True),
    Operation("GET", "/.well-known/gs1resolver", "gs1_resolver_description", "The GS1-Conformant resolver description",
      "resolve", {200: _json("the description", answers.ResolverDescription)}, uses_store=False),
    Operation("OPTIONS", "/.well-known/gs1resolver", "gs1_resolver_description_preflight", "CORS preflight", "resolve",
      _PREFLIGHT, uses_store=False),
    # access
    Operation("POST", "/api/v1/tokens", "create_token", "Issue a token (admin); stored as a SHA-256 hash", "access",
      {201: _json("the token, shown once", answers.Token)}, body=bodies.TokenIn, roles=ADMIN),
    Operation("DELETE", "/api/v1/tokens/{id}", "revoke_token",
      "Revoke a token (admin): it stops working at once", "access",
      {204: _answer("revoked")}, roles=ADMIN, problems=(404,),
      parameters=[_path("id", "token id", {"type": "integer", "minimum": 0})]),
    # registry
    Operation("POST", "/api/v1/producers", "create_producer", "Register a producer (admin, or regulator of the region)",
      "registry", {201: _json("the producer", answers.Producer)}, body=bodies.ProducerIn, roles=ADMIN_REGULATOR,
      problems=(409,)),
    Operation("GET", "/api/v1/producers", "list_producers", "Producers within the token's scope, by id", "registry",
      {200: _json("a page", answers.ProducerPage)}, roles=REGISTRY_READERS, problems=(404, 422),
      parameters=[_REGION_FILTER, _choice_filter("kind", PRODUCER_KIND_LABELS), _CREDIT_FILTER, _AFTER, _PAGE]),
    Operation("GET", "/api/v1/producers/{credit_code}", "get_producer", "A producer", "registry",
      {200: _json("the producer", answers.Producer)}, roles=REGISTRY_READERS, problems=(404, 422),
      parameters=[_CREDIT_CODE]),
    Operation("PATCH", "/api/v1/producers/{credit_code}", "update_producer",
      "Change a producer's name, contact, kind or region", "registry", {200: _json("the producer", answers.Producer)},
      body=catalog.ProducerPatch, roles=REGISTRY_READERS, problems=(404,), parameters=[_CREDIT_CODE]),
    Operation("DELETE", "/api/v1/producers/{credit_code}", "delete_producer",
      "Delete a producer without batches, with its products and certifications", "registry", _DELETED,
      roles=ADMIN_REGULATOR, problems=(404, 409, 422), parameters=[_CREDIT_CODE]),
    Operation("GET", "/api/v1/producers/{credit_code}/products", "list_products", "A producer's products", "registry",
      {200: _json("the products", answers.ProductList)}, roles=REGISTRY_READERS, problems=(404, 422),
      parameters=[_CREDIT_CODE]),
    Operation("POST", "/api/v1/producers/{credit_code}/products", "create_product",
      "Add a product to a producer", "registry",
      {201: _json("the product", answers.Product)}, body=bodies.ProductIn, roles=REGISTRY_READERS,
      problems=(404, 409), parameters=[_CREDIT_CODE]),
    Operation("GET", "/api/v1/products/{id}", "get_product", "A product", "registry",
      {200: _json("the product", answers.Product)}, roles=REGISTRY_READERS, problems=(404,), parameters=[_ID]),
    Operation("PATCH", "/api/v1/products/{id}", "update_product",
      "Change a product's name, category or GTIN", "registry",
      {200: _json("the product", answers.Product)}, body=catalog.ProductPatch, roles=REGISTRY_READERS,
      problems=(404, 409), parameters=[_ID]),
    Operation("DELETE", "/api/v1/products/{id}", "delete_product",
      "Delete a product without batches and certifications",
      "registry", _DELETED, roles=REGISTRY_READERS, problems=(404, 409), parameters=[_ID]),
    Operation("GET", "/api/v1/certifications", "list_certifications", "Certifications within the token's scope, by id",
      "registry", {200: _json("a page", answers.CertificationPage)}, roles=REGISTRY_READERS, problems=(404, 422),
      parameters=[_REGION_FILTER, _CREDIT_FILTER, _choice_filter("kind", CERTIFICATION_LABELS), _AFTER, _PAGE]),
    Operation("POST", "/api/v1/certifications", "create_certification",
      "Register a green food, organic or GI certification", "registry",
      {201: _json("the certification", answers.Certification)}, body=catalog.CertificationIn, roles=ADMIN_REGULATOR,
      problems=(404, 409)),
    Operation("GET", "/api/v1/certifications/{id}", "get_certification", "A certification", "registry",
      {200: _json("the certification", answers.Certification)}, roles=REGISTRY_READERS, problems=(404,),
      parameters=[_ID]),
    Operation("PATCH", "/api/v1/certifications/{id}", "update_certification",
      "Renew, correct, suspend, revoke (final) or reinstate a certification (expired is derived from valid_to)",
      "registry",
      {200: _json("the certification", answers.Certification)}, body=catalog.CertificationPatch,
      roles=ADMIN_REGULATOR, problems=(404, 409), parameters=[_ID]),
    Operation("DELETE", "/api/v1/certifications/{id}", "delete_certification", "Delete a certification", "registry",
      _DELETED, roles=ADMIN_REGULATOR, problems=(404,), parameters=[_ID]),
    Operation("POST", "/api/v1/imports/producers", "import_producers",
      "Import producers from CSV (admin, or regulator: its region)", "registry",
      {200: _json("the report", answers.ImportReport)}, body=_CSV_BODY, roles=ADMIN_REGULATOR,
      parameters=_IMPORT_PARAMETERS),
    Operation("POST", "/api/v1/imports/certifications", "import_certifications",
      "Import certifications from CSV (admin, or regulator: its region)", "registry",
      {200: _json("the report", answers.ImportReport)}, body=_CSV_BODY, roles=ADMIN_REGULATOR,
      parameters=_IMPORT_PARAMETERS),
    # hooks
    Operation("GET", "/api/v1/certifications/unlisted", "unlisted_certifications",
      "Certified products in force with no traced batch (admin, regulator)", "hooks",
      {200: _json("a page", answers.UnlistedPage)}, roles=ADMIN_REGULATOR, problems=(404, 422),
      parameters=[_REGION_QUERY, _AFTER, _limit(hooks.UNLISTED_PAGE_DEFAULT, hooks.UNLISTED_PAGE_MAX)]),
    Operation("GET", "/api/v1/certifications/precheck", "precheck_certification",
      "Whether a producer may apply for or renew a certification of a product: registered, its own, traced "
      "(admin, regulator of the producer's region, the producer)", "hooks",
      {200: _json("the answer", answers.Precheck)}, roles=REGISTRY_READERS, problems=(422,),
      parameters=[_query("credit_code", "the applicant", _STRING, required=True),
                  _query("product_id", "the product applied for", {"type": "integer", "minimum": 1},
                         required=True)]),
    Operation("GET", "/api/v1/regions/{code}/coverage", "region_coverage",
      "Registered and traced producers of a region and their products against the 80 % line, each tag's producers "
      "against its 100 % line; now, or as it stood at the end of a past day", "hooks",
      {200: _json("the coverage", answers.Coverage)}, problems=(404, 422),
      parameters=[_REGION_PATH, _query("breakdown", "add each county-level unit", {"type": "boolean"}), _AT]),
    Operation("POST", "/api/v1/designations", "create_designation",
      "Register a designation (quality-safety county, demonstration zone) with its review day (admin, regulator of "
      "the region)", "hooks", {201: _json("the designation", answers.Designation)}, body=designations.DesignationIn,
      roles=ADMIN_REGULATOR),
    Operation("GET", "/api/v1/designations", "list_designations",
      "Designations with their region's coverage at `at` (default: each one's review day) and keep or revoke "
      "(admin, regulator: its region)", "hooks", _csv_or_json("the designations", answers.DesignationReview),
      roles=ADMIN_REGULATOR, problems=(404, 422), parameters=[_REGION_FILTER, _AT]),
    Operation("GET", "/api/v1/eligibility/{credit_code}", "eligibility",
      "Whether a producer is traced, and why not (brands, fairs)", "hooks",
      {200: _json("the answer", answers.Eligibility)}, problems=(422,), parameters=[_CREDIT_CODE]),
    Operation("POST", "/api/v1/brands", "create_brand",
      "Register a regional public or enterprise brand (admin, or regulator of the region)", "hooks",
      {201: _json("the brand", answers.Brand)}, body=brands.BrandIn, roles=ADMIN_REGULATOR, problems=(404,)),
    Operation("GET", "/api/v1/brands/{id}", "get_brand",
      "A brand and its members, each with whether it is traced now (a lapsed member shows false)", "hooks",
      _csv_or_json("the brand", answers.Brand), problems=(404,), parameters=[_ID]),
    Operation("POST", "/api/v1/brands/{id}/members", "add_brand_member",
      "Add a traced producer to a brand (admin, or regulator of the brand's region); 409 `not_traced` (with "
      "`reasons`) for one not traced now, `outside_region` for a regional public brand", "hooks",
      {201: _json("the member", answers.BrandMember), 200: _json("a member already", answers.BrandMember)},
      body=brands.MemberIn, roles=ADMIN_REGULATOR, problems=(404, 409), parameters=[_ID]),
    Operation("POST", "/api/v1/fairs", "create_fair",
      "Register a fair (admin, or a regulator): national and provincial fairs admit traced products only, "
      "overseas fairs rank traced ones first", "hooks",
      {201: _json("the fair", answers.Fair)}, body=fairs.FairIn, roles=ADMIN_REGULATOR),
    Operation("POST", "/api/v1/fairs/{id}/exhibitors", "check_fair_exhibitors",
      "Check a fair's exhibitor products (admin, regulator): a JSON list of {credit_code, product_name} or CSV "
      "with those columns; each row admitted or not, with reasons", "hooks",
      _csv_or_json("a row per exhibitor product", answers.ExhibitorCheck), body=_EXHIBITOR_BODY,
      roles=ADMIN_REGULATOR, problems=(404,), parameters=[_ID]),
    Operation("GET", "/api/v1/fairs/{id}/door/{code}", "fair_door",
      "Whether the product of a trace code scanned at a fair's door is admitted (a recalled batch never is)",
      "hooks", {200: _json("the answer", answers.DoorCheck)}, problems=(400, 404, 429),
      parameters=[_ID, _CODE]),
    Operation("GET", "/api/v1/exports/batches", "export_batches",
      "Batches and events of a region and period (admin, regulator of the region)", "hooks", _EXPORT,
      roles=ADMIN_REGULATOR, problems=(404, 422), parameters=_EXPORT_PARAMETERS),
    Operation("GET", "/regions/{code}", "region_page", "The regulator's page of a region (HTML)", "hooks",
      {200: _answer("the page", (HTML, _STRING))}, problems=(404,), parameters=[_REGION_PATH], html_errors=True),
    # batches
    Operation("POST", "/api/v1/batches", "create_batch",
      "Register a batch (admin, or the producer): issues its code and long form", "batches",
      {201: _json("the codes", answers.IssuedBatch)}, body=bodies.BatchIn, roles=ADMIN_PRODUCER),
    Operation("POST", "/api/v1/batches/{trace_code}/labels", "create_labels",
      "Issue package codes (type 4) for a batch: CSV, or JSON for `Accept: application/json`; each with its URL, "
      "`/t/{code}` or (`link: digital_link`) its GS1 Digital Link URI", "batches", _LABELS,
      body=labels.LabelsIn, roles=ADMIN_PRODUCER, problems=(404, 409),
      parameters=[_path("trace_code", "the batch's production batch code or long form")]),
    Operation("POST", "/api/v1/batches/{code}/recall", "recall_batch",
      "Recall a batch (admin, or regulator of its region): no cache shows it active after", "batches",
      {200: _json("recalled", answers.Recall)}, body=recall.RecallIn, roles=ADMIN_REGULATOR, problems=(404,),
      parameters=[_BATCH_CODE]),
    Operation("POST", "/api/v1/batches/{code}/inspections", "add_inspection",
      "Add a lab result to a batch's chain (admin, regulator or lab of its region): a failed one makes gates reject "
      "the batch at once (`inspection_failed`) and shows on every document of it within a second", "batches",
      {201: _json("added", answers.AddedInspection)}, body=bodies.LabResultIn, roles=inspections.INSPECTING_ROLES,
      problems=(404,), parameters=[_BATCH_CODE]),
    Operation("GET", "/api/v1/batches/{code}/flow", "batch_flow",
      "Where a batch went (admin, regulator of its region, its producer): market entries, trades out of them, what "
      "is left", "supervision", _csv_or_json("the flow", answers.BatchFlow), roles=("admin", "regulator", "producer"),
      problems=(400, 404, 422), parameters=[_BATCH_CODE]),
    Operation("GET", "/api/v1/markets/{id}/stats", "market_stats",
      "A market's gate scans accepted and rejected by reason, per gate, and inflow by origin county, for whole days "
      "in China time (admin, regulator of the market's region)", "supervision",
      _csv_or_json("the figures", answers.MarketStats), roles=ADMIN_REGULATOR, problems=(404, 422),
      parameters=[_ID, *_PERIOD_PARAMETERS]),
    Operation("GET", "/api/v1/regions/{code}/labels", "region_labels",
      "Package codes issued per producer of a region in a period (admin, regulator of the region)", "supervision",
      _csv_or_json("the labels", answers.RegionLabels), roles=ADMIN_REGULATOR, problems=(404, 422),
      parameters=[_REGION_PATH, *_PERIOD_PARAMETERS]),
    # gate
    Operation("POST", "/api/v1/markets", "create_market", "Register a market (admin)", "gate",
      {201: _json("the market", answers.Market)}, body=gate.MarketIn, roles=ADMIN),
    Operation("POST", "/api/v1/gate/scans", "gate_scan",
      "A gate scan (gate token): accept or reject with every reason; an entry voucher", "gate",
      {200: _json("the decision", answers.GateDecision)}, body=gate.GateScanIn, roles=("gate",)),
    Operation("POST", "/api/v1/trades", "create_trade",
      "A buyer takes part of an entry (gate token of the market, or admin)", "gate",
      _TRADE, body=gate.TradeIn, roles=("admin", "gate"), problems=(409,)),
)  # fmt: skip


class _AnswerSchema(GenerateJsonSchema):
    """Schemas of answers: a member with a default is one an answer may leave out, and its default is not described
    (resolver.api.answers)."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


def _models(kind: type[BaseModel], schemas: Iterable[object]) -> list[type[BaseModel]]:
    found = {schema.__name__: schema for schema in schemas if isinstance(schema, type) and issubclass(schema, kind)}
    return list(found.values())


def _schemas(operations: Sequence[Operation]) -> dict[str, Any]:
    """The components' schemas: of every request body, and of every answer (the problem details included)."""
    requested = _models(
        BaseModel,
        [*(operation.body for operation in operations), *(
            media["schema"] for operation in operations if isinstance(operation.body, dict)
            for media in operation.body.get("content", {}).values()
        )],
    )  # fmt: skip
    answered = _models(
        answers.Answer,
        [answers.Problem, *(
            media["schema"] for operation in operations for response in operation.answers.values()
            for media in response.get("content", {}).values()
        )],
    )  # fmt: skip
    _, of_bodies = models_json_schema([(model, "validation") for model in requested], ref_template=SCHEMA_REF)
    _, of_answers = models_json_schema(
        [(model, "validation") for model in answered], ref_template=SCHEMA_REF, schema_generator=_AnswerSchema
    )
    shared = of_bodies["$defs"].keys() & of_answers["$defs"].keys()
    if shared:  # one name, two schemas: one would hide the other
        raise TypeError(f"a request body and an answer are both named {', '.join(sorted(shared))}")
    return {**of_bodies["$defs"], **of_answers["$defs"]}


def build_document(operations: Sequence[Operation] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`: by default, every route the app serves."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = operation.as_json()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tracecode",
            "version": API_VERSION,
            "summary": "农产品质量安全追溯: trace codes, resolution, market gates, the registry, the four hooks",
            "description": "Bearer tokens (`Authorization: Bearer <token>`); an operation's `security` names the roles "
            "whose tokens it accepts (a regulator within its region, a producer for itself); dates ISO 8601; every "
            "error is `application/problem+json` with a stable `code` (the HTML pages answer a browser with an HTML "
            "page).",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(operations),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def route_operations(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(path template, method) of each route, as the document spells them: `{code:path}` is `{code}`."""
    operations = set()
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = _CONVERTOR.sub(r"{\1}", route.path)
        for method in route.methods or {"GET"}:
            if method not in IMPLIED_METHODS:
                operations.add((path, method))
    return operations


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


DOCUMENT: Final = build_document()
_BODY: Final = orjson.dumps(DOCUMENT)


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the description, the same bytes every time."""
    return Response(_BODY, media_type=JSON)


ROUTES: list[BaseRoute] = [Route("/openapi.json", openapi_json, methods=["GET"])]
