"""One peer link: the actor that owns everything this instance knows about one QUEEN_UDP_PEERS
entry - the addresses it resolves to now, the heartbeat sent to them, each sender's session and
sequence window, and whether each sender behind it is alive.

It re-resolves its name every RESOLVE_INTERVAL_S (a headless service gains and loses pods), leaves
out addresses that are this instance itself (D-U7), and tells the receiver which source addresses
are its own (D-U3). Packets the receiver verified arrive in its inbox; those its windows admit
become messages for the instance. Liveness is informational (D-U9): nothing but the stats reacts
to a dead peer. A crashed link is restarted by its supervisor with empty state, which costs at most
a few refused-as-replayed packets and one heartbeat period of "unknown".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from queen.sync.counters import SyncCounters
from queen.sync.endpoint import Arrival, Endpoint
from queen.sync.messages import Heartbeat, Message, from_packet, payload_ts
from queen.sync.peers import Address, PeerEntry, is_self, resolve
from queen.sync.window import SenderWindow

log = logging.getLogger("queen.sync")

RESOLVE_INTERVAL_S = 30.0
RESOLVE_RETRY_S = 1.0
INBOX_SIZE = 1024


@dataclass
class Sender:
    """A server seen behind this link, by the id it announces."""

    window: SenderWindow = field(default_factory=SenderWindow)
    address: Address | None = None
    last_heartbeat: float | None = None
    heartbeat_session: str | None = None
    alive: bool = False


class PeerLink:
    def __init__(
        self,
        entry: PeerEntry,
        endpoint: Endpoint,
        *,
        heartbeat_s: float,
        dead_after_s: float,
        on_message: Callable[[Message], None],
        counters: SyncCounters,
    ) -> None:
        self.entry = entry
        self.name = f"sync-peer-{entry.label}"
        self.endpoint = endpoint
        self.heartbeat_s = heartbeat_s
        self.dead_after_s = dead_after_s
        self.on_message = on_message
        self.counters = counters
        self.addresses: set[Address] = set()
        self.own_addresses: set[Address] = set()
        self.senders: dict[str, Sender] = {}
        self._heartbeats_sent = 0
        self._inbox_in, self._inbox = trio.open_memory_channel[Arrival](INBOX_SIZE)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.addresses, self.own_addresses, self.senders = set(), set(), {}
        self._inbox_in, self._inbox = trio.open_memory_channel[Arrival](INBOX_SIZE)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._resolve_forever)
                nursery.start_soon(self._heartbeat_forever)
                task_status.started()
                async for arrival in self._inbox:
                    self._admit(arrival)
        finally:
            self.endpoint.directory.withdraw(self.name)

    def _deliver(self, arrival: Arrival) -> None:
        try:
            self._inbox_in.send_nowait(arrival)
        except trio.WouldBlock:
            self.counters.drop("overload")

    # Addresses ---------------------------------------------------------------------------------
    async def _resolve_forever(self) -> None:
        while True:
            found = await resolve(self.entry, self.endpoint.family)
            self._adopt(found)
            await trio.sleep(RESOLVE_INTERVAL_S if found else RESOLVE_RETRY_S)

    def _adopt(self, found: set[Address]) -> None:
        own = {a for a in found if is_self(a, self.endpoint.bind_host, self.endpoint.port)}
        self.own_addresses |= own
        addresses = found - self.own_addresses
        if addresses != self.addresses:
            log.info(
                "cluster sync: peer addresses changed",
                extra={"peer": self.entry.label, "addresses": sorted(map(str, addresses))},
            )
        self.addresses = addresses
        self.endpoint.directory.assign(self.name, addresses, self._deliver)

    # Heartbeats and liveness -------------------------------------------------------------------
    async def _heartbeat_forever(self) -> None:
        while True:
            destinations = sorted(self.addresses)
            self._heartbeats_sent += len(destinations)
            heartbeat = Heartbeat(self.endpoint.session_id, self._heartbeats_sent, _now_ms())
            self.endpoint.send(heartbeat, destinations)
            self._check_alive()
            await trio.sleep(self.heartbeat_s)

    def _check_alive(self) -> None:
        now = trio.current_time()
        for server_id, sender in self.senders.items():
            alive = sender.last_heartbeat is not None and now - sender.last_heartbeat < (
                self.dead_after_s
            )
            if alive != sender.alive:
                (log.info if alive else log.warning)(
                    "cluster sync: peer " + ("alive" if alive else "dead"),
                    extra={"peer": server_id},
                )
            sender.alive = alive

    # Packets -----------------------------------------------------------------------------------
    def _admit(self, arrival: Arrival) -> None:
        packet = arrival.packet
        if (
            packet.sender_id == self.endpoint.server_id
            and packet.session_id == self.endpoint.wire_session
        ):
            self.counters.drop("self")
            self.own_addresses.add(arrival.source)
            self._adopt(self.addresses)
            return
        sender = self.senders.setdefault(packet.sender_id, Sender())
        refusal = sender.window.admit(
            packet.session_id, packet.sequence, payload_ts(packet.payload), _now_ms()
        )
        if refusal is not None:
            self.counters.drop(refusal)
            return
        sender.address = arrival.source
        message = from_packet(packet)
        if isinstance(message, Heartbeat):
            self._heard(sender, message)
        elif message is not None:
            self.on_message(message)

    def _heard(self, sender: Sender, heartbeat: Heartbeat) -> None:
        self.counters.heartbeats_received += 1
        if sender.heartbeat_session not in (None, heartbeat.session_id):
            self.counters.restarts_detected += 1
        sender.heartbeat_session = heartbeat.session_id
        sender.last_heartbeat = trio.current_time()
        if not sender.alive:
            self._check_alive()

    def snapshot(self) -> dict[str, Any]:
        """This link in the shape of the original's `transport.peers` entries, plus the servers
        seen behind it."""
        now = trio.current_time()
        first = min(self.addresses) if self.addresses else None
        learned = sorted(self.senders)
        return {
            "hostname": self.entry.host,
            "config_server_id": self.entry.config_server_id,
            "port": self.entry.port,
            "resolved": bool(self.addresses),
            "resolved_ip": first[0] if first else None,
            "resolved_addresses": [f"{ip}:{port}" for ip, port in sorted(self.addresses)],
            "self_addresses": [f"{ip}:{port}" for ip, port in sorted(self.own_addresses)],
            "learned_server_id": learned[0] if learned else None,
            "servers": {
                server_id: {
                    "alive": sender.alive,
                    "last_heartbeat_ms_ago": None
                    if sender.last_heartbeat is None
                    else math.floor((now - sender.last_heartbeat) * 1000),
                    "session_id": sender.window.session,
                    "restarts": sender.window.restarts,
                }
                for server_id, sender in sorted(self.senders.items())
            },
        }


def _now_ms() -> int:
    return int(time.time() * 1000)
