"""GS1 Digital Link URI paths: /01/{gtin}[/10/{lot}][/21/{serial}] (GS1 Digital Link standard 1.x, URI syntax).

The GTIN is written as its 14 digits; a lot (AI 10) and a serial (AI 21) are 1 to 20 characters of GS1's
encodable character set 82, written with every character outside RFC 3986's unreserved set percent-encoded
(of set 82 these are !"%&'()*+,/:;<=>?), as the standard asks. A package label's URI carries the batch's GTIN,
the batch's lot and the package code as its serial.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from codegen.gtin import normalise_gtin

# GS1 General Specifications, figure 7.11-1: the characters of AI 10 and AI 21.
CSET82: Final = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
LOT_MAX_LENGTH: Final = 20  # AI 10
SERIAL_MAX_LENGTH: Final = 20  # AI 21


def is_cset82(value: str, max_length: int) -> bool:
    """Whether `value` is 1 to `max_length` characters of set 82."""
    return 0 < len(value) <= max_length and CSET82.issuperset(value)


def digital_link_path(gtin: str, lot: str | None = None, serial: str | None = None) -> str:
    """The path of the Digital Link URI of `gtin` (any GTIN length), qualified by `lot` and `serial` when given;
    ValueError (InvalidGtin for the GTIN) when one of them is not what its AI allows."""
    path = f"/01/{normalise_gtin(gtin)}"
    for ai, value, max_length in (("10", lot, LOT_MAX_LENGTH), ("21", serial, SERIAL_MAX_LENGTH)):
        if value is None:
            continue
        if not is_cset82(value, max_length):
            raise ValueError(f"AI {ai} takes 1 to {max_length} characters of GS1 set 82, got {value!r}")
        path += f"/{ai}/{quote(value, safe='')}"
    return path
