"""The one 503 while Postgres is away (resolver.edge.problems.store_unavailable): the same answer from every route,
written by the app's exception handlers or, on the scan routes, by the route itself."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from resolver.db import POSTGRES_AWAY_ERRORS
from resolver.edge.problems import STORE_RETRY_AFTER_S
from resolver.state import app_worker
from tests.conftest import Service
from tests.helpers import register_batch

DETAIL = "追溯数据暂时无法访问，请稍后再试"
STORE_UNAVAILABLE = {
    "type": "https://tracecode.cn/problems/store_unavailable",
    "title": "服务暂不可用",
    "status": 503,
    "detail": DETAIL,
    "code": "store_unavailable",
}


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), id="connection-lost"),
        pytest.param(ConnectionRefusedError(111, "Connection refused"), id="refused"),
        pytest.param(TimeoutError(), id="timeout"),
        pytest.param(asyncpg.exceptions.TooManyConnectionsError("too many clients"), id="too-many-connections"),
        pytest.param(asyncpg.InternalClientError("cut in the middle"), id="cut"),
    ],
)
async def test_a_write_route_answers_the_one_503_when_postgres_is_away(
    service: Service, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    code = (await register_batch(service))["trace_code"]

    async def away(*args: Any, **kwargs: Any) -> Any:
        raise error

    assert isinstance(error, POSTGRES_AWAY_ERRORS)
    monkeypatch.setattr(asyncpg.pool.Pool, "fetchrow", away)
    response = await service.client.post(
        f"/api/v1/batches/{code}/recall", json={"reason": "抽检不合格"}, headers=service.admin_headers
    )

    assert response.status_code == 503
    assert response.headers["retry-after"] == str(STORE_RETRY_AFTER_S)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == STORE_UNAVAILABLE


async def test_scan_gate_and_write_routes_give_the_same_503_on_a_closed_pool(service: Service) -> None:
    cold = (await register_batch(service))["trace_code"]  # never resolved: its document needs Postgres
    other = (await register_batch(service))["trace_code"]
    await app_worker(service.app).pool.close()
    gate = {"Authorization": "Bearer tc_never-checked"}  # its check needs Postgres too

    scan = await service.client.get(f"/api/v1/codes/{cold}")  # the scan route's own answer (resolver.scan.resolve)
    page = await service.client.get(f"/t/{other}", headers={"Accept": "text/html"})  # the same, as a page
    gate_scan = await service.client.post(  # a raw ASGI route: the store error reaches the app's handlers
        "/api/v1/gate/scans", json={"code": cold, "quantity": 1, "unit": "kg", "idempotency_key": "k"}, headers=gate
    )
    recall = await service.client.post(  # a Starlette route: the app's handlers too
        f"/api/v1/batches/{cold}/recall", json={"reason": "抽检不合格"}, headers=service.admin_headers
    )

    for response in (scan, gate_scan, recall):
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(STORE_RETRY_AFTER_S)
        assert response.json() == STORE_UNAVAILABLE
    assert page.status_code == 503 and page.headers["retry-after"] == str(STORE_RETRY_AFTER_S)
    assert page.headers["content-type"].startswith("text/html") and DETAIL in page.text
