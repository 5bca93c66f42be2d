"""trio-asyncio's loop with queen/db/bridge.py installed: callbacks ready together run in one
scheduler pass, asyncio's order and timers are kept, and the patch is tied to the pinned
release."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.testing
import trio_asyncio

from queen.db import bridge


class LoopSteps(trio.abc.Instrument):
    """Counts the scheduler steps of trio-asyncio's loop task."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("_main_loop"):
            self.steps += 1


def test_the_patch_applies_to_the_pinned_release_only() -> None:
    # Failing here means trio-asyncio moved: read queen/db/bridge.py again against the new
    # release's _main_loop_one before moving PATCHED_RELEASE.
    assert trio_asyncio.__version__ == bridge.PATCHED_RELEASE
    assert bridge.install()


async def test_callbacks_queued_together_run_in_one_pass_and_in_order() -> None:
    bridge.install()
    steps = LoopSteps()
    ran: list[str] = []
    async with trio_asyncio.open_loop() as loop:
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.add_instrument(steps)
        for name in "abcdef":
            loop.call_soon(ran.append, name)
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.remove_instrument(steps)
    assert ran == list("abcdef")
    assert steps.steps <= 2


async def test_asyncio_timers_and_coroutines_still_work() -> None:
    bridge.install()
    fired: list[str] = []

    async def later() -> str:
        await asyncio.sleep(0.01)
        return "slept"

    async with trio_asyncio.open_loop() as loop:
        loop.call_later(0.005, fired.append, "timer")
        assert await trio_asyncio.aio_as_trio(later)() == "slept"
    assert fired == ["timer"]


async def test_a_timer_set_while_the_loop_waits_with_none_still_fires() -> None:
    # With no timer pending the loop waits on its queue alone, without a deadline: a timer added
    # then must still wake it, at its time.
    bridge.install()
    fired = trio.Event()
    async with trio_asyncio.open_loop() as loop:
        await trio.testing.wait_all_tasks_blocked()
        assert not loop._timers
        started = trio.current_time()
        loop.call_later(0.05, fired.set)
        with trio.fail_after(5):
            await fired.wait()
        assert trio.current_time() - started >= 0.04


async def test_a_trio_task_handed_to_the_waiting_loop_runs() -> None:
    bridge.install()
    ran = trio.Event()

    async def in_the_loop() -> None:
        await trio.lowlevel.checkpoint()
        ran.set()

    async with trio_asyncio.open_loop() as loop:
        await trio.testing.wait_all_tasks_blocked()
        loop.run_trio_task(in_the_loop)
        with trio.fail_after(5):
            await ran.wait()


async def test_coroutines_given_as_callbacks_are_still_refused_in_debug_mode() -> None:
    # Outside debug mode asyncio checks no callback, and neither does queen's loop now.
    bridge.install()

    async def not_a_callback() -> None:
        pass

    async with trio_asyncio.open_loop() as loop:
        loop.set_debug(True)
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            loop.call_soon(not_a_callback)
        loop.set_debug(False)
        ran = trio.Event()
        loop.call_soon(ran.set)
        with trio.fail_after(5):
            await ran.wait()


async def test_cancelled_timers_leave_the_heap_and_live_ones_still_fire() -> None:
    # asyncpg sets a timer per call and cancels it when the call returns: kept until due, those
    # would pile up for the whole statement timeout.
    bridge.install()
    fired = trio.Event()
    async with trio_asyncio.open_loop() as loop:
        live = loop.call_later(0.05, fired.set)
        cancelled = [loop.call_later(60, fired.set) for _ in range(100)]
        await trio.testing.wait_all_tasks_blocked()
        assert len(loop._timers) == 101
        for handle in cancelled:
            handle.cancel()
        with trio.fail_after(5):
            await fired.wait()
        passed = trio.Event()
        loop.call_soon(passed.set)
        with trio.fail_after(5):
            await passed.wait()
        assert loop._timers == []
        assert not live.cancelled()
