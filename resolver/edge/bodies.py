"""Request bodies: read with a size cap, decoded with orjson, validated into typed models; the one text rule."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from codegen.creditcode import is_valid_credit_code
from codegen.gtin import normalise_gtin
from resolver.categories import CATEGORIES
from resolver.edge.negotiate import JSON_MEDIA_TYPE
from resolver.edge.problems import Problem

MAX_BODY_BYTES = 64 * 1024  # 64 KiB: the largest body of the write API is a batch with its inspection items
EARLIEST_DATE = dt.date(2000, 1, 1)

M = TypeVar("M", bound=BaseModel)


# Refused in every text: control characters, format characters (bidi overrides and isolates, which can make a
# name read backwards on the consumer page, zero-width joiners, the BOM), surrogates, private use, unassigned.
_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn"))
_LINE_BREAKS = frozenset(("Zl", "Zp"))  # line and paragraph separators: refused where a text is one line


def is_clean_text(value: str, *, is_multiline: bool = False) -> bool:
    """Whether `value` is text people can read as it is: the one rule of request bodies and imports. Names, keys
    and other one-line fields take no line breaks or tabs either; multi-line texts (a recall's reason) do."""
    if value.isprintable():  # the common case, in C; False also for tabs and spaces other than " " (U+3000)
        return True
    for ch in value:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES and not (is_multiline and ch in "\n\t"):
            return False
        if category in _LINE_BREAKS and not is_multiline:
            return False
    return True


def _printable(value: str) -> str:
    if not (value.isprintable() or is_clean_text(value)):  # isprintable first: what scanners send, without a call
        raise ValueError("contains line breaks, control, format (bidi, zero-width) or unassigned characters")
    return value


def _multiline(value: str) -> str:
    if not is_clean_text(value, is_multiline=True):
        raise ValueError("contains control, format (bidi, zero-width) or unassigned characters")
    return value


def _credit_code(value: str) -> str:
    value = value.strip().upper()
    if not is_valid_credit_code(value):
        raise ValueError("not a valid unified social credit code (GB 32100-2015 check character)")
    return value


def _plausible_date(value: dt.date) -> dt.date:
    if not EARLIEST_DATE <= value <= dt.date.today() + dt.timedelta(days=1):
        raise ValueError(f"must be between {EARLIEST_DATE} and today")
    return value


def check_category(value: str) -> str:
    if value not in CATEGORIES:
        raise ValueError(f"unknown category; one of: {', '.join(CATEGORIES)}")
    return value


Printable = AfterValidator(_printable)  # one line
MultilineText = AfterValidator(_multiline)
# A category code of resolver.categories; described as the enum it is (the validator gives the message).
Category = Annotated[str, AfterValidator(check_category), Field(json_schema_extra={"enum": list(CATEGORIES)})]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Printable]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), Printable]
Unit = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16), Printable]
OptionalText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), Printable]
# A contact may span lines (a phone number under a name, an address): no bidi or zero-width characters either.
ContactText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), MultilineText]
CreditCode = Annotated[str, StringConstraints(min_length=18, max_length=18), AfterValidator(_credit_code)]
RegionCode = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{5}$")]
PastDate = Annotated[dt.date, AfterValidator(_plausible_date)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenIn(Body):
    role: Literal["admin", "regulator", "producer", "gate", "lab"]
    scope: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64), Printable] = ""


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("a tag is given twice")
    return values


# leading_enterprise (龙头企业), state_farm (国营牧场): resolver.categories.PRODUCER_TAG_LABELS
ProducerTag = Literal["leading_enterprise", "state_farm"]
ProducerTags = Annotated[list[ProducerTag], Field(max_length=2), AfterValidator(_distinct)]


class ProducerIn(Body):
    credit_code: CreditCode
    name: Name
    kind: Literal["enterprise", "cooperative", "family_farm", "individual"]
    region_code: RegionCode
    contact: ContactText = ""
    tags: ProducerTags = []


class ProductIn(Body):
    name: Name
    category: Category
    gtin: Annotated[str, AfterValidator(normalise_gtin)] | None = None


class InspectionItem(Body):
    name: ShortText
    value: OptionalText = ""
    limit: OptionalText = ""
    result: Literal["pass", "fail"] | None = None


class InspectionIn(Body):
    result: Literal["pass", "fail"]
    method: OptionalText = ""
    agency: OptionalText = ""
    items: Annotated[list[InspectionItem | ShortText], Field(max_length=100)] = []
    inspected_on: PastDate


class LabResultIn(InspectionIn):
    """An inspection result added after registration: the fields of registration's, with the lab named and the
    report's number."""

    agency: Name
    report_no: ShortText | None = None


class CertificateIn(Body):
    kind: Literal["承诺达标合格证"] = "承诺达标合格证"
    basis: Literal["self_test", "commissioned_test", "quality_control"]
    issued_on: PastDate


class BatchIn(Body):
    producer_credit_code: CreditCode
    product: ProductIn
    lot: ShortText
    quantity: Annotated[Decimal, Field(gt=0, le=Decimal("1e12"), max_digits=18, decimal_places=3)]
    unit: Unit
    produced_on: PastDate
    expires_on: dt.date | None = None
    origin: OptionalText = ""
    inspection: InspectionIn | None = None
    certificate: CertificateIn | None = None

    @model_validator(mode="after")
    def _expiry_after_production(self) -> BatchIn:
        if self.expires_on is not None and self.expires_on < self.produced_on:
            raise ValueError("expires_on is before produced_on")
        return self


async def read_json(request: Request, model: type[M]) -> M:
    """The request body as `model`; problem details 415, 413, 400 or 422 otherwise."""
    headers = request.headers
    return await receive_json(request.receive, headers.get("content-type"), headers.get("content-length"), model)


async def receive_json(
    receive: Receive, content_type: str | None, content_length: bytes | str | None, model: type[M]
) -> M:
    """read_json for a raw ASGI route, given the first Content-Type and Content-Length header values."""
    if media_type_of(content_type)[0] != JSON_MEDIA_TYPE:
        raise Problem(415, "unsupported_media_type", "不支持的内容类型", "请求体须为 application/json")
    body = await read_capped(receive, content_length, max_bytes=MAX_BODY_BYTES, too_large=_too_large)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "malformed_json", "JSON 格式错误", f"请求体不是有效的 UTF-8 JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(part) for part in err["loc"]), "message": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        detail = "; ".join(f"{e['field'] or '(body)'}: {e['message']}" for e in errors)
        raise Problem(422, "invalid_input", "输入无效", detail, errors=errors) from None


def media_type_of(content_type: str | None) -> tuple[str, str]:
    """(media type in lower case, parameters) of a Content-Type header value; ("", "") without one."""
    media_type, _, parameters = (content_type or "").partition(";")
    return media_type.strip().lower(), parameters


async def read_capped(
    receive: Receive, content_length: bytes | str | None, *, max_bytes: int, too_large: Callable[[], Problem]
) -> bytes:
    """The request body from `receive`; `too_large()` is raised as soon as the declared length (the Content-Length
    value) or the bytes that arrive exceed `max_bytes`. ClientDisconnect if the client goes away first."""
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise too_large()
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        if len(body) + len(chunk) > max_bytes:
            raise too_large()
        is_last = not message.get("more_body", False)
        if is_last and not body:
            return chunk  # the whole body in one message, as small ones come: no copy
        body += chunk
        if is_last:
            return bytes(body)


def _too_large() -> Problem:
    return Problem(413, "payload_too_large", "请求体过大", f"请求体不得超过 {MAX_BODY_BYTES} 字节")
