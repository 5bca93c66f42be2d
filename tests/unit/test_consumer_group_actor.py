"""The ConsumerGroup actor, on trio's mock clock, with a scripted pop lane in place of the batcher:
however many pops wait, a backoff tick costs one look and a wake-up one call; a waiter gets its
messages, None at its deadline or at shutdown, and survives its actor crashing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from queen.actors.consumer_groups import ConsumerGroups, GroupKey, PopResult
from queen.config import Config
from queen.db.items import PopRequest

KEY: GroupKey = (("queue", "orders", ""), "g")
OTHER: GroupKey = (("queue", "invoices", ""), "g")
CONFIG = Config.from_env(
    {"POP_WAIT_INITIAL_INTERVAL_MS": "100", "POP_WAIT_MAX_INTERVAL_MS": "1000"}
)


class ScriptedLane:
    """Stands in for the pop lane: records each call's items; hands out messages it was given."""

    def __init__(self) -> None:
        self.calls: list[list[PopRequest]] = []
        self.available = 0
        self.fail_next = False
        self.gate: trio.Event | None = None

    async def pop(self, items: list[PopRequest]) -> list[PopResult]:
        """Answers from what was available when the call started (its snapshot)."""
        self.calls.append(items)
        failing, self.fail_next = self.fail_next, False
        results: list[PopResult] = []
        for item in items:
            if self.available:
                self.available -= 1
                results.append({"messages": [{"n": 1}], "leaseId": item.lease_id})
            else:
                results.append({"messages": []})
        if self.gate is not None:
            await self.gate.wait()
        if failing:
            raise RuntimeError("database went away")
        return results


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[tuple[ConsumerGroups, ScriptedLane, list[PopResult]]]:
    lane = ScriptedLane()
    undelivered: list[PopResult] = []
    groups = ConsumerGroups(CONFIG, lane.pop, on_undelivered=undelivered.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(groups.run)
        yield groups, lane, undelivered
        nursery.cancel_scope.cancel()


def attempt() -> PopRequest:
    attempt.count += 1  # type: ignore[attr-defined]
    return PopRequest(
        group="g",
        batch=1,
        partitions=1,
        auto_ack=False,
        subscription_mode="",
        subscription_from="",
        lease_id=f"lease-{attempt.count}",  # type: ignore[attr-defined]
        queue="orders",
    )


attempt.count = 0  # type: ignore[attr-defined]


async def park_all(
    groups: ConsumerGroups, nursery: trio.Nursery, count: int, timeout_s: float, key: GroupKey = KEY
) -> list[PopResult | None]:
    answers: list[PopResult | None] = []

    async def one() -> None:
        deadline = trio.current_time() + timeout_s
        answers.append(await groups.park(key, attempt, deadline, groups.wakes))

    for _ in range(count):
        nursery.start_soon(one)
    await wait_for(lambda: groups.parked == count)
    return answers


async def wait_for(condition: Any) -> None:
    with trio.fail_after(60):
        while not condition():  # noqa: ASYNC110 (mock clock: no real wait)
            await trio.sleep(0.001)


async def test_a_backoff_tick_looks_once_however_many_pops_wait(clock: Any) -> None:
    async with running() as (groups, lane, _), trio.open_nursery() as nursery:
        answers = await park_all(groups, nursery, 20, timeout_s=10)
        start = trio.current_time()
        await trio.sleep(3)
        ticks = len(lane.calls)
        assert 3 <= ticks <= 10, "100 ms, then backing off to 1 s"
        assert all(len(items) == 1 for items in lane.calls), "only the oldest looks on a tick"
        lane.available = 5
        await wait_for(lambda: len(answers) == 5)
        assert trio.current_time() - start < 4.1
        assert all(a is not None and a["messages"] for a in answers)
        assert groups.parked == 15
        nursery.cancel_scope.cancel()


async def test_a_wake_up_answers_at_once_in_one_call_for_every_waiter(clock: Any) -> None:
    async with running() as (groups, lane, _), trio.open_nursery() as nursery:
        answers = await park_all(groups, nursery, 10, timeout_s=30)
        await trio.sleep(5)  # backed off to the 1 s cap
        calls_before = len(lane.calls)
        lane.available = 10
        woken_at = trio.current_time()
        groups.wake("orders")
        await wait_for(lambda: len(answers) == 10)
        assert trio.current_time() - woken_at < 0.01
        assert [len(items) for items in lane.calls[calls_before:]] == [10]
        nursery.cancel_scope.cancel()


async def test_a_wake_up_reaches_only_its_queue_and_group(clock: Any) -> None:
    async with running() as (groups, lane, _), trio.open_nursery() as nursery:
        await park_all(groups, nursery, 1, timeout_s=30, key=OTHER)
        await trio.sleep(5)
        calls_before = len(lane.calls)
        groups.wake("orders")
        groups.wake("invoices", "another-group")
        await trio.sleep(0.05)
        assert len(lane.calls) == calls_before
        groups.wake(None, "g")
        await wait_for(lambda: len(lane.calls) == calls_before + 1)
        nursery.cancel_scope.cancel()


async def test_a_wake_up_between_the_first_attempt_and_parking_is_not_lost(clock: Any) -> None:
    async with running() as (groups, lane, _):
        seen = groups.wakes
        lane.available = 1
        groups.wake("orders")  # a push committed after the caller's empty first attempt
        started = trio.current_time()
        result = await groups.park(KEY, attempt, trio.current_time() + 30, seen)
        assert result is not None and result["messages"]
        assert trio.current_time() - started < 0.01


async def test_a_wake_up_during_a_look_makes_the_actor_look_again(clock: Any) -> None:
    async with running() as (groups, lane, _), trio.open_nursery() as nursery:
        answers = await park_all(groups, nursery, 1, timeout_s=30)
        lane.gate = trio.Event()
        await wait_for(lambda: len(lane.calls) == 1)  # the first tick is in flight
        lane.available = 1  # ... and the push commits after its snapshot
        groups.wake("orders")
        lane.gate.set()
        lane.gate = None
        released_at = trio.current_time()
        await wait_for(lambda: len(answers) == 1)
        assert trio.current_time() - released_at < 0.01, "looked again at once, not at a tick"
        assert answers[0] is not None
        assert len(lane.calls) == 2
        nursery.cancel_scope.cancel()


async def test_the_deadline_answers_none(clock: Any) -> None:
    async with running() as (groups, _, _):
        started = trio.current_time()
        assert await groups.park(KEY, attempt, started + 2.5, groups.wakes) is None
        assert 2.5 <= trio.current_time() - started < 2.6


async def test_a_failed_look_is_an_empty_one(clock: Any) -> None:
    async with running() as (groups, lane, _), trio.open_nursery() as nursery:
        answers = await park_all(groups, nursery, 1, timeout_s=30)
        lane.fail_next = True
        await wait_for(lambda: len(lane.calls) >= 2)
        lane.available = 1
        await wait_for(lambda: len(answers) == 1)
        assert answers[0] is not None
        nursery.cancel_scope.cancel()


async def test_messages_found_for_a_client_that_left_are_handed_back(clock: Any) -> None:
    async with running() as (groups, lane, undelivered):
        gate = lane.gate = trio.Event()
        lane.available = 1
        async with trio.open_nursery() as nursery:
            answers = await park_all(groups, nursery, 1, timeout_s=30)
            await wait_for(lambda: len(lane.calls) == 1)
            nursery.cancel_scope.cancel()  # the client disconnects while the look is in flight
        gate.set()
        await wait_for(lambda: len(undelivered) == 1)
        assert answers == []
        assert undelivered[0]["messages"]


async def test_shutdown_answers_every_waiter_none_and_parks_no_more(clock: Any) -> None:
    async with running() as (groups, _, _), trio.open_nursery() as nursery:
        answers = await park_all(groups, nursery, 5, timeout_s=30)
        groups.drain()
        await wait_for(lambda: len(answers) == 5)
        assert answers == [None] * 5
        assert await groups.park(KEY, attempt, trio.current_time() + 30, groups.wakes) is None


async def test_a_waiter_outlives_its_actor_crashing(clock: Any) -> None:
    async with running() as (groups, lane, _), trio.open_nursery() as nursery:
        answers = await park_all(groups, nursery, 3, timeout_s=30)
        lane.gate = trio.Event()
        await wait_for(lambda: len(lane.calls) == 1)
        # The actor dies mid-look (as a crash would); its waiters must park again elsewhere.
        groups.registry._actors[KEY][1]._receive.close()
        lane.gate.set()
        lane.gate = None
        await wait_for(lambda: KEY in groups.registry and groups.parked == 3)
        lane.available = 3
        groups.wake("orders")
        await wait_for(lambda: len(answers) == 3)
        assert all(a is not None for a in answers)
        nursery.cancel_scope.cancel()
