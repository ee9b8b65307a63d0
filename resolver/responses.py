"""Response classes: JSON through orjson, and problem details (RFC 9457)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ORJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ProblemResponse(ORJSONResponse):
    media_type = "application/problem+json"
