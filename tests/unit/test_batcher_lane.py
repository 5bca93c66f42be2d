"""A batcher lane's timing, on trio's mock clock: a lone request is sent at once, requests that
arrive while a call is in flight are fused and wait for that call or for the hold, whichever
ends first, and each request gets its own slice of the fused call's results."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from queen.actors.batcher import Lane, LaneSpec
from queen.actors.mailbox import ActorGone
from queen.actors.slots import SlotPool
from queen.db.batches import Procedure
from queen.db.errors import DatabaseError
from queen.db.runner import Answer

HOLD_S = 0.005


class ScriptedPool:
    """Stands in for SlotPool: records each call's items and start time, and holds the answers
    of calls started while `gated` until the test opens the gate."""

    def __init__(self, gated: bool = False) -> None:
        self.calls: list[tuple[float, list[Any]]] = []
        self.gated = gated
        self.held: list[tuple[Answer, list[str]]] = []

    # The pool's own `call`, over this stand-in's `submit` (the one-by-one retries use it).
    call = SlotPool.call

    async def submit(
        self,
        answer: Answer,
        sql: str,
        *args: Any,
        kind: str = "fetch",
        timeout_s: float | None = None,
    ) -> None:
        items = orjson.loads(args[0])
        self.calls.append((trio.current_time(), items))
        results = [f"done-{item}" for item in items]
        if "bad" in items:
            answer.fail(DatabaseError("invalid input", "22P02"))
        elif self.gated:
            self.held.append((answer, results))
        else:
            answer.send(results)

    def open_gate(self) -> None:
        self.gated = False
        for answer, results in self.held:
            answer.send(results)
        self.held.clear()


def lane(pool: ScriptedPool, **hooks: Any) -> Lane:
    return Lane(
        LaneSpec("test", Procedure("SELECT fake($1)"), HOLD_S, 100, 100, 4),
        pool,  # type: ignore[arg-type]
        **hooks,
    )


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@contextlib.asynccontextmanager
async def running(subject: Lane) -> AsyncIterator[tuple[trio.Nursery, float]]:
    """The lane serving inside a nursery, and the time it started; stopped on leaving."""
    async with trio.open_nursery() as nursery:
        await nursery.start(subject.run)
        yield nursery, trio.current_time()
        nursery.cancel_scope.cancel()


async def test_a_lone_request_is_sent_at_once(clock: trio.testing.MockClock) -> None:
    pool = ScriptedPool()
    subject = lane(pool)
    async with running(subject) as (_, start):
        assert await subject.submit(["a"]) == ["done-a"]
    assert pool.calls == [(start, ["a"])]


async def test_requests_held_behind_a_call_go_when_it_returns(
    clock: trio.testing.MockClock,
) -> None:
    pool = ScriptedPool(gated=True)
    subject = lane(pool)
    answers: dict[str, list[Any]] = {}

    async def ask(name: str, items: list[str]) -> None:
        answers[name] = await subject.submit(items)

    async with running(subject) as (nursery, start):
        nursery.start_soon(ask, "first", ["a"])
        await trio.sleep(0.001)
        nursery.start_soon(ask, "second", ["b", "c"])
        await trio.sleep(0.0005)
        nursery.start_soon(ask, "third", ["d"])
        await trio.sleep(0.0005)
        pool.open_gate()
        await trio.sleep(0.01)
    assert [items for _, items in pool.calls] == [["a"], ["b", "c", "d"]]
    assert pool.calls[1][0] - start == pytest.approx(0.002)  # not at the end of the hold
    assert answers == {"first": ["done-a"], "second": ["done-b", "done-c"], "third": ["done-d"]}


async def test_a_call_outlasting_the_hold_does_not_hold_the_next_batch_longer(
    clock: trio.testing.MockClock,
) -> None:
    pool = ScriptedPool(gated=True)
    subject = lane(pool)
    async with running(subject) as (nursery, start):
        nursery.start_soon(subject.submit, ["a"])
        await trio.sleep(0.001)
        nursery.start_soon(subject.submit, ["b"])
        await trio.sleep(0.1)
    assert [items for _, items in pool.calls] == [["a"], ["b"]]
    assert pool.calls[1][0] - start == pytest.approx(0.001 + HOLD_S)


async def test_an_asker_cancelled_before_submitting_costs_no_call(
    clock: trio.testing.MockClock,
) -> None:
    """Entering the lane does not yield first, yet an asker already cancelled (a pop whose client
    left) still reaches no procedure call."""
    pool = ScriptedPool()
    subject = lane(pool)
    async with running(subject):
        with trio.CancelScope() as scope:
            scope.cancel()
            await subject.submit(["a"])
        assert await subject.submit(["b"]) == ["done-b"]
    assert [items for _, items in pool.calls] == [["b"]]


async def test_a_rejected_fused_call_is_retried_request_by_request(
    clock: trio.testing.MockClock,
) -> None:
    pool = ScriptedPool(gated=True)
    subject = lane(pool)
    answers: dict[str, Any] = {}

    async def ask(name: str, items: list[str]) -> None:
        try:
            answers[name] = await subject.submit(items)
        except DatabaseError as error:
            answers[name] = error.sqlstate

    async with running(subject) as (nursery, _):
        nursery.start_soon(ask, "first", ["a"])
        await trio.sleep(0.001)
        for name, items in (("b", ["b"]), ("bad", ["bad"]), ("c", ["c", "d"])):
            nursery.start_soon(ask, name, items)
            await trio.sleep(0.0001)
        pool.open_gate()
        await trio.sleep(0.01)
    assert [items for _, items in pool.calls] == [
        ["a"],
        ["b", "bad", "c", "d"],
        ["b"],
        ["bad"],
        ["c", "d"],
    ]
    assert answers == {
        "first": ["done-a"],
        "b": ["done-b"],
        "bad": "22P02",
        "c": ["done-c", "done-d"],
    }
    assert subject.limit.limiter.borrowed_tokens == 0


async def test_a_lane_stopped_with_a_call_in_flight_answers_actor_gone(
    clock: trio.testing.MockClock,
) -> None:
    """The pool may still answer later, to nobody; the asker hears at once, and no grant or
    task of the lane outlives it."""
    pool = ScriptedPool(gated=True)
    subject = lane(pool)
    outcome: list[str] = []

    async def ask() -> None:
        with pytest.raises(ActorGone):
            await subject.submit(["a"])
        outcome.append("gone")

    async with trio.open_nursery() as askers, running(subject):
        askers.start_soon(ask)
        await trio.sleep(0.001)
        assert len(pool.held) == 1
    assert outcome == ["gone"]
    assert subject.limit.limiter.borrowed_tokens == 0
    pool.open_gate()  # the answer arriving after the stop goes nowhere


async def test_a_failing_hook_crashes_the_lane_not_the_pool(clock: trio.testing.MockClock) -> None:
    """Results are delivered on the pool's side (trio-asyncio's loop, for a slot pool), but a
    hook that raises there still crashes the lane, for its supervisor to restart."""

    def broken(_items: Any, _results: Any) -> None:
        raise ZeroDivisionError("a bug in a hook")

    subject = lane(ScriptedPool(), on_results=broken)
    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(subject.run)
            with pytest.raises(ActorGone):
                await subject.submit(["a"])
            await trio.sleep(1)
            pytest.fail("the lane did not crash")
