"""GTIN, the GS1 Global Trade Item Number: 8, 12, 13 or 14 digits ending in a mod-10 check digit.

GTIN-8, -12 (UPC-A) and -13 (EAN-13) are the same number as the GTIN-14 they become when padded on the
left with zeros, so a GTIN is stored and compared as 14 digits. The check digit weighs the digits 3, 1,
3, 1, ... from the right (the check digit's left neighbour weighs 3) and makes the sum a multiple of 10.
"""

from __future__ import annotations

from typing import Final, Literal

GTIN_LENGTH: Final = 14
GTIN_LENGTHS: Final = frozenset({8, 12, 13, 14})
CHECK_MODULUS: Final = 10
_WEIGHTS: Final = (3, 1)  # from the rightmost digit of the body leftwards
_DIGITS: Final = frozenset("0123456789")

Reason = Literal["bad_format", "bad_check_digit"]

# str(InvalidGtin) is the English text of the write API's validation errors; `message` is for people.
_TEXTS: Final[dict[Reason, tuple[str, str]]] = {
    "bad_format": ("a GTIN has 8, 12, 13 or 14 digits", "商品条码（GTIN）应为8、12、13或14位数字"),
    "bad_check_digit": ("wrong GTIN check digit", "商品条码（GTIN）校验位不符，请核对后重试"),
}


class InvalidGtin(ValueError):
    """A text that is not a GTIN; ``reason`` is stable for machines, ``message`` is for people."""

    def __init__(self, reason: Reason) -> None:
        self.reason: Reason = reason
        english, self.message = _TEXTS[reason]
        super().__init__(english)


def gtin_check_digit(body: str) -> str:
    """The check digit that completes ``body``, a GTIN without its last digit (ASCII digits, any length)."""
    if not _is_digits(body):
        raise ValueError(f"expected ASCII digits, got {body!r}")
    total = sum(int(digit) * _WEIGHTS[i % 2] for i, digit in enumerate(reversed(body)))
    return str(-total % CHECK_MODULUS)


def normalise_gtin(text: str) -> str:
    """``text`` as the 14-digit GTIN it stands for; ``InvalidGtin`` (a ``ValueError``) when it is not one."""
    if len(text) not in GTIN_LENGTHS or not _is_digits(text):
        raise InvalidGtin("bad_format")
    gtin = text.zfill(GTIN_LENGTH)
    if gtin_check_digit(gtin[:-1]) != gtin[-1]:
        raise InvalidGtin("bad_check_digit")
    return gtin


def _is_digits(text: str) -> bool:
    return bool(text) and _DIGITS.issuperset(text)
