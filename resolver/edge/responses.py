"""Response classes: JSON through orjson, problem details (RFC 9457), and HTML pages with their security headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import HTMLResponse, Response

# Every HTML page: no script, frame, plugin or foreign resource may run in it (they have none; a name that slipped
# markup past the escaping could not load one), it is not framed (clickjacking), its type is not sniffed, and the
# code in its URL does not leak to other sites through the Referer header.
PAGE_SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
PAGE_SECURITY_RAW_HEADERS = [(name.lower().encode(), value.encode()) for name, value in PAGE_SECURITY_HEADERS.items()]


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ProblemResponse(ORJSONResponse):
    media_type = "application/problem+json"


class PageResponse(HTMLResponse):
    """An HTML page, with PAGE_SECURITY_HEADERS (the route's own headers may add to them)."""

    def __init__(
        self,
        content: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, {**PAGE_SECURITY_HEADERS, **(headers or {})}, background=background)
