from __future__ import annotations

import asyncio

import pytest

from cache.singleflight import SingleFlight


async def test_concurrent_callers_share_one_load() -> None:
    flight: SingleFlight[int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiters = [asyncio.create_task(flight.do("k", load)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()

    assert await asyncio.gather(*waiters) == [42] * 20
    assert calls == 1


async def test_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flight: SingleFlight[int] = SingleFlight()
    attempts = 0

    async def load() -> int:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise RuntimeError("postgres went away")
        return 7

    results = await asyncio.gather(*(flight.do("k", load) for _ in range(5)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in results)
    assert await flight.do("k", load) == 7
    assert attempts == 2


async def test_cancelled_caller_does_not_cancel_the_load_for_others() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def load() -> str:
        await asyncio.sleep(0.02)
        return "doc"

    first = asyncio.create_task(flight.do("k", load))
    second = asyncio.create_task(flight.do("k", load))
    await asyncio.sleep(0.005)
    first.cancel()

    assert await second == "doc"
    with pytest.raises(asyncio.CancelledError):
        await first
