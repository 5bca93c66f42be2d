"""At most one signal per key per window, the first at once and one more at the window's end if
anything came in between: a burst of pushes to one queue costs two wake-ups, not one per push,
and the last push of the burst is never left unannounced (a parked pop would otherwise wait for
its backoff re-check)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)

MAX_TRACKED = 10_000


class Debouncer(Generic[K]):
    def __init__(self, window_s: float, emit: Callable[[list[K]], None]) -> None:
        self.window_s = window_s
        self.emit = emit
        self._quiet_until: dict[K, float] = {}
        self._pending: set[K] = set()
        self._kick = trio.Event()

    def offer(self, keys: Iterable[K]) -> None:
        """Signal `keys` now where their window is open; hold the others for its end."""
        now = trio.current_time()
        ready = []
        for key in keys:
            if now >= self._quiet_until.get(key, 0.0):
                ready.append(key)
                self._quiet_until[key] = now + self.window_s
            else:
                self._pending.add(key)
        if len(self._quiet_until) > MAX_TRACKED:
            self._quiet_until = {k: t for k, t in self._quiet_until.items() if t > now}
        if self._pending:
            self._kick.set()
        if ready:
            self.emit(ready)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._kick.wait()
            self._kick = trio.Event()
            while self._pending:
                first_due = min(self._quiet_until.get(key, 0.0) for key in self._pending)
                await trio.sleep_until(first_due)
                now = trio.current_time()
                due = [k for k in self._pending if self._quiet_until.get(k, 0.0) <= now]
                self._pending.difference_update(due)
                for key in due:
                    self._quiet_until[key] = now + self.window_s
                if due:
                    self.emit(due)
