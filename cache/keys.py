"""Every Redis key name and TTL of tracecode, in one place."""

from __future__ import annotations

KEY_PREFIX = "tc:"
DOCUMENT_PREFIX = KEY_PREFIX + "doc:"  # + code -> the resolved JSON document, ready to send, or NEGATIVE

DOCUMENT_TTL_S = 3_600  # 1 hour: documents are also invalidated on every write that changes them
NEGATIVE_TTL_S = 60  # a never-issued code stays unknown for a minute: a new code is not hidden long
NEGATIVE = b"-"  # cached answer "never issued"; a document is JSON and never starts with "-"

REDIS_TIMEOUT_S = 0.25  # a slow Redis must not hold up a scan: fall back to Postgres after this
REDIS_RETRY_AFTER_S = 2.0  # after a Redis error, go straight to Postgres for this long


def document_key(code: str) -> str:
    return DOCUMENT_PREFIX + code
