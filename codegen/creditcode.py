"""统一社会信用代码, the 18-character unified social credit code of GB 32100-2015.

Layout: registration authority (1), organisation kind (1), GB/T 2260 region of the registering office
(6 digits), subject identifier (9, the old GB 11714 organisation code) and a check character (1). The
check is GB/T 17710 MOD 31-3: position ``i`` (0-based) weighs ``3**i % 31``, and the check character's
value is ``(31 - weighted_sum % 31) % 31``. Some codes issued in early pilot areas do not pass this
check; the spec requires it, so they are rejected here.
"""

from __future__ import annotations

import unicodedata
from typing import Final

CREDIT_CODE_LENGTH: Final = 18
ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_BASE: Final = len(ALPHABET)
_WEIGHT_RADIX: Final = 3
_PAYLOAD_LENGTH: Final = CREDIT_CODE_LENGTH - 1
WEIGHTS: Final = tuple(pow(_WEIGHT_RADIX, i, _BASE) for i in range(_PAYLOAD_LENGTH))
_REGION_SLICE: Final = slice(2, 8)  # characters 3..8
_VALUES: Final = {char: value for value, char in enumerate(ALPHABET)}


def normalise_credit_code(text: str) -> str:
    """``text`` as a credit code would be stored: NFKC (full-width forms), surrounding space removed, upper case."""
    return unicodedata.normalize("NFKC", text).strip().upper()


def credit_check_char(first17: str) -> str:
    """The check character for the first 17 characters of a credit code (canonical, upper case)."""
    if len(first17) != _PAYLOAD_LENGTH or any(char not in _VALUES for char in first17):
        raise ValueError(f"expected {_PAYLOAD_LENGTH} characters of {ALPHABET!r}, got {first17!r}")
    total = sum(_VALUES[char] * weight for char, weight in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(_BASE - total % _BASE) % _BASE]


def make_credit_code(first17: str) -> str:
    """``first17`` completed with its check character (for demo and test data)."""
    return first17 + credit_check_char(first17)


def is_valid_credit_code(code: str) -> bool:
    """Whether ``code`` is a canonical credit code: 18 characters of the alphabet, a 6-digit region,
    and the right check character. Normalise user input with ``normalise_credit_code`` first."""
    if len(code) != CREDIT_CODE_LENGTH or any(char not in _VALUES for char in code):
        return False
    region = code[_REGION_SLICE]
    return region.isdigit() and credit_check_char(code[:_PAYLOAD_LENGTH]) == code[-1]


def region_of_credit_code(code: str) -> str:
    """The GB/T 2260 code of the registering office (characters 3..8) of a canonical credit code."""
    return code[_REGION_SLICE]
