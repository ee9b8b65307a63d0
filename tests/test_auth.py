from __future__ import annotations

import asyncio
import time

import pytest

from resolver.api import auth
from resolver.api.auth import Principal, hash_token
from resolver.state import app_worker
from tests.conftest import Service

LISTEN_TIMEOUT_S = 5.0


async def _gate_token(service: Service) -> tuple[int, str]:
    market = await service.client.post(
        "/api/v1/markets", json={"name": "鲁沙尔农贸市场", "region_code": "630123"}, headers=service.admin_headers
    )
    created = await service.client.post(
        "/api/v1/tokens", json={"role": "gate", "scope": f"{market.json()['id']}/east"}, headers=service.admin_headers
    )
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["token"]


async def _scan_status(service: Service, token: str) -> int:
    body = {"code": "16301210000000000097", "quantity": 1, "unit": "kg", "idempotency_key": "auth-test"}
    response = await service.client.post("/api/v1/gate/scans", json=body, headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def _listening(service: Service) -> None:
    """Wait until the service's token cache hears revocations (its listener starts with the worker)."""
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while not app_worker(service.app).token_cache.is_listening:
        assert time.monotonic() < deadline, "the token cache never subscribed to revocations"
        await asyncio.sleep(0.01)


async def test_a_checked_token_costs_no_postgres_round_trip(service: Service) -> None:
    _, token = await _gate_token(service)

    statuses = [await _scan_status(service, token) for _ in range(5)]

    assert statuses == [200] * 5
    assert service.query_log.count("FROM tokens WHERE token_hash") == 1


async def test_revoked_token_is_refused_by_another_instance_within_one_second(
    service: Service, second_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cached for an hour: only the revocation message can make the other instance refuse the token in time.
    monkeypatch.setattr(auth, "TOKEN_CACHE_TTL_S", 3_600.0)
    token_id, token = await _gate_token(service)
    await _listening(second_service)
    assert await _scan_status(second_service, token) == 200  # the other instance now holds the token
    assert app_worker(second_service.app).token_cache.get(hash_token(token)) is not None

    revoked = await service.client.delete(f"/api/v1/tokens/{token_id}", headers=service.admin_headers)
    returned_at = time.monotonic()
    seen: list[tuple[float, int]] = []
    while time.monotonic() - returned_at < 1.5:
        seen.append((time.monotonic() - returned_at, await _scan_status(second_service, token)))
        await asyncio.sleep(0.01)

    assert revoked.status_code == 204
    last_accepted = max((at for at, status in seen if status == 200), default=0.0)
    assert last_accepted < 1.0, f"the other instance still accepted the token {last_accepted:.3f} s after"
    assert seen[-1][1] == 401
    assert await _scan_status(service, token) == 401


async def test_a_lookup_that_began_before_a_revocation_is_not_cached(service: Service) -> None:
    cache = app_worker(service.app).token_cache
    began = cache.generation

    cache.drop(41)  # a revocation heard while the lookup was in flight
    cache.put(hash_token("tc_x"), 41, Principal("gate", "1/east"), generation=began)

    assert cache.get(hash_token("tc_x")) is None


@pytest.mark.parametrize("token_id", ["0", "-3", "9223372036854775808", "664768409559943354891715828282032128", "x"])
async def test_revoking_an_id_no_token_can_have_is_404(service: Service, token_id: str) -> None:
    answer = await service.client.delete(f"/api/v1/tokens/{token_id}", headers=service.admin_headers)
    assert answer.status_code == 404
    assert answer.json()["code"] == "unknown_token"
