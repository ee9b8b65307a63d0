"""Temporary micro-benchmark (not committed): warm 307 of Digital Links against warm /api/v1/codes/{code}."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from tests.conftest import Service
from tests.gs1_support import make_entity

N = int(os.environ.get("GS1_MICRO_N", "20000"))
ROUNDS = 5


async def test_micro(service: Service) -> None:
    app = service.app
    entity = await make_entity(service)

    async def run(path: str, expect: int) -> float:
        base: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "client": ("10.1.2.3", 5000),
            "server": ("testserver", 80),
            "app": app,
            "path": path,
            "raw_path": path.encode(),
        }
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(base), receive, send)
        assert status == expect, (path, status)
        start = time.perf_counter()
        for _ in range(N):
            await app(dict(base), receive, send)
        return N / (time.perf_counter() - start)

    paths = {
        "resolve": (f"/api/v1/codes/{entity.batch_code}", 200),
        "resolve pkg": (f"/api/v1/codes/{entity.package_code}", 200),
        "gs1 lot": (entity.path("lot"), 307),
        "gs1 serial": (entity.path("serial"), 307),
        "gs1 gtin": (entity.path("gtin"), 307),
        "livez": ("/livez", 200),
    }
    rates: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(ROUNDS):
        for name, (path, expect) in paths.items():
            rates[name].append(await run(path, expect))
    base_rate = statistics.median(rates["resolve"])
    print(f"\n{'path':<12} {'req/s (median of 5)':>22} {'ratio':>7}")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<12} {rate:>22,.0f} {rate / base_rate:>7.2f}")
