"""The worker's objects (resolver.state): made by the lifespan, all at once, fixed for the worker's life."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from resolver.app import create_app
from resolver.ops.settings import Settings
from resolver.state import Worker, app_worker
from tests.conftest import Service


async def test_the_worker_is_made_whole_by_the_lifespan(settings: Settings) -> None:
    app = create_app(settings)
    with pytest.raises(RuntimeError, match="lifespan"):
        app_worker(app)
    async with app.router.lifespan_context(app):
        worker = app_worker(app)
        assert worker.settings is settings
        assert all(getattr(worker, field.name) is not None for field in dataclasses.fields(Worker))
        for _ in range(500):  # the token cache hears revocations from the start, not from the first request
            if worker.token_cache.is_listening:
                break
            await asyncio.sleep(0.01)
        assert worker.token_cache.is_listening
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/healthz")).json()["status"] == "ok"


async def test_the_worker_is_frozen_and_what_it_holds_is_the_routes_own(service: Service) -> None:
    worker = app_worker(service.app)
    with pytest.raises(dataclasses.FrozenInstanceError):
        worker.pool = worker.pool  # type: ignore[misc]

    requests_before = sum(worker.metrics.requests.values())
    await service.client.get("/livez")

    assert sum(worker.metrics.requests.values()) == requests_before + 1  # the middleware's metrics are the worker's
    assert app_worker(service.app) is worker
