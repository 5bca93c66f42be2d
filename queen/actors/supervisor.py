"""Supervision: start children in a nursery, restart the ones that crash, stop them all together.

Restart policy (one place, like an OTP child spec): a child that raises is restarted after an
exponential backoff (0.1 s doubling to 30 s); a child that crashes more than `max_restarts` times
within `window_s` is considered broken and its error escalates to the parent, which is what turns
a persistent fault into a visible failure instead of a silent restart loop. A child that returns
normally is finished and not restarted.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from queen.backoff import backoff_delays

log = logging.getLogger("queen.supervisor")

StartFn = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Child:
    """A supervised task: `run(task_status=...)` calls `task_status.started()` once it serves."""

    name: str
    run: StartFn
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 30.0
    max_restarts: int = 20
    window_s: float = 60.0


class GaveUp(RuntimeError):
    """A child kept crashing; restarting it again would only hide the fault."""


class Killed(RuntimeError):
    """Raised in a child on purpose (`Supervisor.kill`): it counts as a crash like any other."""


async def supervise(
    child: Child,
    *,
    kill_switch: Callable[[], trio.Event] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one child forever (until it returns or is cancelled), restarting it when it crashes.
    `kill_switch` gives the event that, once set, crashes the running incarnation."""
    crashes: deque[float] = deque()
    first_start = True
    while True:
        try:
            async with trio.open_nursery() as nursery:
                if kill_switch is not None:
                    nursery.start_soon(_crash_when_set, kill_switch(), child.name)
                await nursery.start(_run_to_end, child.run, nursery.cancel_scope)
                if first_start:
                    first_start = False
                    task_status.started()
            return
        except Exception as raised:
            error = _sole_error(raised)
            now = trio.current_time()
            crashes.append(now)
            while crashes and now - crashes[0] > child.window_s:
                crashes.popleft()
            if len(crashes) > child.max_restarts:
                raise GaveUp(
                    f"{child.name} crashed {len(crashes)} times in {child.window_s:.0f}s"
                ) from error
            backoff = backoff_delays(child.backoff_initial_s, child.backoff_max_s)(len(crashes) - 1)
            log.error(
                "actor crashed; restarting",
                exc_info=error,
                extra={"actor": child.name, "restart_in_s": round(backoff, 3)},
            )
            await trio.sleep(backoff)


async def _run_to_end(
    run: StartFn,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A child that returns is finished: stop whatever else watches it (its kill switch)."""
    await run(task_status=task_status)
    scope.cancel()


async def _crash_when_set(kill: trio.Event, name: str) -> None:
    await kill.wait()
    raise Killed(f"{name} killed on purpose")


class Supervisor:
    """Starts its children in order, each ready before the next starts; stops them together."""

    def __init__(self, name: str, children: Sequence[Child]) -> None:
        self.name = name
        self.children = tuple(children)
        self._kill_switches = {child.name: trio.Event() for child in self.children}
        if len(self._kill_switches) != len(self.children):
            raise ValueError(f"{name}: two children share a name")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for child in self.children:
                await nursery.start(
                    functools.partial(supervise, child, kill_switch=self._switch(child.name))
                )
            task_status.started()

    def kill(self, name: str) -> None:
        """Crash one running child, as a fault would (fault-injection tests)."""
        self._kill_switches[name].set()

    def _switch(self, name: str) -> Callable[[], trio.Event]:
        def fresh() -> trio.Event:
            """Each incarnation gets a new switch, so one kill crashes one incarnation."""
            self._kill_switches[name] = trio.Event()
            return self._kill_switches[name]

        return fresh


def _sole_error(error: Exception) -> Exception:
    """The child's own exception, not the one-element group its nursery wrapped it in."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
