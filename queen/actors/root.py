"""The root of one worker process's supervision tree: every long-lived actor, built and wired here
and listed once in `children()` with its restart policy, and `notify`, the one way to say that
messages may have become available.

Restart policy (OTP's one-for-one): a child that crashes is restarted alone, after a backoff of
0.1 s doubling to 30 s; more than 20 crashes in a minute means it is broken, and the error ends
the worker, which `queen serve` then restarts whole. Keyed actors (one per consumer group) are
restarted on demand instead: the next message for a crashed one's key starts a new one.

HTTP handlers reach the actors through this object and only send them messages; nothing outside
an actor touches its state.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from queen.actors.batcher import Batcher
from queen.actors.cluster import Cluster
from queen.actors.consumer_groups import ConsumerGroups
from queen.actors.counters import Counters
from queen.actors.encryption import Encryption
from queen.actors.file_buffer import FileBuffer, worker_orphans
from queen.actors.ingest import PushPath
from queen.actors.jwks import JwksKeys
from queen.actors.lease_reclaim import LeaseReclaim, lease_slot
from queen.actors.metrics_janitor import MetricsJanitor
from queen.actors.metrics_sampler import MetricsSampler, Watched
from queen.actors.queue_scopes import QueueScopes
from queen.actors.retention import RetentionServices
from queen.actors.slots import SlotPool
from queen.actors.supervisor import Child, Supervisor
from queen.actors.system_flags import SystemFlags
from queen.actors.table_statistics import TableStatistics
from queen.actors.warm_up import warm_up
from queen.config import Config
from queen.db import consumer_groups as groups
from queen.db import queues
from queen.db.connect import ConnectParams
from queen.db.items import PushItem
from queen.ids import uuid7_str
from queen.metrics.families import open_families, run_directory
from queen.metrics.recorder import Recorder
from queen.storage.file_buffer import worker_directory
from queen.sync.events import Event, QueueChanged, SwitchChanged
from queen.sync.siblings import SiblingWakeups, WakeTarget

log = logging.getLogger("queen.root")


class Services:
    """The actors of one worker process, wired to each other, and the tree that runs them."""

    def __init__(
        self,
        config: Config,
        worker_id: int,
        instance_id: str | None = None,
        metrics_directory: Path | None = None,
    ) -> None:
        """`instance_id` names the `queen serve` this worker belongs to (leases record it); a
        worker started on its own draws one. `metrics_directory` is shared by the workers of
        one `queen serve` (queen/metrics/families.py); by default this process's own."""
        name = f"queen-w{worker_id}"
        instance = instance_id or uuid7_str()
        self.config = config
        self.worker_id = worker_id
        self.shutting_down = trio.Event()
        self.started_at = time.monotonic()
        self.counters = Counters()
        self.metrics = open_families(metrics_directory or run_directory(os.getpid(), instance))
        self.recorder = Recorder(self.metrics)
        self.admin = SlotPool(
            "admin",
            ConnectParams.from_config(config, f"{name}-admin"),
            config.admin_slots_per_worker(),
        )
        # /health's own connection: a probe queued behind slow listings on the admin pool would
        # answer 503 for a healthy database, and an orchestrator restart the pod for it.
        self.probe = SlotPool("probe", ConnectParams.from_config(config, f"{name}-probe"), 1)
        self.hot = SlotPool(
            "hot",
            ConnectParams.from_config(config, name),
            config.hot_slots_per_worker(),
            on_connect=warm_up,
        )
        self.lease_reclaim = LeaseReclaim(
            self,
            lease_slot(instance, worker_id),
            on_released=lambda queues: self.notify_many((queue, None) for queue in queues),
        )
        self.encryption = Encryption(config, self.hot)
        self.jwks = JwksKeys(config)
        self.batcher = Batcher(
            config,
            self.hot,
            open_pops=self.encryption.open_pop_results if self.encryption.can_decrypt else None,
            on_pushed=self._pushed,
            on_popped=self.recorder.popped,
            on_acked=self._acked,
            on_transaction=self._transacted,
            on_cycle=self._cycled,
            on_pop_undelivered=self.give_back_undelivered,
            lease_owner=self.lease_reclaim.owner,
            observer=self.recorder.call_done,
        )
        self.queue_scopes = QueueScopes(partial(queues.queue_scopes, self.hot))
        self.consumer_groups = ConsumerGroups(
            config,
            self.batcher.pop.submit,
            on_undelivered=self.give_back_undelivered,
            queue_scopes=self.queue_scopes,
        )
        self.cluster = Cluster(
            config,
            ConnectParams.from_config(config, f"{name}-cluster"),
            instance,
            gateway=worker_id == 0,
            on_wakes=self._cluster_woke,
            on_event=self._cluster_event,
            on_relaying=self._cluster_relaying,
        )
        self.siblings = SiblingWakeups(
            config.port,
            worker_id,
            config.num_workers,
            on_wake=self._sibling_woke,
            on_event=self._sibling_event,
            relaying=self.cluster.relaying,
        )
        self.file_buffer = FileBuffer(
            config,
            worker_directory(Path(config.file_buffer_dir), worker_id),
            self._replay,
            maintenance_on=lambda: self.flags.maintenance,
            orphans=worker_orphans(config, worker_id),
        )
        self.flags = SystemFlags(
            self.admin,
            on_maintenance_off=self.file_buffer.wake,
            on_set=lambda key, enabled: self.announce(SwitchChanged(key, enabled)),
        )
        self.ingest = PushPath(
            config, self.batcher.push.submit, self.file_buffer, self.flags, self.encryption
        )
        self.retention = RetentionServices(config, self.admin.params, worker_id=worker_id)
        self.metrics_sampler = MetricsSampler(
            config,
            worker_id,
            self.metrics,
            self.recorder,
            Watched(
                hot=self.hot,
                admin=self.admin,
                lanes=self.batcher.lanes,
                parked=lambda: self.consumer_groups.parked,
                parked_by_queue=lambda: self.consumer_groups.parked_by_queue,
                buffer_state=lambda: (
                    self.file_buffer.pending,
                    self.file_buffer.directory.failed,
                    self.file_buffer.db_healthy,
                ),
                maintenance=lambda: self.flags.maintenance,
                in_flight=lambda: self.in_flight,
            ),
        )
        self.metrics_janitor = MetricsJanitor(config, self.admin)
        self.table_statistics = TableStatistics(self.admin)
        self.in_flight = 0  # HTTP requests being answered (queen/metrics/asgi.py counts them)
        self.supervisor = Supervisor(f"worker-{worker_id}", self.children())
        self._nursery: trio.Nursery | None = None

    def children(self) -> list[Child]:
        """Started in this order, each ready before the next; all one-for-one (module doc)."""
        return [
            Child("admin-pool", self.admin.run),
            Child("probe-pool", self.probe.run),
            Child("hot-pool", self.hot.run),
            Child("sibling-link", self.siblings.run),
            *(Child(f"batcher-{lane.name}", lane.run) for lane in self.batcher.lanes),
            Child("queue-scopes", self.queue_scopes.run),
            Child("consumer-groups", self.consumer_groups.run),
            Child("system-flags", self.flags.run),
            *self.cluster.children(),
            Child("file-buffer", self.file_buffer.run),
            Child("retention", self.retention.run),
            Child("counters", self.counters.run),
            Child("metrics-sampler", self.metrics_sampler.run),
            Child("metrics-janitor", self.metrics_janitor.run),
            Child("table-statistics", self.table_statistics.run),
            Child("jwks", self.jwks.run),
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.supervisor.run)
            # One-shot, not a supervised actor: it finishes once the predecessor's leases are back.
            nursery.start_soon(self.lease_reclaim.run)
            nursery.start_soon(self.encryption.check_keys)
            task_status.started()

    def notify(self, queue: str | None, group: str | None = None) -> None:
        """Messages may be available in `queue` (None: any queue) for `group` (None: any group):
        wake the long-polls parked on it in this worker and in its sibling workers."""
        self.notify_many([(queue, group)])

    def notify_many(self, targets: Iterable[WakeTarget]) -> None:
        unique = set(targets)
        for queue, group in unique:
            self.consumer_groups.wake(queue, group)
        if unique:
            self.siblings.notify(unique)
            self.cluster.publish(unique)

    def announce(self, event: Event) -> None:
        """Something other instances' caches hold changed here (it is already applied here)."""
        self.siblings.announce(event)
        self.cluster.announce(event)

    # What the sibling link and the cluster report -----------------------------------------------
    def _sibling_woke(self, queue: str | None, group: str | None) -> None:
        """A sibling's news; worker 0 passes on what happened in its instance to the others
        (what a sibling heard from worker 0 came from outside and goes no further)."""
        self.consumer_groups.wake(queue, group)
        self.cluster.publish([(queue, group)])

    def _sibling_event(self, event: Event) -> None:
        self._apply(event)
        self.cluster.announce(event)

    def _cluster_woke(self, targets: list[WakeTarget]) -> None:
        for queue, group in targets:
            self.consumer_groups.wake(queue, group)
        self.siblings.notify(targets)

    def _cluster_relaying(self, relaying: bool) -> None:
        self.siblings.relay(relaying)

    def _cluster_event(self, event: Event) -> None:
        self._apply(event)
        self.siblings.announce(event)

    def _apply(self, event: Event) -> None:
        """Hints only (D-U4): forget what the event concerns, re-read it from PostgreSQL."""
        if isinstance(event, QueueChanged):
            self.queue_scopes.forget(event.queue)
            self.encryption.forget(event.queue)
        else:
            self.flags.poke()

    def count_in_flight(self, change: int) -> None:
        self.in_flight += change

    def begin_shutdown(self) -> None:
        self.shutting_down.set()
        self.consumer_groups.drain()

    async def _replay(self, items: list[PushItem]) -> list[dict[str, Any]]:
        """The disk buffer's replay stores through the push path (built after the buffer)."""
        return await self.ingest.store(items)

    # What the batcher reports after each call ---------------------------------------------------
    def _pushed(self, _items: Sequence[Any], results: list[Any]) -> None:
        queued = [result["queueName"] for result in results if result["status"] == "queued"]
        self.counters.messages_pushed += len(queued)
        self.recorder.pushed(queued)
        self.notify_many((queue, None) for queue in queued)

    def _acked(self, items: Sequence[Any], results: list[Any]) -> None:
        self.recorder.acked(items, results)
        self.notify_many(
            (r["queueName"], r["consumerGroup"]) for r in results if r.get("leaseReleased")
        )

    def _transacted(self, _items: Sequence[Any], results: list[Any]) -> None:
        self.recorder.transacted(results)
        outcome = results[0]
        if not outcome.get("success"):
            return
        targets: list[WakeTarget] = []
        for entry in outcome.get("results", []):
            if entry.get("type") == "push":
                self.counters.messages_pushed += 1
                targets.append((entry["queueName"], None))
            elif entry.get("leaseReleased"):
                targets.append((entry["queueName"], entry["consumerGroup"]))
        self.notify_many(targets)

    def _cycled(self, items: Sequence[Any], results: list[Any]) -> None:
        """A committed streaming cycle: its sink messages are poppable, and the source partition
        is free again for the query's group once the cycle released its lease."""
        outcome = results[0]
        if not outcome.get("success"):
            return
        queued = [r["queueName"] for r in outcome["push_results"] if r["status"] == "queued"]
        self.counters.messages_pushed += len(queued)
        targets: list[WakeTarget] = [(queue, None) for queue in queued]
        released = (outcome.get("ack_result") or {}).get("lease_released")
        if released and outcome.get("queueName"):
            targets.append((outcome["queueName"], items[0].consumer_group))
        self.notify_many(targets)

    def give_back_undelivered(self, result: Any) -> None:
        """The client left while its pop ran: give the partition back at once instead of letting
        the messages sit leased to nobody until the lease expires."""
        lease_id = result.get("leaseId") if isinstance(result, dict) else None
        if lease_id and result.get("messages") and self._nursery is not None:
            self._nursery.start_soon(self._release_lease, lease_id, result.get("queue"))

    async def _release_lease(self, lease_id: str, queue: str | None) -> None:
        try:
            await groups.release_lease(self, lease_id)
        except Exception as error:
            log.warning(
                "could not release an undelivered lease; it will expire",
                extra={"lease_id": lease_id, "error": str(error)},
            )
            return
        if queue:
            self.notify(queue)
