"""Supervision: a crashed child comes back after a growing backoff, a child that keeps crashing
escalates as GaveUp, and a child that finished or a stop request ends it. Time is trio's mock
clock (autojump_clock), so the backoffs are exact and nothing sleeps for real."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from queen.actors.supervisor import Child, GaveUp, Supervisor, supervise
from queen.backoff import backoff_delays


class Flaky:
    """A child that crashes on its first `crashes` starts, optionally after running a while."""

    def __init__(self, crashes: int, run_s: float = 0.0, before_started: bool = False) -> None:
        self.crashes = crashes
        self.run_s = run_s
        self.before_started = before_started
        self.starts: list[float] = []
        self.serving = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts.append(trio.current_time())
        crash = len(self.starts) <= self.crashes
        if crash and self.before_started:
            raise RuntimeError(f"start {len(self.starts)} failed")
        task_status.started()
        await trio.sleep(self.run_s)
        if crash:
            raise RuntimeError(f"crash {len(self.starts)}")
        self.serving.set()
        await trio.sleep_forever()


def test_backoff_doubles_up_to_the_cap() -> None:
    delay = backoff_delays(0.1, 1.0)
    assert [delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert delay(10_000) == 1.0


async def test_crashed_child_is_restarted_with_exponential_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(crashes=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, Child("flaky", flaky.run, backoff_initial_s=0.1))
        await flaky.serving.wait()
        nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert gaps == pytest.approx([0.1, 0.2, 0.4, 0.8])


async def test_child_that_keeps_crashing_makes_the_supervisor_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(crashes=1_000)
    with pytest.raises(GaveUp, match="broken crashed 4 times") as gave_up:
        await supervise(Child("broken", flaky.run, max_restarts=3, window_s=60.0))
    assert len(flaky.starts) == 4  # the first start and three restarts
    assert isinstance(gave_up.value.__cause__, RuntimeError)
    assert str(gave_up.value.__cause__) == "crash 4"


async def test_crashes_spread_beyond_the_window_never_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fault that shows once an hour is restarted every time, each time after the short delay."""
    flaky = Flaky(crashes=10, run_s=61.0)
    async with trio.open_nursery() as nursery:
        child = Child("rare", flaky.run, backoff_initial_s=0.1, max_restarts=2, window_s=60.0)
        await nursery.start(supervise, child)
        await flaky.serving.wait()
        nursery.cancel_scope.cancel()
    assert len(flaky.starts) == 11
    gaps = [later - earlier for earlier, later in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert gaps == pytest.approx([61.1] * 10)


async def test_child_failing_to_start_is_retried_before_the_parent_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(crashes=2, before_started=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, Child("late", flaky.run))
        assert len(flaky.starts) == 3
        nursery.cancel_scope.cancel()


async def test_child_that_returns_is_not_restarted(autojump_clock: trio.testing.MockClock) -> None:
    starts = 0

    async def one_shot(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal starts
        starts += 1
        task_status.started()
        await trio.sleep(1.0)

    await supervise(Child("one-shot", one_shot))
    assert starts == 1


async def test_supervisor_starts_children_in_order_and_stops_them_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    def child(name: str, ready_after_s: float) -> Child:
        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            events.append(f"{name} starting")
            await trio.sleep(ready_after_s)
            events.append(f"{name} ready")
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                events.append(f"{name} stopped")

        return Child(name, run)

    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("root", [child("pool", 1.0), child("batcher", 0.5)]).run)
        assert events == ["pool starting", "pool ready", "batcher starting", "batcher ready"]
        nursery.cancel_scope.cancel()
    assert sorted(events[4:]) == ["batcher stopped", "pool stopped"]


async def test_supervisor_escalates_a_child_that_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stopped = trio.Event()

    async def healthy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    broken = Flaky(crashes=1_000, run_s=0.5)
    children = [Child("healthy", healthy), Child("broken", broken.run, max_restarts=2)]
    with pytest.RaisesGroup(GaveUp, flatten_subgroups=True):
        await Supervisor("root", children).run()
    assert stopped.is_set()
