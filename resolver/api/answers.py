"""The answers of the API as pydantic models: what each route sends back, member by member.

The routes build their answers as dicts (or, on the scan path and the gate scan, as bytes) for speed; these models
describe them. resolver.api.openapi turns them into the response schemas of /openapi.json, and
tests/test_openapi.py walks the API with real requests and validates every JSON answer against the document, with
no member left undescribed, so the description cannot drift from what the service answers.

A member with a default is one an answer may leave out; the default itself is never described. Members beyond
these may be added (SPEC "API contract"), so the schemas leave `additionalProperties` open.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from resolver.api.gate import REASON_MESSAGES
from resolver.api.imports import IMPORT_MODES
from resolver.categories import CERTIFICATION_LABELS, PRODUCER_KIND_LABELS, PRODUCER_TAG_LABELS
from resolver.edge.problems import PROBLEM_TYPE_BASE


def _absent(description: str | None = None) -> Any:
    """The default of a member an answer may leave out (never sent as null)."""
    return Field(default=None, description=description)


def _one_of(choices: Iterable[str]) -> Any:
    """A string that is one of `choices` (a table of the code, kept there), described as the enum it is."""
    return Field(json_schema_extra={"enum": list(choices)})


RegionCode = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
ProducerKind = Annotated[str, _one_of(PRODUCER_KIND_LABELS)]
ProducerTag = Annotated[str, _one_of(PRODUCER_TAG_LABELS)]
CertificationKind = Annotated[str, _one_of(CERTIFICATION_LABELS)]
Role = Literal["admin", "regulator", "producer", "gate", "lab"]
CodeTypeName = Literal["production_batch", "circulation_batch", "market_entry", "package"]


class Answer(BaseModel):
    """An answer, or a member of one: described, never built by the routes."""

    model_config = ConfigDict(frozen=True)


# --- errors and operations -----------------------------------------------------------------------


class FieldError(Answer):
    field: str
    message: str
    type: str


class Problem(Answer):
    """RFC 9457 problem details; `code` is stable, `title` and `detail` are in Chinese."""

    type: str = Field(json_schema_extra={"format": "uri", "description": f"{PROBLEM_TYPE_BASE}{{code}}"})
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="stable, machine-readable")
    field: str = _absent("the body member or query parameter at fault")
    errors: list[FieldError] = _absent()
    reason: str = _absent()
    reasons: list[Reason] = _absent("why not, each {code, message} (409 not_traced: why the producer is not traced)")


class Health(Answer):
    status: Literal["ok", "degraded"]
    postgres: Literal["ok", "down"]
    redis: Literal["ok", "down"]


class Token(Answer):
    id: int
    token: str
    role: Role
    scope: str


# --- the registry ----------------------------------------------------------------------------------


class Producer(Answer):
    id: int
    credit_code: str
    name: str
    kind: ProducerKind
    region_code: RegionCode
    region_name: str
    contact: str
    tags: list[ProducerTag]
    created_at: dt.datetime
    # Not in the answer of POST /api/v1/producers:
    kind_label: str = _absent()
    batch_count: int = _absent()
    last_issued_at: dt.datetime | None = _absent()
    traced: bool = _absent()


class ProducerPage(Answer):
    count: int
    items: list[Producer]
    next_after: int | None


class Product(Answer):
    id: int
    name: str
    category: str
    category_label: str
    gtin: str | None
    producer_credit_code: str
    last_issued_at: dt.datetime | None
    created_at: dt.datetime


class ProductList(Answer):
    count: int
    items: list[Product]


class CertifiedProducer(Answer):
    credit_code: str
    name: str
    region_code: RegionCode


class CertifiedProduct(Answer):
    id: int
    name: str
    category: str


class Certification(Answer):
    id: int
    kind: CertificationKind
    kind_label: str
    number: str
    valid_from: dt.date
    valid_to: dt.date
    status: Literal["valid", "suspended", "revoked", "expired"]
    status_label: str
    status_reason: str | None
    status_changed_at: dt.datetime | None
    producer: CertifiedProducer
    product: CertifiedProduct | None
    created_at: dt.datetime


class CertificationPage(Answer):
    count: int
    items: list[Certification]
    next_after: int | None


class ImportRowError(Answer):
    line: int
    field: str | None
    reason: str
    message: str
    ref_line: int = _absent()


class ImportReport(Answer):
    kind: Literal["producers", "certifications"]
    mode: Annotated[str, _one_of(IMPORT_MODES)]
    dry_run: bool
    rows: int
    imported: int
    skipped: int
    error_count: int
    errors: list[ImportRowError]
    errors_truncated: bool
    skipped_lines: list[int]
    elapsed_ms: float
    products_created: int = _absent()  # certifications only


# --- batches, labels, recalls ----------------------------------------------------------------------


class IssuedBatch(Answer):
    trace_code: str = Field(pattern=r"^1[0-9]{19}$")
    long_code: str
    url: str
    batch_id: int
    type: Literal["production_batch"]


class Labels(Answer):
    batch: str
    count: int
    link: Literal["trace", "digital_link"]
    url_prefix: str = Field(description="each code's URL is this prefix and the code")
    codes: list[Annotated[str, Field(pattern=r"^4[0-9]{19}$")]]


class MarketHolding(Answer):
    market_id: int
    name: str
    quantity_left: float = Field(description="entered and not yet traded out")
    unit: str


class Recall(Answer):
    status: Literal["recalled"]
    reason: str
    recalled_at: dt.datetime
    already_recalled: bool
    caches_invalidated: bool
    markets_holding: list[MarketHolding] = Field(description="the markets that still hold some of the batch")


# --- supervision: where a batch went, a market's figures, labels issued ----------------------------


class FlowTrade(Answer):
    circulation_code: str = Field(pattern=r"^2[0-9]{19}$")
    quantity: float
    unit: str
    buyer: str
    traded_at: dt.datetime


class FlowEntry(Answer):
    voucher_code: str = Field(pattern=r"^3[0-9]{19}$")
    market_id: int
    market: str
    market_region_code: RegionCode
    gate: str
    scanned_code: str
    via_circulation_code: str | None = Field(description="the circulation code scanned, when a trade re-entered")
    quantity: float
    unit: str
    scanned_at: dt.datetime
    traded: float
    left: float
    trades: list[FlowTrade]


class FlowBatch(Answer):
    trace_code: str
    quantity: float
    unit: str


class FlowTotal(Answer):
    entered: float = Field(description="entered markets from the batch's own codes (re-entries not counted twice)")
    traded: float
    left: float = Field(description="in markets, not yet traded out, over every entry")
    not_entered: float = Field(description="of the batch's quantity, never admitted by a gate")


class BatchFlow(Answer):
    batch: FlowBatch
    entries: list[FlowEntry]
    total: FlowTotal


class RejectedFor(Answer):
    reason: Annotated[str, _one_of(REASON_MESSAGES)]
    message: str
    scans: int


class GateFigures(Answer):
    gate: str
    scans: int
    accepted: int
    rejected: int
    rejected_by_reason: list[RejectedFor]


class Inflow(Answer):
    region_code: RegionCode = Field(description="the origin county: the region of the batch's producer")
    region_name: str
    unit: str
    quantity: float
    entries: int


class MarketStats(Answer):
    market_id: int
    market: str
    region_code: RegionCode
    from_: dt.date = Field(alias="from")
    to: dt.date
    scans: int
    accepted: int
    rejected: int
    rejected_by_reason: list[RejectedFor] = Field(description="a scan rejected for two reasons counts under each")
    gates: list[GateFigures]
    inflow: list[Inflow]


class ProducerLabels(Answer):
    credit_code: str
    name: str
    region_code: RegionCode
    labels: int = Field(description="package codes issued in the period")
    requests: int
    batches: int


class RegionLabels(Answer):
    region_code: RegionCode
    region_name: str
    from_: dt.date = Field(alias="from")
    to: dt.date
    labels: int
    producers: list[ProducerLabels]


# --- markets and gates -----------------------------------------------------------------------------


class Market(Answer):
    id: int
    name: str
    region_code: RegionCode
    admitted_categories: list[str] | None


class GateReason(Answer):
    code: Annotated[str, _one_of(REASON_MESSAGES)]
    message: str


class GateDecision(Answer):
    decision: Literal["accept", "reject"]
    reasons: list[GateReason]
    voucher_code: Annotated[str, Field(pattern=r"^3[0-9]{19}$")] | None
    replay: bool = _absent()  # not in the answer to a malformed code, which records nothing


class Trade(Answer):
    circulation_code: str = Field(pattern=r"^2[0-9]{19}$")
    url: str
    replay: bool


# --- the resolved document -------------------------------------------------------------------------


class DocumentProduct(Answer):
    name: str
    category: str
    category_label: str
    gtin: str | None


class DocumentRegion(Answer):
    code: RegionCode
    county: str
    prefecture: str | None
    province: str


class DocumentProducer(Answer):
    name: str
    credit_code: str
    kind: ProducerKind
    contact: str
    region: DocumentRegion


class DocumentBatch(Answer):
    trace_code: str
    long_code: str
    lot: str
    quantity: float
    unit: str
    produced_on: dt.date
    expires_on: dt.date | None
    origin: str
    registered_at: dt.datetime


class InspectedItem(Answer):
    name: str
    value: str
    limit: str
    result: Literal["pass", "fail"] | None


class Inspection(Answer):
    result: Literal["pass", "fail"]
    method: str
    agency: str
    items: list[InspectedItem | str]
    inspected_on: dt.date
    report_no: str = _absent("the report's number, of a result added after registration")


class AddedInspection(Answer):
    trace_code: str = Field(pattern=r"^1[0-9]{19}$")
    inspection: Inspection = Field(description="the result as recorded")
    is_in_force: bool = Field(description="whether it is now the batch's result (a failed or later one outranks it)")
    result_in_force: Literal["pass", "fail"] = Field(description="the batch's result now, as gates and documents go")
    caches_invalidated: bool


class Certificate(Answer):
    kind: str
    basis: Literal["self_test", "commissioned_test", "quality_control"]
    issued_on: dt.date


class DocumentCertification(Answer):
    kind: CertificationKind
    number: str
    valid_from: dt.date
    valid_until: dt.date


class ChainEvent(Answer):
    """One event of the batch (and of the branch that reached the code's holder); its kind adds its own members."""

    model_config = ConfigDict(extra="allow")

    kind: str
    at: dt.datetime
    biz_step: str
    disposition: str | None


class DocumentRecall(Answer):
    reason: str
    at: dt.datetime


class Scans(Answer):
    count: int
    first_at: dt.datetime | None
    places_recent: int
    warning: bool


class CodeDocument(Answer):
    code: str
    type: CodeTypeName
    url: str
    status: Literal["active", "recalled", "expired"]
    product: DocumentProduct
    producer: DocumentProducer
    batch: DocumentBatch
    inspection: Inspection | None
    certificate: Certificate | None
    certifications: list[DocumentCertification]
    chain: list[ChainEvent]
    recall: DocumentRecall | None
    scans: Scans


# --- GS1 Digital Link -----------------------------------------------------------------------------


class LinkTarget(Answer):
    href: str
    title: str
    type: str = _absent()
    hreflang: list[str] = _absent()


class LinkContext(Answer):
    """One link context of RFC 9264: its anchor, then one member per link relation type (a GS1 vocabulary URI)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, list[LinkTarget]]

    anchor: str
    itemDescription: str  # GS1's name


class Linkset(Answer):
    linkset: list[LinkContext]


class LinkTypeNamespace(Answer):
    namespace: str
    prefix: str


class ResolverDescription(Answer):
    name: str
    resolverRoot: str  # GS1's names
    supportedPrimaryKeys: list[str]
    supportedLinkType: list[LinkTypeNamespace]
    linkTypeDefaultCanBeLinkset: bool
    jsonLdContextLocation: str


# --- the four hooks: exports ---------------------------------------------------------------------


class EpcisBody(Answer):
    eventList: list[dict[str, Any]]  # GS1's name; EPCIS 2.0 events, as the standard describes them


class EpcisDocument(Answer):
    """The EPCIS 2.0 export (`format=epcis`); the national format is JSON lines, one object a line."""

    context: list[Any] = Field(alias="@context")
    type: Literal["EPCISDocument"]
    schemaVersion: Literal["2.0"]  # GS1's names
    creationDate: dt.datetime
    epcisBody: EpcisBody


# --- the four hooks: coverage, unlisted certifications, eligibility ---------------------------------


class Reason(Answer):
    code: str
    message: str


class Figures(BaseModel):
    """Registered and traced producers and their products; meets_line: both ratios at the line. The members of the
    answers below, not an answer itself."""

    registered: int
    traced: int
    ratio: float | None
    products_registered: int
    products_traced: int
    product_ratio: float | None
    meets_line: bool


class TagFigures(Answer, Figures):
    """The producers of a tag (any kind) against their own line, 100 % (met when none are tagged)."""

    label: str
    line: float


class TagCoverage(Answer):
    leading_enterprise: TagFigures
    state_farm: TagFigures


class CountyCoverage(Answer, Figures):
    region_code: RegionCode
    region_name: str
    level: int
    direct: bool
    tags: TagCoverage


class Coverage(Answer, Figures):
    """The enterprises and cooperatives of a region and their products against the 80 % line."""

    region_code: RegionCode
    region_name: str
    level: int
    line: float
    counted_kinds: list[ProducerKind]
    traced_window_months: int
    tags: TagCoverage
    at: dt.date | None = Field(description="the day asked (?at=), or null: now")
    as_of: dt.datetime
    counties: list[CountyCoverage] = _absent()  # with ?breakdown=1


class Designation(Answer):
    id: int
    region_code: RegionCode
    region_name: str
    kind: Literal["quality_safety_county", "demonstration_zone", "other"]
    kind_label: str
    name: str
    designated_on: dt.date
    review_on: dt.date
    created_at: dt.datetime


class ReviewedDesignation(Designation):
    at: dt.date = Field(description="the day the coverage stood at: ?at=, else the review day (today if later)")
    coverage: Coverage
    meets_line: bool
    verdict: Literal["keep", "revoke"]


class DesignationReview(Answer):
    at: dt.date | None = Field(description="?at=, or null: each designation at its own review day")
    count: int
    items: list[ReviewedDesignation]


class UnlistedProducer(Answer):
    credit_code: str
    name: str
    region_code: RegionCode
    region_name: str


class UnlistedProduct(Answer):
    id: int
    name: str
    category: str
    category_label: str


class UnlistedCertification(Answer):
    id: int
    kind: CertificationKind
    kind_label: str
    number: str
    valid_from: dt.date
    valid_to: dt.date
    producer: UnlistedProducer
    product: UnlistedProduct | None
    reason: Literal["never_issued", "lapsed"]
    last_issued_at: dt.datetime | None


class UnlistedPage(Answer):
    region_code: RegionCode
    region_name: str
    traced_window_months: int
    as_of: dt.datetime
    count: int
    items: list[UnlistedCertification]
    next_after: int | None


class Precheck(Answer):
    credit_code: str
    product_id: int
    eligible: bool
    reasons: list[Reason]
    product_name: str | None  # the producer's own product only
    last_issued_at: dt.datetime | None
    traced_window_months: int
    as_of: dt.datetime


class Eligible(Answer):
    brand: bool
    fair: bool


class EligibleProducer(Answer):
    name: str
    kind: ProducerKind
    region_code: RegionCode
    region_name: str


class EligibleProduct(Answer):
    name: str
    category: str
    last_issued_at: dt.datetime | None
    traced: bool


class EligibleCertification(Answer):
    kind: CertificationKind
    number: str
    valid_from: dt.date
    valid_to: dt.date
    product_name: str | None


class Eligibility(Answer):
    credit_code: str
    registered: bool
    traced: bool
    reasons: list[Reason]
    last_issued_at: dt.datetime | None
    traced_window_months: int
    as_of: dt.datetime
    eligible: Eligible
    # Of a registered producer only:
    producer: EligibleProducer = _absent()
    products: list[EligibleProduct] = _absent()
    certifications: list[EligibleCertification] = _absent()


# --- brands and fairs ------------------------------------------------------------------------------


class BrandMember(Answer):
    credit_code: str
    name: str
    kind: ProducerKind
    region_code: RegionCode
    traced: bool = Field(description="codes issued within the traced window now (a lapsed member shows false)")
    reasons: list[Reason] = Field(description="why the member is not traced now; empty when it is")
    last_issued_at: dt.datetime | None
    added_at: dt.datetime


class Brand(Answer):
    id: int
    name: str
    kind: Literal["regional_public", "enterprise"]
    kind_label: str
    region_code: RegionCode
    region_name: str
    created_at: dt.datetime
    # GET /api/v1/brands/{id} only:
    traced_window_months: int = _absent()
    as_of: dt.datetime = _absent()
    members_traced: int = _absent()
    members: list[BrandMember] = _absent()


class Fair(Answer):
    id: int
    name: str
    kind: Literal["national", "overseas", "provincial"]
    kind_label: str
    rule: Literal["traced_only", "traced_first"] = Field(
        description="traced_only: only traced products are admitted; traced_first: all, traced ones ranked first"
    )
    starts_on: dt.date
    ends_on: dt.date
    created_at: dt.datetime


class Exhibitor(Answer):
    rank: int = Field(description="the row's place in the answer: traced products first at an overseas fair")
    line: int = Field(description="the CSV line (header: 1), or the list's position from 1")
    credit_code: str
    product_name: str
    producer_name: str | None
    admitted: bool
    traced: bool
    last_issued_at: dt.datetime | None = Field(description="the product's latest batch")
    reasons: list[Reason]


class ExhibitorCheck(Answer):
    fair: Fair
    traced_window_months: int
    rows: int
    admitted: int
    refused: int
    items: list[Exhibitor]


class DoorCheck(Answer):
    fair_id: int
    kind: Literal["national", "overseas", "provincial"]
    code: str
    admitted: bool
    traced: bool
    reasons: list[Reason]
    batch_code: str
    credit_code: str
    producer_name: str
    product_name: str
