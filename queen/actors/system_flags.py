"""Cluster-wide switches (push maintenance, pop maintenance) as this process last saw them.

The truth is `queen.system_state` in PostgreSQL; this actor re-reads it every second, so a toggle
made through any instance reaches every instance within a second (the original only propagated it
over UDP sync, quirk O24). A peer's word that a switch flipped (`poke`) only brings the next
re-read forward, at most once a second: what a packet says is never applied as such (D-U4).
Readers get the last known values; while the database is unreachable they stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from queen.db import system
from queen.db.runner import Runner

log = logging.getLogger("queen.system_flags")

POLL_INTERVAL_S = 1.0
CALL_TIMEOUT_S = 5.0
MAINTENANCE = "maintenance_mode"
POP_MAINTENANCE = "pop_maintenance_mode"


class SystemFlags:
    def __init__(
        self,
        pool: Runner,
        on_maintenance_off: Callable[[], None],
        on_set: Callable[[str, bool], None] = lambda _key, _enabled: None,
    ) -> None:
        self.pool = pool
        self.maintenance = False
        self.pop_maintenance = False
        self.on_maintenance_off = on_maintenance_off
        self.on_set = on_set
        self._changed = trio.Event()
        self._last_poke = -POLL_INTERVAL_S

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.refresh()
            except Exception as error:
                log.debug("could not refresh system flags", extra={"error": str(error)})
            with trio.move_on_after(POLL_INTERVAL_S):
                await self._changed.wait()
            self._changed = trio.Event()

    async def refresh(self) -> None:
        values = await system.read_flags(
            self.pool, [MAINTENANCE, POP_MAINTENANCE], timeout_s=CALL_TIMEOUT_S
        )
        self._apply(values.get(MAINTENANCE, False), values.get(POP_MAINTENANCE, False))

    def poke(self) -> None:
        """Someone says a switch flipped: re-read now, unless a poke did so within a second."""
        now = trio.current_time()
        if now - self._last_poke >= POLL_INTERVAL_S:
            self._last_poke = now
            self._changed.set()

    async def set(self, key: str, enabled: bool) -> None:
        """Persist a switch for the whole cluster, apply it here at once and tell the others."""
        await system.write_flag(self.pool, key, enabled, timeout_s=CALL_TIMEOUT_S)
        self.on_set(key, enabled)
        if key == MAINTENANCE:
            self._apply(enabled, self.pop_maintenance)
        else:
            self._apply(self.maintenance, enabled)

    def _apply(self, maintenance: bool, pop_maintenance: bool) -> None:
        if self.maintenance and not maintenance:
            log.info("push maintenance off: draining the disk buffer")
            self.on_maintenance_off()
        elif maintenance and not self.maintenance:
            log.info("push maintenance on: pushes go to the disk buffer")
        self.maintenance = maintenance
        self.pop_maintenance = pop_maintenance
