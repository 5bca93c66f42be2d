"""Cluster-wide switches (push maintenance, pop maintenance) as this process last saw them.

The truth is `queen.system_state` in PostgreSQL; this actor re-reads it every second, so a toggle
made through any instance reaches every instance within a second (the original only propagated it
over UDP sync, quirk O24). Readers get the last known values; while the database is unreachable
they stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from queen.actors.slots import SlotPool

log = logging.getLogger("queen.system_flags")

POLL_INTERVAL_S = 1.0
MAINTENANCE = "maintenance_mode"
POP_MAINTENANCE = "pop_maintenance_mode"


class SystemFlags:
    def __init__(self, pool: SlotPool, on_maintenance_off: Callable[[], None]) -> None:
        self.pool = pool
        self.maintenance = False
        self.pop_maintenance = False
        self.on_maintenance_off = on_maintenance_off
        self._changed = trio.Event()

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
        rows = await self.pool.call(
            "SELECT key, coalesce((value->>'enabled')::boolean, false) AS enabled "
            "FROM queen.system_state WHERE key = ANY($1::text[])",
            [MAINTENANCE, POP_MAINTENANCE],
            timeout_s=5.0,
        )
        values = {row["key"]: row["enabled"] for row in rows}
        self._apply(values.get(MAINTENANCE, False), values.get(POP_MAINTENANCE, False))

    async def set(self, key: str, enabled: bool) -> None:
        """Persist a switch for the whole cluster and apply it here at once."""
        await self.pool.call(
            "INSERT INTO queen.system_state (key, value, updated_at) VALUES ($1, $2::jsonb, now()) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            key,
            {"enabled": enabled},
            kind="execute",
            timeout_s=5.0,
        )
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
