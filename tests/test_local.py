from __future__ import annotations

import asyncio

from cache.local import LocalTier
from resolver.state import app_worker
from tests.conftest import Service
from tests.helpers import register_batch


def _tier(capacity: int = 3) -> LocalTier:
    tier = LocalTier(capacity)
    tier.is_enabled = True
    return tier


def test_least_recently_used_is_dropped_first() -> None:
    tier = _tier(capacity=2)
    tier.put("a", b"{}", 1, 1)
    tier.put("b", b"{}", 1, 1)
    assert tier.get("a") is not None  # "b" is now the least recently used

    tier.put("c", b"{}", 2, 1)

    assert tier.get("b") is None and tier.get("a") is not None and tier.get("c") is not None


def test_drop_batch_drops_all_its_codes_and_no_other() -> None:
    tier = _tier()
    tier.put("a", b"{}", 1, 1)
    tier.put("b", b"{}", 1, 1)
    tier.put("c", b"{}", 2, 1)

    tier.drop_batch(1)

    assert tier.get("a") is None and tier.get("b") is None and tier.get("c") is not None


def test_a_changed_batch_keeps_no_older_document() -> None:
    tier = _tier()
    tier.put("a", b"{}", 1, 1)
    tier.put("b", b"{}", 2, 1)

    tier.changed(1, 2)
    tier.put("a", b'{"old":1}', 1, 1)  # a copy read before the change, put after it
    tier.changed(1, 2)  # heard again: nothing to drop
    tier.put("c", b"{}", 1, 2)

    assert tier.get("a") is None and tier.get("b") is not None and tier.get("c") is not None
    assert not tier.is_current(1, 1) and tier.is_current(1, 2) and tier.is_current(3, 0)
    tier.forget_versions([1])
    assert tier.is_current(1, 1)


def test_disabled_tier_keeps_nothing() -> None:
    tier = _tier()
    tier.put("a", b"{}", 1, 1)

    tier.disable()
    tier.put("b", b"{}", 1, 1)

    assert len(tier) == 0 and tier.get("a") is None and tier.get("b") is None


async def test_warm_scan_touches_neither_postgres_nor_redis(service: Service) -> None:
    code = (await register_batch(service))["trace_code"]
    await service.client.get(f"/api/v1/codes/{code}")
    cache = app_worker(service.app).cache
    before = (cache.hits, cache.misses, cache.errors)
    service.query_log.queries.clear()

    counts = [(await service.client.get(f"/api/v1/codes/{code}")).json()["scans"]["count"] for _ in range(5)]

    assert counts == [2, 3, 4, 5, 6]
    assert (cache.hits, cache.misses, cache.errors) == before
    assert service.query_log.queries == []


async def test_other_workers_drop_their_copy_on_a_change(service: Service, second_service: Service) -> None:
    batch = await register_batch(service)
    url = f"/api/v1/codes/{batch['trace_code']}"
    await second_service.client.get(url)
    assert app_worker(second_service.app).local.get(batch["trace_code"]) is not None  # held in the other worker

    await service.client.post(
        f"/api/v1/batches/{batch['trace_code']}/recall", json={"reason": "测试"}, headers=service.admin_headers
    )
    for _ in range(100):
        if app_worker(second_service.app).local.get(batch["trace_code"]) is None:
            break
        await asyncio.sleep(0.01)

    assert (await second_service.client.get(url)).json()["status"] == "recalled"
