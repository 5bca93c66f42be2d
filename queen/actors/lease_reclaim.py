"""Giving back what a crashed predecessor held: a worker that starts releases the live leases its
slot's earlier incarnations took (sql/functions/07_leases.sql), so the partitions they had popped
are poppable again at once instead of when the leases expire (300 s by default).

A lease records the incarnation that took it, `<instance>/<worker index>/<start id>`: the
instance id is drawn once per `queen serve`, so instances sharing a database never release each
other's leases, and the start id tells this incarnation's own leases from its predecessors'.
The release is tried until it succeeds (the database may be down at start), then this is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from queen.backoff import backoff_delays
from queen.db import consumer_groups as groups
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.db.runner import Pools
from queen.ids import uuid7_str

log = logging.getLogger("queen.lease_reclaim")


def lease_slot(instance_id: str, worker_index: int) -> str:
    """The prefix every incarnation of one worker of one instance writes on its leases."""
    return f"{instance_id}/{worker_index}/"


class LeaseReclaim:
    """Releases the leases of this worker slot's earlier incarnations once, then finishes."""

    def __init__(self, db: Pools, slot: str, *, on_released: Callable[[list[str]], None]) -> None:
        self.db = db
        self.slot = slot
        self.owner = slot + uuid7_str()
        self.on_released = on_released

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        delay = backoff_delays(0.25, 5.0)
        attempt = 0
        while True:
            try:
                queues = await groups.release_previous_leases(self.db, self.slot, self.owner)
            except (DatabaseError, DatabaseUnavailable) as error:
                log.warning(
                    "could not release a predecessor's leases yet",
                    extra={"slot": self.slot, "error": str(error)},
                )
                await trio.sleep(delay(attempt))
                attempt += 1
                continue
            break
        if queues:
            log.info("released a crashed predecessor's leases", extra={"queues": queues})
            self.on_released(queues)
