"""What one worker process runs, gathered so HTTP handlers can reach the actors by name.

Handlers only send messages to these actors and await replies; they never touch actor state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from queen.actors.batcher import Batcher
from queen.actors.consumer_groups import ConsumerGroups
from queen.actors.file_buffer import FileBuffer, worker_orphans
from queen.actors.retention import RetentionServices
from queen.actors.slots import SlotPool
from queen.actors.system_flags import SystemFlags
from queen.config import Config
from queen.storage.file_buffer import worker_directory
from queen.sync.siblings import SiblingWakeups

log = logging.getLogger("queen.services")


@dataclass
class Counters:
    """Monotonic totals for /metrics; written by the request path of this process only."""

    requests: int = 0
    messages_pushed: int = 0
    request_marks: list[tuple[float, int]] = field(default_factory=list)
    message_marks: list[tuple[float, int]] = field(default_factory=list)

    def sample(self) -> None:
        """Keep one mark per second over the last minute, for the per-second rates."""
        now = time.monotonic()
        for marks, total in (
            (self.request_marks, self.requests),
            (self.message_marks, self.messages_pushed),
        ):
            if not marks or now - marks[-1][0] >= 1.0:
                marks.append((now, total))
            while marks and now - marks[0][0] > 60.0:
                marks.pop(0)

    @staticmethod
    def rate(marks: list[tuple[float, int]], total: int) -> float:
        if not marks:
            return 0.0
        elapsed = time.monotonic() - marks[0][0]
        return round((total - marks[0][1]) / elapsed, 3) if elapsed > 0 else 0.0


@dataclass
class Services:
    config: Config
    worker_id: int
    admin: SlotPool
    hot: SlotPool
    nursery: trio.Nursery
    consumer_groups: ConsumerGroups
    batcher: Batcher = field(init=False)
    flags: SystemFlags = field(init=False)
    file_buffer: FileBuffer = field(init=False)
    retention: RetentionServices = field(init=False)
    siblings: SiblingWakeups = field(init=False)
    shutting_down: trio.Event = field(default_factory=trio.Event)
    started_at: float = field(default_factory=time.monotonic)
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.batcher = Batcher(
            self.config,
            self.hot,
            on_pushed=self._pushed,
            on_acked=self._acked,
            on_transaction=self._transacted,
            on_pop_undelivered=self._pop_undelivered,
        )
        self.file_buffer = FileBuffer(
            self.config,
            worker_directory(Path(self.config.file_buffer_dir), self.worker_id),
            self.batcher.push.submit,
            maintenance_on=lambda: self.flags.maintenance,
            orphans=worker_orphans(self.config, self.worker_id),
        )
        self.flags = SystemFlags(self.admin, on_maintenance_off=self.file_buffer.wake)
        self.siblings = SiblingWakeups(
            self.config.port,
            self.worker_id,
            self.config.num_workers,
            on_wake=self.consumer_groups.wake_queue,
        )
        self.retention = RetentionServices(self.config, self.admin.params, worker_id=self.worker_id)

    def _pushed(self, _items: Sequence[Any], results: list[Any]) -> None:
        queued = 0
        woken: set[str] = set()
        for result in results:
            if result["status"] == "queued":
                queued += 1
                woken.add(result["queueName"])
        self.counters.messages_pushed += queued
        self._wake({(queue, None) for queue in woken})

    def _acked(self, _items: Sequence[Any], results: list[Any]) -> None:
        self._wake(
            {(r["queueName"], r["consumerGroup"]) for r in results if r.get("leaseReleased")}
        )

    def _transacted(self, _items: Sequence[Any], results: list[Any]) -> None:
        outcome = results[0]
        if not outcome.get("success"):
            return
        woken: set[tuple[str, str | None]] = set()
        for entry in outcome.get("results", []):
            if entry.get("type") == "push":
                self.counters.messages_pushed += 1
                woken.add((entry["queueName"], None))
            elif entry.get("leaseReleased"):
                woken.add((entry["queueName"], entry["consumerGroup"]))
        self._wake(woken)

    def _wake(self, targets: set[tuple[str, str | None]]) -> None:
        """Parked pops of these (queue, group) here, and of these queues in sibling workers."""
        for queue, group in targets:
            self.consumer_groups.wake_queue(queue, group)
        if targets:
            self.siblings.notify({queue for queue, _ in targets})

    def _pop_undelivered(self, result: Any) -> None:
        """The client left while its pop ran: give the partition back at once instead of letting
        the messages sit leased to nobody until the lease expires."""
        lease_id = result.get("leaseId") if isinstance(result, dict) else None
        if lease_id and result.get("messages"):
            self.nursery.start_soon(self._release_lease, lease_id)

    async def _release_lease(self, lease_id: str) -> None:
        try:
            await self.hot.call("SELECT queen.release_lease($1)", lease_id, kind="fetchval")
        except Exception as error:
            log.warning(
                "could not release an undelivered lease; it will expire",
                extra={"lease_id": lease_id, "error": str(error)},
            )
