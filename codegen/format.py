"""The printed 20-digit trace code ``T RRRRRR NNNNNNNNNNN CC``: compose, check, parse and print it.

``T`` is the code type (1..4), ``RRRRRR`` the GB/T 2260 county code, ``NNNNNNNNNNN`` the permuted
serial (see ``codegen.permute``) and ``CC`` two ISO 7064 MOD 97-10 check digits over the first 18, so
that ``int(code) % 97 == 1``. Because 97 is prime and larger than any single-digit difference, the check
catches every single-digit substitution and every swap of two adjacent digits.
"""

from __future__ import annotations

import unicodedata
from enum import IntEnum
from typing import Final, Literal
from urllib.parse import unquote

CODE_LENGTH: Final = 20
BODY_LENGTH: Final = 18
REGION_LENGTH: Final = 6
SERIAL_LENGTH: Final = 11
SERIAL_LIMIT: Final = 10**SERIAL_LENGTH  # serials are 0 .. SERIAL_LIMIT - 1
MAX_INPUT_CHARS: Final = 200  # longer input is rejected before any normalisation work

CHECK_MODULUS: Final = 97  # ISO 7064 MOD 97-10: a valid code satisfies int(code) % 97 == 1
CHECK_BASE: Final = 98  # check digits = 98 - (body * 100) % 97
_REGION_SLICE: Final = slice(1, 1 + REGION_LENGTH)
_SERIAL_SLICE: Final = slice(1 + REGION_LENGTH, BODY_LENGTH)
_TYPE_DIGITS: Final = frozenset("1234")
_TYPE_VALUES: Final = frozenset(range(1, 5))
_URL_SCHEMES: Final = frozenset({"http", "https"})
_URL_CODE_SEGMENT: Final = "t"  # compared case-insensitively: QR alphanumeric mode upper-cases URLs

# Removed between digits. NFKC has already folded full-width forms and most spaces (U+00A0, U+3000)
# to their ASCII counterparts; the dashes below survive NFKC and are removed explicitly.
_SEPARATORS: Final = " \t\r\n\v\f-\u2010\u2012\u2013\u2014\u2015\u2212"
_DELETE_SEPARATORS: Final = str.maketrans("", "", _SEPARATORS)

Reason = Literal["empty", "too_long", "bad_url", "bad_character", "bad_length", "bad_type", "bad_check_digits"]

_MESSAGES: Final[dict[Reason, str]] = {
    "empty": "未输入追溯码",
    "too_long": "输入内容过长，不是追溯码",
    "bad_url": "链接不是追溯码链接（应为 http(s)://域名/t/追溯码）",
    "bad_character": "追溯码只能由数字组成",
    "bad_length": "追溯码应为20位数字",
    "bad_type": "追溯码首位（码类型）应为1至4",
    "bad_check_digits": "追溯码校验位不符，请核对后重新输入",
}


class CodeType(IntEnum):
    """The first digit of a code: what the code stands for."""

    PRODUCTION_BATCH = 1
    CIRCULATION_BATCH = 2
    MARKET_ENTRY = 3
    PACKAGE = 4

    @property
    def api_name(self) -> str:
        """The name used in the JSON API, e.g. ``"production_batch"``."""
        return _API_NAMES[self]

    @property
    def label(self) -> str:
        """The Chinese name shown to people, e.g. ``"生产批次码"``."""
        return _LABELS[self]

    @classmethod
    def from_api_name(cls, name: str) -> CodeType:
        """The type whose ``api_name`` is ``name``; ``ValueError`` if there is none."""
        for member, api_name in _API_NAMES.items():
            if api_name == name:
                return member
        raise ValueError(f"unknown code type name: {name!r}")


_API_NAMES: Final[dict[CodeType, str]] = {
    CodeType.PRODUCTION_BATCH: "production_batch",
    CodeType.CIRCULATION_BATCH: "circulation_batch",
    CodeType.MARKET_ENTRY: "market_entry",
    CodeType.PACKAGE: "package",
}
_LABELS: Final[dict[CodeType, str]] = {
    CodeType.PRODUCTION_BATCH: "生产批次码",
    CodeType.CIRCULATION_BATCH: "流通批次码",
    CodeType.MARKET_ENTRY: "入市追溯凭证",
    CodeType.PACKAGE: "产品追溯码",
}


class MalformedCode(ValueError):
    """A text that is not a valid trace code; ``reason`` is stable for machines, ``message`` is for people."""

    def __init__(self, reason: Reason) -> None:
        self.reason: Reason = reason
        self.message: str = _MESSAGES[reason]
        super().__init__(f"{reason}: {self.message}")


def _is_ascii_digits(text: str, length: int) -> bool:
    return len(text) == length and text.isascii() and text.isdigit()


def check_digits(body18: str) -> str:
    """The two MOD 97-10 check digits for an 18-digit body, zero-padded (always ``"02"`` .. ``"98"``)."""
    if not _is_ascii_digits(body18, BODY_LENGTH):
        raise ValueError(f"the body must be {BODY_LENGTH} ASCII digits, got {body18!r}")
    return f"{CHECK_BASE - int(body18) * 100 % CHECK_MODULUS:02d}"


def is_valid(code20: str) -> bool:
    """Whether ``code20`` is a canonical code: 20 ASCII digits, type 1..4, check digits right."""
    return _is_ascii_digits(code20, CODE_LENGTH) and code20[0] in _TYPE_DIGITS and int(code20) % CHECK_MODULUS == 1


def compose(code_type: int, region: str, serial: int) -> str:
    """The canonical code for a type, a 6-digit region code and an 11-digit (permuted) serial."""
    if code_type not in _TYPE_VALUES:
        raise ValueError(f"code type must be 1..4, got {code_type!r}")
    if not _is_ascii_digits(region, REGION_LENGTH):
        raise ValueError(f"region must be {REGION_LENGTH} ASCII digits, got {region!r}")
    if not 0 <= serial < SERIAL_LIMIT:
        raise ValueError(f"serial must be in [0, 10**{SERIAL_LENGTH}), got {serial!r}")
    body = f"{code_type}{region}{serial:0{SERIAL_LENGTH}d}"
    return body + check_digits(body)


def parse(text: str) -> str:
    """The canonical 20-digit code in ``text``; raises ``MalformedCode`` with the first problem found.

    Accepts the bare code, the code with spaces or dashes anywhere between digits, full-width digits
    (NFKC), and a URL ``http(s)://host[/prefix]/t/{code}`` with an optional trailing slash, query and
    fragment. Clean 20-digit input takes a fast path that does no normalisation.
    """
    if len(text) == CODE_LENGTH and text.isascii() and text.isdigit():
        return _check(text)
    return _parse_slow(text)


def _parse_slow(text: str) -> str:
    if len(text) > MAX_INPUT_CHARS:
        raise MalformedCode("too_long")
    cleaned = unicodedata.normalize("NFKC", text).strip()
    if "://" in cleaned:
        cleaned = _code_in_url(cleaned)
    cleaned = cleaned.translate(_DELETE_SEPARATORS)
    if not cleaned:
        raise MalformedCode("empty")
    if not (cleaned.isascii() and cleaned.isdigit()):
        raise MalformedCode("bad_character")
    if len(cleaned) != CODE_LENGTH:
        raise MalformedCode("bad_length")
    return _check(cleaned)


def _check(code: str) -> str:
    """``code`` is 20 ASCII digits: check the type digit and the check digits."""
    if code[0] not in _TYPE_DIGITS:
        raise MalformedCode("bad_type")
    if int(code) % CHECK_MODULUS != 1:
        raise MalformedCode("bad_check_digits")
    return str(code)  # a plain str even if a subclass came in


def _code_in_url(url: str) -> str:
    """The percent-decoded, NFKC-normalised last path segment of ``http(s)://host/.../t/{code}``."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in _URL_SCHEMES:
        raise MalformedCode("bad_url")
    rest = rest.partition("#")[0].partition("?")[0]
    host, _, path = rest.partition("/")
    segments = path.removesuffix("/").split("/")
    if not host or len(segments) < 2 or segments[-2].lower() != _URL_CODE_SEGMENT:
        raise MalformedCode("bad_url")
    return unicodedata.normalize("NFKC", unquote(segments[-1]))


def group(code20: str) -> str:
    """The code in groups for printing and reading aloud: ``"T RRRRRR NNN NNNN NNNN CC"``.

    Type, region and check digits keep their own groups, so the county can be recognised at a glance;
    the 11-digit serial is split 3-4-4 like a Chinese mobile number, the 11-digit grouping people at a
    gate already read and type without thinking. ``parse`` accepts the grouped form back.
    """
    if not _is_ascii_digits(code20, CODE_LENGTH):
        raise ValueError(f"a code is {CODE_LENGTH} ASCII digits, got {code20!r}")
    c = code20
    return f"{c[0]} {c[1:7]} {c[7:10]} {c[10:14]} {c[14:18]} {c[18:20]}"


def type_of(code: str) -> CodeType:
    """The type of a canonical code (as returned by ``parse``)."""
    return CodeType(int(code[0]))


def region_of(code: str) -> str:
    """The 6-digit region code of a canonical code."""
    return code[_REGION_SLICE]


def serial_of(code: str) -> int:
    """The 11-digit permuted serial of a canonical code, as an integer."""
    return int(code[_SERIAL_SLICE])
