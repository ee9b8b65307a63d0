"""cache.batching.Batcher: pure logic, with a group function that records its calls."""

from __future__ import annotations

import asyncio

import pytest

from cache.batching import Batcher


class Recorder:
    def __init__(self, *, fail_keys: frozenset[str] = frozenset(), fail_group: bool = False) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_keys = fail_keys
        self.fail_group = fail_group

    async def run(self, keys: list[str]) -> dict[str, str | BaseException]:
        self.groups.append(keys)
        await self.release.wait()
        if self.fail_group:
            raise RuntimeError("group failed")
        return {key: (ValueError(key) if key in self.fail_keys else key.upper()) for key in keys}


async def test_calls_made_together_are_one_group_and_each_gets_its_own_answer() -> None:
    recorder = Recorder()
    batcher: Batcher[str, str] = Batcher(recorder.run, max_group=100)

    answers = await asyncio.gather(*(batcher.call(key) for key in ["a", "b", "a", "c"]))

    assert answers == ["A", "B", "A", "C"]
    assert recorder.groups == [["a", "b", "c"]]


async def test_calls_arriving_while_a_group_runs_go_as_the_next_group_in_bounded_groups() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher: Batcher[str, str] = Batcher(recorder.run, max_group=2)
    first = asyncio.ensure_future(batcher.call("a"))
    await asyncio.sleep(0.01)  # the first group is running
    later = [asyncio.ensure_future(batcher.call(key)) for key in "bcd"]
    await asyncio.sleep(0.01)
    recorder.release.set()

    assert await asyncio.gather(first, *later) == ["A", "B", "C", "D"]
    assert recorder.groups == [["a"], ["b", "c"], ["d"]]


async def test_a_failing_key_fails_alone_and_a_failing_group_fails_its_calls_only() -> None:
    recorder = Recorder(fail_keys=frozenset({"b"}))
    batcher: Batcher[str, str] = Batcher(recorder.run, max_group=100)

    answers = await asyncio.gather(batcher.call("a"), batcher.call("b"), return_exceptions=True)
    assert answers[0] == "A" and isinstance(answers[1], ValueError)

    recorder.fail_group = True
    with pytest.raises(RuntimeError, match="group failed"):
        await batcher.call("c")
    recorder.fail_group = False
    assert await batcher.call("d") == "D"


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher: Batcher[str, str] = Batcher(recorder.run, max_group=100)
    leaving = asyncio.ensure_future(batcher.call("a"))
    staying = asyncio.ensure_future(batcher.call("b"))
    await asyncio.sleep(0.01)
    leaving.cancel()
    recorder.release.set()

    assert await staying == "B"
    assert leaving.cancelled()
    assert recorder.groups == [["a", "b"]]
