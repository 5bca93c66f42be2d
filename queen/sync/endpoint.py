"""The UDP socket of cluster sync: sending packets from this instance, and the receiver actor that
reads every datagram, drops and counts what is not a packet from a peer, and hands the rest to the
link of the peer it came from.

The socket is bound without SO_REUSEPORT (a second process on the port would silently take part
of the traffic, D-U8) and packets are sent from it, so their source port is the listening port,
as the original's are. Checks run cheapest first: the source address (D-U3), the size, the
version, the signature; what the sender's session and sequence allow is its link's business.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from queen.sync import packet as codec
from queen.sync.counters import SyncCounters
from queen.sync.messages import Message, to_payload
from queen.sync.peers import Address

log = logging.getLogger("queen.sync")


@dataclass(frozen=True)
class Arrival:
    """A verified packet and where it came from, as a link's inbox receives it."""

    packet: codec.Packet
    source: Address


class Directory:
    """Which peer link each source address belongs to. Links enter the addresses they resolve;
    the receiver only looks up. Exact (address, port) first, then any link of that address:
    D-U3 filters by address, and an original peer may send from another port."""

    def __init__(self) -> None:
        self._by_link: dict[str, tuple[set[Address], Callable[[Arrival], None]]] = {}

    def assign(
        self, link: str, addresses: set[Address], deliver: Callable[[Arrival], None]
    ) -> None:
        self._by_link[link] = (set(addresses), deliver)

    def withdraw(self, link: str) -> None:
        self._by_link.pop(link, None)

    def route(self, source: Address) -> Callable[[Arrival], None] | None:
        fallback = None
        for addresses, deliver in self._by_link.values():
            if source in addresses:
                return deliver
            if fallback is None and any(ip == source[0] for ip, _ in addresses):
                fallback = deliver
        return fallback


class Endpoint:
    """This instance's identity on the wire and its socket; the receiver actor owns the socket's
    lifetime, links send through `send`."""

    def __init__(
        self,
        *,
        server_id: str,
        bind_host: str,
        port: int,
        secret: bytes,
        recv_buffer_bytes: int,
        directory: Directory,
        counters: SyncCounters,
    ) -> None:
        self.server_id = server_id[: codec.SENDER_ID_BYTES]
        self.session_id = secrets.token_hex(8)
        self.bind_host = bind_host
        self.port = port
        self.secret = secret
        self.recv_buffer_bytes = recv_buffer_bytes
        self.directory = directory
        self.counters = counters
        self.family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        self.running = False
        self._sequence = 0
        self._socket: socket.socket | None = None

    @property
    def wire_session(self) -> str:
        return self.session_id[: codec.SESSION_ID_BYTES]

    def send(self, message: Message, destinations: list[Address]) -> None:
        """One packet (one sequence number) to every destination; never blocks, never raises:
        a datagram that cannot leave now is counted and lost, like one lost on the network."""
        if self._socket is None or not destinations:
            return
        self._sequence += 1
        type_code, payload = to_payload(message)
        datagram = codec.encode(
            codec.Packet(type_code, self.server_id, self.wire_session, self._sequence, payload),
            self.secret,
        )
        for destination in destinations:
            try:
                self._socket.sendto(datagram, destination)
                self.counters.packets_sent += 1
            except OSError:
                self.counters.send_errors += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The receiver actor. A port that cannot be bound leaves sync off (logged), the server
        running: wake-ups then fall back to the pops' own re-checks."""
        raw = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if self.family == socket.AF_INET6:
                raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer_bytes)
            raw.bind((self.bind_host, self.port))
        except OSError as error:
            raw.close()
            log.error(
                "cluster sync: cannot bind the UDP port; sync stays off",
                extra={"bind": f"{self.bind_host}:{self.port}", "error": str(error)},
            )
            task_status.started()
            return
        raw.setblocking(False)
        receiver = trio.socket.from_stdlib_socket(raw)
        self._socket, self.running = raw, True
        task_status.started()
        try:
            while True:
                datagram, source = await receiver.recvfrom(codec.MAX_DATAGRAM + 1)
                self.receive(datagram, (str(source[0]), int(source[1])))
        finally:
            self._socket, self.running = None, False
            receiver.close()

    def receive(self, datagram: bytes, source: Address) -> None:
        self.counters.packets_received += 1
        deliver = self.directory.route(source)
        if deliver is None:
            self.counters.drop("not_peer")
            return
        try:
            packet = codec.decode(datagram, self.secret)
        except codec.Refused as refused:
            self.counters.drop(refused.reason)
            return
        deliver(Arrival(packet, source))
