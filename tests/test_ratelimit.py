from __future__ import annotations

import secrets

import httpx

from codegen.format import compose
from resolver import ratelimit
from resolver.ratelimit import Limiter
from tests.conftest import Service
from tests.helpers import register_batch


def test_walking_the_code_space_is_limited() -> None:
    limiter = Limiter()

    for _ in range(ratelimit.MIN_BAD):
        limiter.record("10.0.0.0/24", is_bad=True)

    assert limiter.retry_after_s("10.0.0.0/24") > 0
    assert limiter.retry_after_s("10.0.1.0/24") == 0


def test_heavy_genuine_scanning_with_some_typos_is_never_limited() -> None:
    limiter = Limiter()

    for i in range(10_000):
        limiter.record("market", is_bad=i % 20 == 0)  # 5 % mistyped

    assert limiter.retry_after_s("market") == 0


async def test_a_client_hammering_unknown_codes_gets_429_while_others_scan_on(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    answers = [
        (await service.client.get(f"/api/v1/codes/{compose(1, '630121', secrets.randbelow(10**11))}")).status_code
        for _ in range(ratelimit.MIN_BAD + 5)
    ]

    refused = await service.client.get(f"/api/v1/codes/{code}")
    transport = httpx.ASGITransport(app=service.app, client=("10.9.9.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as another_network:
        other_client = await another_network.get(f"/api/v1/codes/{code}")

    assert answers[: ratelimit.MIN_BAD] == [404] * ratelimit.MIN_BAD
    assert set(answers[ratelimit.MIN_BAD :]) == {429}
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["code"] == "too_many_requests"
    assert other_client.status_code == 200
