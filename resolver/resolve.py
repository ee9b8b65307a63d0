"""The scan path: parse and check the code, look in the cache, fall back to Postgres, answer.

`GET /api/v1/codes/{code}` answers the JSON document; `GET /t/{code}` the consumer page, or the
JSON document when the client asks for `application/json`.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from cache import keys
from cache.singleflight import SingleFlight
from cache.store import DocumentCache
from codegen.format import MalformedCode, parse
from codegen.longform import parse_long
from resolver import pages, queries
from resolver.documents import CHINA_TZ, build_document, cache_ttl_s
from resolver.problems import Problem

logger = logging.getLogger(__name__)

POSTGRES_RETRY_AFTER_S = 5


class Resolver:
    """Resolves codes to document bytes through the cache, loading each cold code once per process."""

    __slots__ = ("_cache", "_flight", "_pool", "_public_url", "postgres_loads")

    def __init__(self, pool: asyncpg.Pool, cache: DocumentCache, *, public_url: str) -> None:
        self._pool = pool
        self._cache = cache
        self._flight: SingleFlight[bytes | None] = SingleFlight()
        self._public_url = public_url
        self.postgres_loads = 0

    def __repr__(self) -> str:
        return f"Resolver(postgres_loads={self.postgres_loads}, cache={self._cache!r})"

    async def document(self, code: str) -> bytes:
        """The document bytes of a canonical code; Problem 404 when it was never issued."""
        cached = await self._cache.get(code)
        if cached is None:
            cached = await self._flight.do(code, lambda: self._load(code))
        if cached is None or cached == keys.NEGATIVE:
            raise Problem(404, "unknown_code", "未找到该追溯码", f"追溯码 {code} 未登记，请核对后重试")
        return cached

    async def _load(self, code: str) -> bytes | None:
        self.postgres_loads += 1
        query = queries.DOCUMENT_BY_CODE if len(code) == 20 else queries.DOCUMENT_BY_LONG_CODE
        try:
            row = await self._pool.fetchrow(query, code)
        except (TimeoutError, OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            logger.warning("postgres unavailable while resolving: %r", exc)
            raise Problem(
                503,
                "store_unavailable",
                "服务暂不可用",
                "追溯数据暂时无法读取，请稍后再试",
                headers={"Retry-After": str(POSTGRES_RETRY_AFTER_S)},
            ) from exc
        if row is None:
            await self._cache.put_negative(code)
            return None
        now = dt.datetime.now(CHINA_TZ)
        body = orjson.dumps(build_document(code, row, public_url=self._public_url, today=now.date()))
        await self._cache.put(code, body, ttl_s=cache_ttl_s(row, now.date(), now))
        return body


def canonical_code(text: str) -> str:
    """The printed code or national long form in `text`; Problem 400 for anything else, before any I/O."""
    try:
        return parse(text)
    except MalformedCode as exc:
        long_code = parse_long(text)
        if long_code is not None:
            return long_code
        raise Problem(400, "malformed_code", "追溯码格式错误", exc.message, reason=exc.reason) from None


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


async def code_document(request: Request) -> Response:
    """GET /api/v1/codes/{code}"""
    code = canonical_code(request.path_params["code"])
    body = await request.app.state.resolver.document(code)
    return Response(body, media_type="application/json")


async def code_page(request: Request) -> Response:
    """GET /t/{code}: the consumer page, or the document for `Accept: application/json`."""
    if _wants_json(request):
        return await code_document(request)
    try:
        code = canonical_code(request.path_params["code"])
        body = await request.app.state.resolver.document(code)
    except Problem as problem:
        return HTMLResponse(pages.render_problem(problem), status_code=problem.status, headers=problem.headers)
    return HTMLResponse(pages.render_document(orjson.loads(body)))
