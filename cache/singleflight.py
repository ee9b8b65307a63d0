"""Collapse concurrent loads of one key into a single call per process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """`await flight.do(key, load)` runs `load()` once for all callers that ask for `key` meanwhile.

    Every waiter gets the same result or the same exception. The key is forgotten as soon as the
    load finishes, so this is not a cache: a later call loads again.
    """

    __slots__ = ("_inflight",)

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[T]] = {}

    def __repr__(self) -> str:
        return f"SingleFlight(inflight={len(self._inflight)})"

    async def do(self, key: str, load: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._inflight.get(key)
        if task is None:
            # The load runs as its own task so that a caller who goes away cannot cancel it for the others.
            task = asyncio.ensure_future(load())
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finish(key, done))
        return await asyncio.shield(task)

    def _finish(self, key: str, task: asyncio.Task[T]) -> None:
        del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody waited for is not logged as lost
