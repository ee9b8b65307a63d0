"""Errors that reach a client: one shape (RFC 9457 problem details) with a stable `code`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from resolver.edge.responses import ProblemResponse

logger = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://tracecode.cn/problems/"
STORE_RETRY_AFTER_S = 5  # what a client waits before it asks again while Postgres is away

_HTTP_CODES = {
    400: ("bad_request", "请求无效"),
    401: ("unauthorized", "未认证"),
    403: ("forbidden", "无权限"),
    404: ("not_found", "未找到"),
    405: ("method_not_allowed", "不支持该请求方法"),
    409: ("conflict", "冲突"),
    413: ("payload_too_large", "请求体过大"),
    415: ("unsupported_media_type", "不支持的内容类型"),
    422: ("invalid_input", "输入无效"),
    429: ("too_many_requests", "请求过于频繁"),
    500: ("internal_error", "服务器内部错误"),
    503: ("unavailable", "服务暂不可用"),
}


class Problem(Exception):
    """Raise to answer the client with problem details; `code` is the stable machine-readable name."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {code}: {detail or title}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def to_response(self) -> Response:
        body = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
            "code": self.code,
            **self.extra,
        }
        return ProblemResponse(body, status_code=self.status, headers=self.headers)


def invalid(detail: str, *, field: str | None = None) -> Problem:
    """A 422 for a body that is JSON but not what the route accepts."""
    extra: dict[str, Any] = {"field": field} if field else {}
    return Problem(422, "invalid_input", "输入无效", detail, **extra)


def store_unavailable() -> Problem:
    """The one answer while Postgres is away (resolver.db.POSTGRES_AWAY_ERRORS): 503 with Retry-After, on every
    route, the scan routes' too; nothing was written."""
    return Problem(
        503,
        "store_unavailable",
        "服务暂不可用",
        "追溯数据暂时无法访问，请稍后再试",
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


async def handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.to_response()


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "请求错误"))
    return Problem(exc.status_code, code, title, str(exc.detail), headers=exc.headers).to_response()


async def handle_store_unavailable(request: Request, exc: Exception) -> Response:
    """The app's handler of resolver.db.POSTGRES_AWAY_ERRORS: store_unavailable(), never a 500."""
    logger.warning("postgres unavailable on %s %s: %r", request.method, request.url.path, exc)
    return store_unavailable().to_response()


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client broke off while sending its body: nothing was done, and nobody is left to answer. One quiet line,
    and 499 (nginx's "client closed request") in the metrics rather than a 500."""
    logger.info("client left during its request body: %s %s", request.method, request.url.path)
    return Problem(499, "client_closed_request", "客户端已断开", "请求体未发送完整").to_response()


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return Problem(500, "internal_error", "服务器内部错误", "请稍后再试").to_response()
