"""The API described as OpenAPI 3.1, served at GET /openapi.json.

Request bodies come from the pydantic models the routes validate with (`model_json_schema` through
`models_json_schema`), so the description cannot drift from what the service accepts; every error is
described as problem details (RFC 9457, resolver.edge.problems). The document is built once, at import, and
answered as the same bytes. tests/test_openapi.py checks that it names exactly the routes the app
serves, and runs schemathesis against a real server from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from resolver.api import catalog, gate, hooks, labels, recall
from resolver.api.export import EARLIEST_EXPORT_DATE, EXPORT_FORMATS, LATEST_EXPORT_DATE, MEDIA_TYPES
from resolver.api.imports import IMPORT_MODES, MAX_IMPORT_BYTES
from resolver.categories import CERTIFICATION_LABELS, PRODUCER_KIND_LABELS
from resolver.edge import bodies
from resolver.edge.problems import PROBLEM_TYPE_BASE

API_VERSION: Final = "1.0.0"
SCHEMA_REF: Final = "#/components/schemas/{model}"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
JSON: Final = "application/json"
HTML: Final = "text/html"
# Methods Starlette adds on its own (HEAD beside GET); they answer like the method they stand for.
IMPLIED_METHODS: Final = frozenset({"HEAD"})
_CONVERTOR: Final = re.compile(r"\{(\w+):\w+\}")

BODY_MODELS: Final[Sequence[type[BaseModel]]] = (
    bodies.TokenIn,
    bodies.ProducerIn,
    bodies.BatchIn,
    bodies.ProductIn,
    catalog.ProducerPatch,
    catalog.ProductPatch,
    catalog.CertificationIn,
    catalog.CertificationPatch,
    gate.MarketIn,
    gate.GateScanIn,
    gate.TradeIn,
    recall.RecallIn,
    labels.LabelsIn,
)

# --- schemas of answers --------------------------------------------------------------------------

_STRING: Final = {"type": "string"}
_INTEGER: Final = {"type": "integer"}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
_DATE: Final = {"type": "string", "format": "date"}
_NULLABLE_DATE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_REGION_CODE: Final = {"type": "string", "pattern": "^[0-9]{6}$"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with these required and optional members; members beyond them may be added (SPEC)."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMA_REF.format(model=name)}


_ANSWER_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Problem": {
        **_object(
            {
                "type": {"type": "string", "format": "uri", "description": f"{PROBLEM_TYPE_BASE}{{code}}"},
                "title": _STRING,
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": _STRING,
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "description": "stable, machine-readable"},
            },
            {
                "field": {"type": "string", "description": "the body member or query parameter at fault"},
                "errors": {
                    "type": "array",
                    "items": _object({"field": _STRING, "message": _STRING, "type": _STRING}),
                },
                "reason": _STRING,
            },
        ),
        "description": "RFC 9457 problem details; `code` is stable, `title` and `detail` are in Chinese.",
    },
    "Health": _object(
        {
            "status": {"enum": ["ok", "degraded"]},
            "postgres": {"enum": ["ok", "down"]},
            "redis": {"enum": ["ok", "down"]},
        }
    ),
    "Token": _object(
        {
            "id": _INTEGER,
            "token": _STRING,
            "role": {"enum": ["admin", "regulator", "producer", "gate"]},
            "scope": _STRING,
        }
    ),  # fmt: skip
    "Producer": _object(
        {
            "id": _INTEGER,
            "credit_code": _STRING,
            "name": _STRING,
            "kind": {"enum": list(PRODUCER_KIND_LABELS)},
            "region_code": _REGION_CODE,
            "region_name": _STRING,
        },
        {
            "kind_label": _STRING,
            "contact": _STRING,
            "batch_count": _INTEGER,
            "last_issued_at": _NULLABLE_DATE_TIME,
            "traced": {"type": "boolean"},
        },
    ),  # fmt: skip
    "IssuedBatch": _object(
        {
            "trace_code": {"type": "string", "pattern": "^1[0-9]{19}$"},
            "long_code": _STRING,
            "url": _STRING,
            "batch_id": _INTEGER,
            "type": {"const": "production_batch"},
        },
    ),  # fmt: skip
    "CodeDocument": _object(
        {
            "code": _STRING,
            "type": {"enum": ["production_batch", "circulation_batch", "market_entry", "package"]},
            "status": {"enum": ["active", "recalled", "expired"]},
            "product": {"type": "object"},
            "producer": {"type": "object"},
            "batch": {"type": "object"},
            "chain": {"type": "array"},
            "scans": _object({"count": _INTEGER, "first_at": _NULLABLE_STRING}),
        },
        {
            "inspection": {"type": ["object", "null"]},
            "certificate": {"type": ["object", "null"]},
            "certifications": {"type": ["array", "null"]},
        },
    ),  # fmt: skip
    "Market": _object({"id": _INTEGER, "name": _STRING, "region_code": _REGION_CODE}),
    "GateDecision": _object(
        {
            "decision": {"enum": ["accept", "reject"]},
            "reasons": {"type": "array", "items": _object({"code": _STRING, "message": _STRING})},
            "voucher_code": {"type": ["string", "null"], "pattern": "^3[0-9]{19}$"},
        },
        {"replay": {"type": "boolean"}},
    ),  # fmt: skip
    "Trade": _object(
        {
            "circulation_code": {"type": "string", "pattern": "^2[0-9]{19}$"},
            "url": _STRING,
            "replay": {"type": "boolean"},
        }
    ),  # fmt: skip
    "Recall": _object(
        {
            "status": {"const": "recalled"},
            "reason": _STRING,
            "recalled_at": {"type": "string", "format": "date-time"},
            "already_recalled": {"type": "boolean"},
            "caches_invalidated": {"type": "boolean"},
        }
    ),  # fmt: skip
    "Labels": _object(
        {
            "batch": _STRING,
            "count": _INTEGER,
            "url_prefix": _STRING,
            "codes": {"type": "array", "items": {"type": "string", "pattern": "^4[0-9]{19}$"}},
        }
    ),  # fmt: skip
    "Product": _object(
        {
            "id": _INTEGER,
            "name": _STRING,
            "category": _STRING,
            "gtin": _NULLABLE_STRING,
            "producer_credit_code": _STRING,
        },
        {"category_label": _STRING, "last_issued_at": _NULLABLE_DATE_TIME},
    ),  # fmt: skip
    "Certification": _object(
        {
            "id": _INTEGER,
            "kind": {"enum": list(CERTIFICATION_LABELS)},
            "number": _STRING,
            "valid_from": _DATE,
            "valid_to": _DATE,
            "producer": {"type": "object"},
            "product": {"type": ["object", "null"]},
        },
        {"kind_label": _STRING},
    ),  # fmt: skip
    "ProducerPage": _object(
        {
            "count": _INTEGER,
            "items": {"type": "array", "items": _ref("Producer")},
            "next_after": {"type": ["integer", "null"]},
        }
    ),  # fmt: skip
    "ProductList": _object({"count": _INTEGER, "items": {"type": "array", "items": _ref("Product")}}),
    "CertificationPage": _object(
        {
            "count": _INTEGER,
            "items": {"type": "array", "items": _ref("Certification")},
            "next_after": {"type": ["integer", "null"]},
        }
    ),  # fmt: skip
    "Coverage": _object(
        {
            "region_code": _REGION_CODE,
            "region_name": _STRING,
            "level": _INTEGER,
            "registered": _INTEGER,
            "traced": _INTEGER,
            "ratio": {"type": ["number", "null"]},
            "meets_line": {"type": "boolean"},
            "line": {"type": "number"},
        },
        {"counties": {"type": "array", "items": {"type": "object"}}},
    ),  # fmt: skip
    "UnlistedPage": _object(
        {
            "region_code": _REGION_CODE,
            "region_name": _STRING,
            "count": _INTEGER,
            "items": {"type": "array", "items": {"type": "object"}},
            "next_after": {"type": ["integer", "null"]},
        }
    ),  # fmt: skip
    "Eligibility": _object(
        {
            "credit_code": _STRING,
            "registered": {"type": "boolean"},
            "traced": {"type": "boolean"},
            "reasons": {"type": "array", "items": _object({"code": _STRING, "message": _STRING})},
            "eligible": _object({"brand": {"type": "boolean"}, "fair": {"type": "boolean"}}),
        },
    ),  # fmt: skip
    "ImportReport": _object(
        {
            "kind": {"enum": ["producers", "certifications"]},
            "mode": {"enum": list(IMPORT_MODES)},
            "dry_run": {"type": "boolean"},
            "rows": _INTEGER,
            "imported": _INTEGER,
            "skipped": _INTEGER,
            "error_count": _INTEGER,
            "errors": {
                "type": "array",
                "items": _object({"line": _INTEGER, "field": _NULLABLE_STRING, "reason": _STRING, "message": _STRING}),
            },
        },
    ),  # fmt: skip
    "Linkset": _object({"linkset": {"type": "array", "items": {"type": "object"}}}),
    "ResolverDescription": _object(
        {"name": _STRING, "resolverRoot": _STRING, "supportedPrimaryKeys": {"type": "array"}}
    ),
}

# --- pieces of operations ------------------------------------------------------------------------

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
_PUBLIC_ERRORS: Final = (503,)
_WRITE_ERRORS: Final = (400, 401, 403, 413, 415, 422, 503)  # a JSON body, a token
_READ_ERRORS: Final = (401, 403, 503)  # a token, no body


def _problem_response(status: int, *, html: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}}
    if html:  # pages answer a browser with the same error as a Chinese page
        content[HTML] = {"schema": _STRING}
    response: dict[str, Any] = {"description": _ERROR_DESCRIPTIONS[status], "content": content}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {"schema": _INTEGER, "required": True}}
    return response


def _ok(description: str, schema: dict[str, Any] | None = None, *, media_type: str = JSON) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media_type: {"schema": schema}}}


def _path(name: str, description: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or _STRING, **extra}  # fmt: skip


def _query(name: str, description: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(model.__name__)}}}


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[int, dict[str, Any]],
    *,
    errors: Iterable[int] = _PUBLIC_ERRORS,
    html_errors: bool = False,
    secured: bool = False,
    parameters: Sequence[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    all_responses = {str(status): response for status, response in responses.items()}
    for status in sorted(set(errors)):
        all_responses[str(status)] = _problem_response(status, html=html_errors)
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = all_responses
    operation["security"] = [{"bearer": []}] if secured else []
    return operation


_CODE = _path("code", "a trace code: 20 digits (spaces, dashes or a full /t/ URL accepted) or the national long form")
_BATCH_CODE = _path("code", "a production batch code (type 1) or its national long form")
_CREDIT_CODE = _path("credit_code", "unified social credit code (GB 32100-2015), 18 characters")
_ID = _path("id", "record id", {"type": "integer", "minimum": 0})
_REGION_PATH = _path("code", "GB/T 2260 region code: a county, prefecture or province", _REGION_CODE)
_AFTER = _query("after", "page after this id (`next_after` of the last page)", {"type": "integer", "minimum": 0,
                                                                                 "maximum": 2**62})  # fmt: skip
# An optional filter left empty (`?region=`) means "any", as a form with an empty field sends it.
_REGION_FILTER = _query(
    "region",
    "only records of this region and those under it (empty: any)",
    {"type": "string", "pattern": "^([0-9]{6})?$"},
)
_CREDIT_FILTER = _query("credit_code", "only this producer (empty: any)", _STRING)


def _choice_filter(name: str, choices: Iterable[str]) -> dict[str, Any]:
    return _query(name, f"only this {name} (empty: any)", {"enum": [*choices, ""]})


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return _query("limit", f"page size (default {default})", {"type": "integer", "minimum": 1, "maximum": maximum})


_CODE_ERRORS: Final = (400, 404, 429, 503)
_LINK_HEADERS: Final = {"Link": {"schema": _STRING, "description": "RFC 8288 links of the batch and its linkset"}}
_GS1_PARAMETERS: Final = (
    _path("gtin", "GTIN-8, -12, -13 or -14 (AI 01)", {"type": "string", "pattern": "^[0-9]{8,14}$"}),
    _path("lot", "batch or lot number (AI 10), 1 to 20 GS1 characters, percent-encoded", {"type": "string"}),
)

_DATE_RANGE: Final = {
    "type": "string",
    "format": "date",
    "description": f"{EARLIEST_EXPORT_DATE}..{LATEST_EXPORT_DATE}",
}
_IMPORT_PARAMETERS: Final = (
    _query("mode", "all_or_nothing (default) or good_rows", {"enum": list(IMPORT_MODES)}),
    _query("dry_run", "check only, import nothing", {"type": "boolean"}),
)
_CSV_BODY: Final = {
    "required": True,
    "description": f"UTF-8 CSV with a header row, at most {MAX_IMPORT_BYTES // (1024 * 1024)} MiB",
    "content": {"text/csv": {"schema": {"type": "string"}}},
}

# --- the document --------------------------------------------------------------------------------


def _paths() -> dict[str, dict[str, Any]]:
    return {
        "/livez": {"get": _operation("livez", "Liveness: the process answers (no I/O)", "operations",
                                     {200: _ok("ok", _STRING, media_type="text/plain")}, errors=())},
        "/healthz": {"get": _operation("healthz", "Health of Postgres and Redis (`degraded` when one is away)",
                                       "operations", {200: _ok("health", _ref("Health"))}, errors=())},
        "/metrics": {"get": _operation("metrics", "Prometheus metrics, summed over the live workers", "operations",
                                       {200: _ok("Prometheus text format", _STRING, media_type="text/plain")},
                                       errors=())},
        "/openapi.json": {"get": _operation("openapi", "This description (OpenAPI 3.1)", "operations",
                                            {200: _ok("the OpenAPI document", {"type": "object"})}, errors=())},
        "/t/{code}": {"get": _operation(
            "consumer_page", "The consumer page of a code (HTML); the JSON document for `Accept: application/json`",
            "resolve",
            {200: {"description": "the page, or the document",
                   "content": {HTML: {"schema": _STRING}, JSON: {"schema": _ref("CodeDocument")}}}},
            errors=_CODE_ERRORS, html_errors=True, parameters=[_CODE],
        )},
        "/api/v1/codes/{code}": {"get": _operation(
            "code_document", "The JSON document of a code, with its chain and scan statistics", "resolve",
            {200: _ok("the document", _ref("CodeDocument"))}, errors=_CODE_ERRORS, parameters=[_CODE],
        )},
        "/01/{gtin}/10/{lot}": {
            "get": _operation(
                "digital_link", "GS1 Digital Link: 307 to a link of the batch, or its linkset", "resolve",
                {200: {"description": "the RFC 9264 linkset (`linkType=linkset`, or Accept prefers JSON)",
                       "headers": _LINK_HEADERS,
                       "content": {"application/linkset+json": {"schema": _ref("Linkset")}}},
                 307: {"description": "to the link of the asked type (default: the consumer page)",
                       "headers": {"Location": {"schema": _STRING, "required": True}, **_LINK_HEADERS}}},
                errors=(400, 404, 503), html_errors=True,
                parameters=[*_GS1_PARAMETERS,
                            _query("linkType", "`linkset`, `all`, or a GS1 link type (`gs1:pip`, ...)", _STRING)],
            ),
            "options": _operation("digital_link_preflight", "CORS preflight", "resolve",
                                  {204: _ok("allowed methods and headers")}, errors=(),
                                  parameters=[_path("gtin", "anything: a preflight is answered alike"),
                                              _path("lot", "anything: a preflight is answered alike")]),
        },
        "/.well-known/gs1resolver": {
            "get": _operation("gs1_resolver_description", "The GS1-Conformant resolver description", "resolve",
                              {200: _ok("the description", _ref("ResolverDescription"))}, errors=()),
            "options": _operation("gs1_resolver_description_preflight", "CORS preflight", "resolve",
                                  {204: _ok("allowed methods and headers")}, errors=()),
        },
        "/api/v1/tokens": {"post": _operation(
            "create_token", "Issue a token (admin); stored as a SHA-256 hash", "access",
            {201: _ok("the token, shown once", _ref("Token"))}, errors=_WRITE_ERRORS, secured=True,
            body=_json_body(bodies.TokenIn),
        )},
        "/api/v1/tokens/{id}": {"delete": _operation(
            "revoke_token", "Revoke a token (admin): it stops working at once", "access",
            {204: _ok("revoked")}, errors=(*_READ_ERRORS, 404), secured=True,
            parameters=[_path("id", "token id", {"type": "integer", "minimum": 0})],
        )},
        "/api/v1/producers": {
            "post": _operation(
                "create_producer", "Register a producer (admin, or regulator of the region)", "registry",
                {201: _ok("the producer", _ref("Producer"))}, errors=(*_WRITE_ERRORS, 409), secured=True,
                body=_json_body(bodies.ProducerIn),
            ),
            "get": _operation(
                "list_producers", "Producers within the token's scope, by id", "registry",
                {200: _ok("a page", _ref("ProducerPage"))}, errors=(*_READ_ERRORS, 404, 422), secured=True,
                parameters=[_REGION_FILTER, _choice_filter("kind", PRODUCER_KIND_LABELS),
                            _CREDIT_FILTER, _AFTER, _limit(catalog.PAGE_DEFAULT, catalog.PAGE_MAX)],
            ),
        },
        "/api/v1/producers/{credit_code}": {
            "get": _operation("get_producer", "A producer", "registry", {200: _ok("the producer", _ref("Producer"))},
                              errors=(*_READ_ERRORS, 404, 422), secured=True, parameters=[_CREDIT_CODE]),
            "patch": _operation(
                "update_producer", "Change a producer's name, contact, kind or region", "registry",
                {200: _ok("the producer", _ref("Producer"))}, errors=(*_WRITE_ERRORS, 404), secured=True,
                parameters=[_CREDIT_CODE], body=_json_body(catalog.ProducerPatch),
            ),
            "delete": _operation(
                "delete_producer", "Delete a producer without batches, with its products and certifications",
                "registry", {204: _ok("deleted")}, errors=(*_READ_ERRORS, 404, 409, 422), secured=True,
                parameters=[_CREDIT_CODE],
            ),
        },
        "/api/v1/producers/{credit_code}/products": {
            "get": _operation("list_products", "A producer's products", "registry",
                              {200: _ok("the products", _ref("ProductList"))}, errors=(*_READ_ERRORS, 404, 422),
                              secured=True, parameters=[_CREDIT_CODE]),
            "post": _operation(
                "create_product", "Add a product to a producer", "registry",
                {201: _ok("the product", _ref("Product"))}, errors=(*_WRITE_ERRORS, 404, 409), secured=True,
                parameters=[_CREDIT_CODE], body=_json_body(bodies.ProductIn),
            ),
        },
        "/api/v1/products/{id}": {
            "get": _operation("get_product", "A product", "registry", {200: _ok("the product", _ref("Product"))},
                              errors=(*_READ_ERRORS, 404), secured=True, parameters=[_ID]),
            "patch": _operation(
                "update_product", "Change a product's name, category or GTIN", "registry",
                {200: _ok("the product", _ref("Product"))}, errors=(*_WRITE_ERRORS, 404, 409), secured=True,
                parameters=[_ID], body=_json_body(catalog.ProductPatch),
            ),
            "delete": _operation("delete_product", "Delete a product without batches and certifications",
                                 "registry", {204: _ok("deleted")}, errors=(*_READ_ERRORS, 404, 409), secured=True,
                                 parameters=[_ID]),
        },
        "/api/v1/certifications": {
            "get": _operation(
                "list_certifications", "Certifications within the token's scope, by id", "registry",
                {200: _ok("a page", _ref("CertificationPage"))}, errors=(*_READ_ERRORS, 404, 422), secured=True,
                parameters=[_REGION_FILTER, _CREDIT_FILTER,
                            _choice_filter("kind", CERTIFICATION_LABELS),
                            _AFTER, _limit(catalog.PAGE_DEFAULT, catalog.PAGE_MAX)],
            ),
            "post": _operation(
                "create_certification", "Register a green food, organic or GI certification", "registry",
                {201: _ok("the certification", _ref("Certification"))}, errors=(*_WRITE_ERRORS, 404, 409),
                secured=True, body=_json_body(catalog.CertificationIn),
            ),
        },
        "/api/v1/certifications/{id}": {
            "get": _operation("get_certification", "A certification", "registry",
                              {200: _ok("the certification", _ref("Certification"))}, errors=(*_READ_ERRORS, 404),
                              secured=True, parameters=[_ID]),
            "patch": _operation(
                "update_certification", "Renew or correct a certification", "registry",
                {200: _ok("the certification", _ref("Certification"))}, errors=(*_WRITE_ERRORS, 404, 409),
                secured=True, parameters=[_ID], body=_json_body(catalog.CertificationPatch),
            ),
            "delete": _operation("delete_certification", "Delete a certification", "registry",
                                 {204: _ok("deleted")}, errors=(*_READ_ERRORS, 404), secured=True, parameters=[_ID]),
        },
        "/api/v1/certifications/unlisted": {"get": _operation(
            "unlisted_certifications", "Certified products in force with no traced batch (admin, regulator)",
            "hooks", {200: _ok("a page", _ref("UnlistedPage"))}, errors=(*_READ_ERRORS, 404, 422), secured=True,
            parameters=[_query("region", "region code", _REGION_CODE, required=True), _AFTER,
                        _limit(hooks.UNLISTED_PAGE_DEFAULT, hooks.UNLISTED_PAGE_MAX)],
        )},
        "/api/v1/regions/{code}/coverage": {"get": _operation(
            "region_coverage", "Registered and traced producers of a region against the 80 % line", "hooks",
            {200: _ok("the coverage", _ref("Coverage"))}, errors=(404, 422, 503), parameters=[
                _REGION_PATH, _query("breakdown", "add each county-level unit", {"type": "boolean"})],
        )},
        "/api/v1/eligibility/{credit_code}": {"get": _operation(
            "eligibility", "Whether a producer is traced, and why not (brands, fairs)", "hooks",
            {200: _ok("the answer", _ref("Eligibility"))}, errors=(422, 503), parameters=[_CREDIT_CODE],
        )},
        "/api/v1/imports/producers": {"post": _operation(
            "import_producers", "Import producers from CSV (admin, or regulator: its region)", "registry",
            {200: _ok("the report", _ref("ImportReport"))}, errors=_WRITE_ERRORS, secured=True,
            parameters=_IMPORT_PARAMETERS, body=_CSV_BODY,
        )},
        "/api/v1/imports/certifications": {"post": _operation(
            "import_certifications", "Import certifications from CSV (admin, or regulator: its region)", "registry",
            {200: _ok("the report", _ref("ImportReport"))}, errors=_WRITE_ERRORS, secured=True,
            parameters=_IMPORT_PARAMETERS, body=_CSV_BODY,
        )},
        "/api/v1/exports/batches": {"get": _operation(
            "export_batches", "Batches and events of a region and period (admin, regulator of the region)", "hooks",
            {200: {"description": "JSON lines in the national platform's names, or EPCIS 2.0 JSON-LD",
                   "content": {MEDIA_TYPES[f]: {"schema": _STRING} for f in EXPORT_FORMATS}}},
            errors=(*_READ_ERRORS, 404, 422), secured=True,
            parameters=[_query("region", "region code", _REGION_CODE, required=True),
                        _query("from", "first day", _DATE_RANGE, required=True),
                        _query("to", "last day", _DATE_RANGE, required=True),
                        _query("format", "national (default) or epcis", {"enum": list(EXPORT_FORMATS)})],
        )},
        "/regions/{code}": {"get": _operation(
            "region_page", "The regulator's page of a region (HTML)", "hooks",
            {200: _ok("the page", _STRING, media_type=HTML)}, errors=(404, 503), html_errors=True,
            parameters=[_REGION_PATH],
        )},
        "/api/v1/batches": {"post": _operation(
            "create_batch", "Register a batch (admin, or the producer): issues its code and long form", "batches",
            {201: _ok("the codes", _ref("IssuedBatch"))}, errors=_WRITE_ERRORS, secured=True,
            body=_json_body(bodies.BatchIn),
        )},
        "/api/v1/batches/{trace_code}/labels": {"post": _operation(
            "create_labels", "Issue package codes (type 4) for a batch: CSV, or JSON for `Accept: application/json`",
            "batches",
            {201: {"description": "the codes",
                   "content": {"text/csv": {"schema": _STRING}, JSON: {"schema": _ref("Labels")}}}},
            errors=(*_WRITE_ERRORS, 404), secured=True,
            parameters=[_path("trace_code", "the batch's production batch code or long form")],
            body=_json_body(labels.LabelsIn),
        )},
        "/api/v1/batches/{code}/recall": {"post": _operation(
            "recall_batch", "Recall a batch (admin, or regulator of its region): no cache shows it active after",
            "batches", {200: _ok("recalled", _ref("Recall"))}, errors=(*_WRITE_ERRORS, 404), secured=True,
            parameters=[_BATCH_CODE], body=_json_body(recall.RecallIn),
        )},
        "/api/v1/markets": {"post": _operation(
            "create_market", "Register a market (admin)", "gate", {201: _ok("the market", _ref("Market"))},
            errors=_WRITE_ERRORS, secured=True, body=_json_body(gate.MarketIn),
        )},
        "/api/v1/gate/scans": {"post": _operation(
            "gate_scan", "A gate scan (gate token): accept or reject with every reason; an entry voucher", "gate",
            {200: _ok("the decision", _ref("GateDecision"))}, errors=_WRITE_ERRORS, secured=True,
            body=_json_body(gate.GateScanIn),
        )},
        "/api/v1/trades": {"post": _operation(
            "create_trade", "A buyer takes part of an entry (gate token of the market, or admin)", "gate",
            {200: _ok("a replay", _ref("Trade")), 201: _ok("the circulation code", _ref("Trade"))},
            errors=(*_WRITE_ERRORS, 409), secured=True, body=_json_body(gate.TradeIn),
        )},
    }  # fmt: skip


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route the app serves."""
    _, model_schemas = models_json_schema([(model, "validation") for model in BODY_MODELS], ref_template=SCHEMA_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tracecode",
            "version": API_VERSION,
            "summary": "农产品质量安全追溯: trace codes, resolution, market gates, the registry, the four hooks",
            "description": "Bearer tokens (`Authorization: Bearer <token>`); dates ISO 8601; every error is "
            "`application/problem+json` with a stable `code` (the HTML pages answer a browser with an HTML page).",
        },
        "paths": _paths(),
        "components": {
            "schemas": {**model_schemas["$defs"], **_ANSWER_SCHEMAS},
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
