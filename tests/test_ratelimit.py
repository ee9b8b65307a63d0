"""The limit on bad lookups (resolver.scan.ratelimit): an absolute count per client, shared by every worker."""

from __future__ import annotations

import asyncio
import secrets

import httpx

from codegen.format import compose
from resolver.scan import ratelimit
from resolver.scan.ratelimit import Limiter
from tests.conftest import Service
from tests.helpers import register_batch


def _never_issued() -> str:
    return compose(1, "630121", secrets.randbelow(10**11))


def test_walking_the_code_space_is_limited_per_client() -> None:
    limiter = Limiter()

    for _ in range(ratelimit.MAX_BAD):
        limiter.record_bad("10.0.0.1")

    assert limiter.retry_after_s("10.0.0.1") > 0
    assert limiter.retry_after_s("10.0.0.2") == 0  # the next address of the same network


def _as(service: Service, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=service.app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_valid_lookups_neither_reset_nor_dilute_the_count(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    answers = []
    async with _as(service, "198.51.100.20") as walker:
        for _ in range(ratelimit.MAX_BAD + 2):  # two valid lookups for every unknown one
            answers.append((await walker.get(f"/api/v1/codes/{_never_issued()}")).status_code)
            answers += [(await walker.get(f"/api/v1/codes/{code}")).status_code for _ in range(2)]

    unknown = answers[::3]
    assert unknown[: ratelimit.MAX_BAD] == [404] * ratelimit.MAX_BAD
    assert set(unknown[ratelimit.MAX_BAD :]) == {429}
    assert answers[-1] == 429  # refused a valid code too: the client, not the lookup, is limited


async def test_other_clients_of_the_same_network_are_never_refused(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    async with _as(service, "203.0.113.7") as walker, _as(service, "203.0.113.8") as neighbour:
        for _ in range(ratelimit.MAX_BAD):
            await walker.get(f"/api/v1/codes/{_never_issued()}")
        refused = await walker.get(f"/api/v1/codes/{code}")
        served = [(await neighbour.get(f"/api/v1/codes/{code}")).status_code for _ in range(5)]
        page = await neighbour.get(f"/t/{code}")

    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["code"] == "too_many_requests"
    assert served == [200] * 5 and page.status_code == 200


async def test_the_count_is_shared_by_every_worker(service: Service, second_service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    half = ratelimit.MAX_BAD // 2
    async with _as(service, "192.0.2.44") as on_first, _as(second_service, "192.0.2.44") as on_second:
        first = [(await on_first.get(f"/api/v1/codes/{_never_issued()}")).status_code for _ in range(half)]
        second = [(await on_second.get(f"/api/v1/codes/{_never_issued()}")).status_code for _ in range(half)]
        await asyncio.sleep(2 * ratelimit.SYNC_INTERVAL_S + 0.2)  # each worker's sync ran at least once since
        refused = [(await client.get(f"/api/v1/codes/{code}")).status_code for client in (on_first, on_second)]

    assert first == second == [404] * half  # neither worker alone saw MAX_BAD
    assert refused == [429, 429]
