"""Calls that arrive together share one round trip: `await batcher.call(key)` answers from a group call.

The first call of a burst starts a sender task. It waits one turn of the event loop (calls made in the
same turn join it), runs the group function with every key gathered, hands each caller its own result,
then runs the keys that arrived meanwhile as the next group, and ends when none are left. There is no
timer: a lone call waits for nothing, and under load the groups grow by themselves to what arrived
during one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# A group function answers each key with its result or with the exception that key's callers raise.
GroupFunction = Callable[[list[K]], Awaitable[dict[K, "V | BaseException"]]]


class Batcher(Generic[K, V]):
    """`await batcher.call(key)`: `run(keys)` once per group; each key's callers get that key's answer.

    A key missing from the group function's answer raises KeyError in its callers. An exception of the
    group function fails every call of its group (the next group still runs). Cancelling a caller does
    not cancel its group: the others still get their answers.
    """

    __slots__ = ("_queue", "_run", "_sending", "_tasks", "groups", "keys", "max_group")

    def __init__(self, run: GroupFunction[K, V], *, max_group: int) -> None:
        self._run = run
        self._queue: dict[K, asyncio.Future[V]] = {}
        self._sending = False
        self._tasks: set[asyncio.Task[None]] = set()  # referenced while they run
        self.max_group = max_group
        self.groups = 0
        self.keys = 0

    def __repr__(self) -> str:
        return f"Batcher(groups={self.groups}, keys={self.keys}, waiting={len(self._queue)})"

    async def call(self, key: K) -> V:
        future = self._queue.get(key)
        if future is None:
            future = self._queue[key] = asyncio.get_running_loop().create_future()
        if not self._sending:
            self._sending = True
            task = asyncio.create_task(self._send_all())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def _send_all(self) -> None:
        group: dict[K, asyncio.Future[V]] = {}
        try:
            await asyncio.sleep(0)  # calls made in this turn of the loop join the first group
            while self._queue:
                keys = list(self._queue)[: self.max_group]
                group = {key: self._queue.pop(key) for key in keys}
                await self._send(group)
                group = {}
        except BaseException:  # cancelled at shut-down: no call may wait for ever
            waiting, self._queue = [*group.values(), *self._queue.values()], {}
            for future in waiting:
                future.cancel()
            raise
        finally:
            # In the step that saw the queue empty: a call queued after it finds no sender and starts one.
            self._sending = False

    async def _send(self, group: dict[K, asyncio.Future[V]]) -> None:
        self.groups += 1
        self.keys += len(group)
        try:
            answers = await self._run(list(group))
        except Exception as exc:
            answers = dict.fromkeys(group, exc)
        for key, future in group.items():
            if future.done():
                continue
            answer = answers.get(key, KeyError(key))
            if isinstance(answer, BaseException):
                future.set_exception(answer)
                future.exception()  # retrieved: a caller that went away must not be reported as lost
            else:
                future.set_result(answer)
