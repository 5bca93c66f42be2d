"""This instance's voice in the cluster: worker 0 of each `queen serve` tells the other instances
what happened here (messages available, a lease released, a queue changed, a switch flipped) and
turns what they say into local wake-ups and hints.

Only worker 0 talks to other instances: sibling workers reach it over the sibling link
(queen/sync/siblings.py), so each instance has one sender id, one session and one sequence, as
the protocol expects, and one UDP port. Two transports, one at a time:
- UDP (QUEEN_UDP_PEERS listed, D-U1...D-U10): a receiver actor and one supervised link per peer
  entry; the low-latency path.
- PostgreSQL LISTEN/NOTIFY (no peer list): one connection, for instances behind a plain load
  balancer; a NOTIFY is sent after the push committed, never inside its transaction.
Wake-ups are debounced per queue both ways (first at once, one more at the window's end).
Worker 0 also writes its stats where its siblings read them, so the shared-state route answers
the same in every worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import trio

from queen.actors.supervisor import Child
from queen.config import Config
from queen.db.connect import ConnectParams
from queen.sync.counters import SyncCounters
from queen.sync.debounce import Debouncer
from queen.sync.endpoint import Directory, Endpoint
from queen.sync.events import Event, QueueChanged, SwitchChanged
from queen.sync.link import PeerLink
from queen.sync.messages import (
    MaintenanceSet,
    Message,
    MessageAvailable,
    PartitionFree,
    QueueConfigDelete,
    QueueConfigSet,
)
from queen.sync.peers import parse_peers
from queen.sync.pg_notify import PgWaker
from queen.sync.siblings import WakeTarget, wake_directory

log = logging.getLogger("queen.sync")

WAKE_WINDOW_S = 0.05
STATS_INTERVAL_S = 0.25
STATS_STALE_S = 3.0
MIN_SECRET_LENGTH = 32


class Cluster:
    def __init__(
        self,
        config: Config,
        params: ConnectParams,
        instance_id: str,
        *,
        gateway: bool,
        on_wakes: Callable[[list[WakeTarget]], None],
        on_event: Callable[[Event], None],
        on_relaying: Callable[[bool], None] = lambda _relaying: None,
    ) -> None:
        """`on_relaying` hears when this worker starts or stops passing wake-ups on to other
        instances over NOTIFY (`relaying`)."""
        self.config = config
        self.gateway = gateway
        self.on_wakes = on_wakes
        self.on_event = on_event
        self.counters = SyncCounters()
        self.server_id = f"{socket.gethostname()}:{config.udp_notify_port}"
        self.stats_path = wake_directory(config.port) / "cluster.json"
        self.mode = _choose_mode(config, explain=gateway)
        self.outgoing: Debouncer[WakeTarget] = Debouncer(WAKE_WINDOW_S, self._send_wakes)
        self.incoming: Debouncer[WakeTarget] = Debouncer(WAKE_WINDOW_S, self._deliver_wakes)
        self.endpoint = Endpoint(
            server_id=self.server_id,
            bind_host=config.udp_bind,
            port=config.udp_notify_port,
            secret=config.sync_secret.encode(),
            recv_buffer_bytes=config.sync_recv_buffer_mb * 1024 * 1024,
            directory=Directory(),
            counters=self.counters,
        )
        self.links = [
            PeerLink(
                entry,
                self.endpoint,
                heartbeat_s=config.sync_heartbeat_ms / 1000,
                dead_after_s=config.sync_dead_threshold_ms / 1000,
                on_message=self._heard,
                counters=self.counters,
            )
            for entry in parse_peers(config.udp_peers, config.udp_notify_port)
        ]
        self.pg = PgWaker(
            params,
            instance_id,
            on_wakes=self.incoming.offer,
            on_event=self._hint,
            counters=self.counters,
            on_others=on_relaying,
        )

    @property
    def speaks(self) -> bool:
        """Whether this worker talks to other instances (worker 0, with a transport)."""
        return self.gateway and self.mode in ("udp", "pg_notify")

    @property
    def relaying(self) -> bool:
        """Whether it passes wake-ups on: UDP peers are listed, so always; over NOTIFY only
        while another instance listens (queen/sync/pg_notify.py)."""
        return self.speaks and (self.mode == "udp" or self.pg.others_present)

    def children(self) -> list[Child]:
        """The actors this worker runs for the cluster (none outside worker 0): one-for-one
        like every other child; a crashed peer link restarts alone."""
        if not self.gateway:
            return []
        if self.mode == "udp":
            transport = [
                Child("sync-receiver", self.endpoint.run),
                *(Child(link.name, link.run) for link in self.links),
            ]
        elif self.mode == "pg_notify":
            transport = [Child("sync-pg-notify", self.pg.run)]
        else:
            return []
        stats = []
        if self.config.num_workers > 1:
            stats = [Child("sync-stats", self._write_stats_forever)]
        return [
            Child("sync-outgoing", self.outgoing.run),
            Child("sync-incoming", self.incoming.run),
            *transport,
            *stats,
        ]

    # Outward -----------------------------------------------------------------------------------
    def publish(self, targets: Iterable[WakeTarget]) -> None:
        """Messages may be available (group None) or a lease of `group` ended, here."""
        if self.relaying:
            self.outgoing.offer(target for target in targets if target[0])

    def announce(self, event: Event) -> None:
        if not self.gateway:
            return
        if self.mode == "pg_notify":
            self.pg.send([], [event])
        elif self.mode == "udp":
            self.endpoint.send(_message_for(event), self._destinations())

    def _send_wakes(self, targets: list[WakeTarget]) -> None:
        if self.mode == "pg_notify":
            self.pg.send(targets, [])
            return
        destinations = self._destinations()
        ts = _now_ms()
        for queue, group in targets:
            assert queue is not None
            message: Message = (
                MessageAvailable(queue, "", ts)
                if group is None
                else PartitionFree(queue, "", group, ts)
            )
            self.endpoint.send(message, destinations)

    def _destinations(self) -> list[tuple[str, int]]:
        return sorted({address for link in self.links for address in link.addresses})

    # Inward ------------------------------------------------------------------------------------
    def _heard(self, message: Message) -> None:
        match message:
            case MessageAvailable(queue, _partition, _ts) if queue:
                self.counters.wakes_received += 1
                self.incoming.offer([(queue, None)])
            case PartitionFree(queue, _partition, group, _ts) if queue:
                self.counters.wakes_received += 1
                self.incoming.offer([(queue, group or None)])
            case QueueConfigSet(queue, _config, _version) if queue:
                self._hint(QueueChanged(queue))
            case QueueConfigDelete(queue) if queue:
                self._hint(QueueChanged(queue, deleted=True))
            case MaintenanceSet(enabled, _ts, pop):
                key = "pop_maintenance_mode" if pop else "maintenance_mode"
                self._hint(SwitchChanged(key, enabled))

    def _hint(self, event: Event) -> None:
        self.counters.hints_received += 1
        self.on_event(event)

    def _deliver_wakes(self, targets: list[WakeTarget]) -> None:
        self.counters.wakes_applied += len(targets)
        self.on_wakes(targets)

    # Stats -------------------------------------------------------------------------------------
    def shared_state(self) -> dict[str, Any]:
        """The original's shared-state object (D-U10) plus `mode` and `counters`; in a sibling
        worker, worker 0's last snapshot (none while it is older than 3 s: worker 0 is
        gone, or the file is a previous run's)."""
        off = {"enabled": False, "running": False, "server_id": self.server_id, "mode": "off"}
        if self.mode == "off":
            return off
        if not self.gateway:
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                if time.time() - self.stats_path.stat().st_mtime < STATS_STALE_S:
                    state: dict[str, Any] = orjson.loads(self.stats_path.read_bytes())
                    return state
            return {**off, "enabled": True, "mode": self.mode}
        running = self.endpoint.running if self.mode == "udp" else self.pg.listening
        state = {
            "enabled": self.mode in ("udp", "pg_notify"),
            "running": running,
            "server_id": self.server_id,
            "mode": self.mode,
            "counters": self.counters.snapshot(),
            "server_health": self._server_health(),
        }
        if self.mode == "udp":
            state["transport"] = self._transport()
        else:
            state["instances_heard"] = len(self.pg.others)
            state["relaying"] = self.relaying
        return state

    def _transport(self) -> dict[str, Any]:
        peers = [link.snapshot() for link in self.links]
        learned = {
            server_id: index for index, peer in enumerate(peers) for server_id in peer["servers"]
        }
        return {
            "server_id": self.server_id,
            "session_id": self.endpoint.session_id,
            "port": self.endpoint.port,
            "bind": self.endpoint.bind_host,
            "peer_count": len(peers),
            "learned_identities_count": len(learned),
            "peers": peers,
            "learned_identities": learned,
            "messages_sent": self.counters.packets_sent,
            "messages_received": self.counters.packets_received,
            "messages_dropped": self.counters.dropped_total,
            "signature_failures": self.counters.dropped["signature"],
            "sequence_rejections": self.counters.dropped["replay"],
        }

    def _server_health(self) -> dict[str, Any]:
        servers = [sender for link in self.links for sender in link.senders.values()]
        alive = sum(1 for sender in servers if sender.alive)
        return {
            "servers_tracked": len(servers),
            "servers_alive": alive,
            "servers_dead": len(servers) - alive,
            "heartbeats_received": self.counters.heartbeats_received,
            "restarts_detected": self.counters.restarts_detected,
        }

    async def _write_stats_forever(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        scratch = self.stats_path.with_suffix(".tmp")
        while True:
            with contextlib.suppress(OSError):
                scratch.write_bytes(orjson.dumps(self.shared_state()))
                os.replace(scratch, self.stats_path)
            await trio.sleep(STATS_INTERVAL_S)


def _message_for(event: Event) -> Message:
    if isinstance(event, QueueChanged):
        if event.deleted:
            return QueueConfigDelete(event.queue)
        return QueueConfigSet(event.queue, event.config)
    return MaintenanceSet(event.enabled, _now_ms(), pop=event.key == "pop_maintenance_mode")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _choose_mode(config: Config, *, explain: bool) -> str:
    """udp, pg_notify or off; `explain`: log why UDP sync will not run or is weak (once per
    instance: worker 0 does)."""
    if config.sync_peers_listed:
        if config.sync_secret or config.sync_allow_insecure:
            if explain and config.sync_secret and len(config.sync_secret) < MIN_SECRET_LENGTH:
                log.warning("QUEEN_SYNC_SECRET is shorter than 32 characters: use a longer one")
            return "udp"
        if explain:
            log.error(
                "QUEEN_UDP_PEERS is set but QUEEN_SYNC_SECRET is not: UDP sync stays off "
                "(set a secret, or QUEEN_SYNC_ALLOW_INSECURE=true to run unsigned)"
            )
        return "off"
    return "pg_notify" if config.sync_pg_notify else "off"
