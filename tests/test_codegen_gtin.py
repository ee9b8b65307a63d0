"""codegen/gtin.py: GTINs padded to 14 digits, and every single-digit error caught by the check digit."""

from __future__ import annotations

import pytest

from codegen.gtin import InvalidGtin, normalise_gtin
from tests.helpers import random_gtin


@pytest.mark.parametrize(
    ("text", "gtin"),
    [
        pytest.param("09506000134352", "09506000134352", id="gtin-14"),
        pytest.param("4006381333931", "04006381333931", id="ean-13"),
        pytest.param("036000291452", "00036000291452", id="upc-a"),
        pytest.param("96385074", "00000096385074", id="gtin-8"),
    ],
)
def test_normalise_gtin_pads_to_14_digits(text: str, gtin: str) -> None:
    assert normalise_gtin(text) == gtin


def test_every_single_digit_error_is_caught() -> None:
    gtin = random_gtin()
    for position in range(len(gtin)):
        for digit in "0123456789":
            typo = gtin[:position] + digit + gtin[position + 1 :]
            if typo != gtin:
                with pytest.raises(InvalidGtin) as caught:
                    normalise_gtin(typo)
                assert caught.value.reason == "bad_check_digit"


@pytest.mark.parametrize(
    ("text", "reason", "message"),
    [
        pytest.param("9506000134353", "bad_check_digit", "wrong GTIN check digit", id="check-digit"),
        pytest.param("1234567", "bad_format", "a GTIN has 8, 12, 13 or 14 digits", id="7-digits"),
        pytest.param("", "bad_format", "a GTIN has 8, 12, 13 or 14 digits", id="empty"),
        pytest.param(" 96385074", "bad_format", "a GTIN has 8, 12, 13 or 14 digits", id="space"),
        pytest.param("٩٦٣٨٥٠٧٤", "bad_format", "a GTIN has 8, 12, 13 or 14 digits", id="arabic-indic"),
    ],
)
def test_invalid_gtin_says_why(text: str, reason: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        normalise_gtin(text)

    assert isinstance(caught.value, InvalidGtin) and caught.value.reason == reason and caught.value.message
