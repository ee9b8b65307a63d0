"""The national platform's long form of a batch code.

`{type}.{subject category}.{18-char credit code}.{8-digit product class}.{yyyyMMddHHmmss}.{3-digit sequence}`
"""

from __future__ import annotations

import datetime as dt
import re

LONG_FORM_MAX_CHARS = 64
_LONG_FORM = re.compile(r"[1-4]\.[1-4]\.[0-9A-HJ-NP-RTUW-Y]{18}\.[0-9]{8}\.[0-9]{14}\.[0-9]{3}")


def compose_long(
    code_type: int, subject_category: str, credit_code: str, product_class: str, at: dt.datetime, sequence: int
) -> str:
    """The long form; `at` is taken as it is (give it in China time), `sequence` modulo 1000."""
    return f"{code_type}.{subject_category}.{credit_code}.{product_class}.{at:%Y%m%d%H%M%S}.{sequence % 1000:03d}"


def parse_long(text: str) -> str | None:
    """The canonical long form in `text` (upper-cased, trimmed), or None when it is not one."""
    if len(text) > LONG_FORM_MAX_CHARS:
        return None
    candidate = text.strip().upper()
    return candidate if _LONG_FORM.fullmatch(candidate) else None
