"""The UDP actors of cluster sync under their supervisor: a crashed peer link or receiver is
restarted alone and the link goes on heartbeating; a listener's datagrams reach the new receiver.
A fake peer (a plain UDP socket) stands on the other side, over IPv4 (the peer given by name) and
IPv6 (D-U8); no database is needed."""

from __future__ import annotations

import socket
import time

import pytest
import trio

from queen.actors.cluster import Cluster
from queen.actors.supervisor import Supervisor
from queen.config import Config
from queen.db.connect import ConnectParams
from queen.sync import packet as codec
from queen.sync.messages import Heartbeat, MessageAvailable, from_packet, to_payload
from tests.integration.cluster_helpers import free_udp_port

SECRET = "supervision-test-secret-of-32-chars-or-more"


async def next_heartbeat(peer: trio.socket.SocketType) -> Heartbeat:
    with trio.fail_after(5):
        while True:
            datagram = await peer.recv(2048)
            message = from_packet(codec.decode(datagram, SECRET.encode()))
            if isinstance(message, Heartbeat):
                return message


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("family", "host", "entry"),
    [(socket.AF_INET, "127.0.0.1", "localhost:{}"), (socket.AF_INET6, "::1", "[::1]:{}")],
)
async def test_crashed_udp_actors_restart_alone(
    family: socket.AddressFamily, host: str, entry: str
) -> None:
    peer = trio.socket.socket(family, socket.SOCK_DGRAM)
    await peer.bind((host, 0))
    peer_port = peer.getsockname()[1]
    own_port = free_udp_port(host)
    config = Config.from_env(
        {
            "PG_HOST": "unused",
            "QUEEN_UDP_PEERS": entry.format(peer_port),
            "QUEEN_UDP_NOTIFY_PORT": str(own_port),
            "QUEEN_UDP_BIND": host,
            "QUEEN_SYNC_SECRET": SECRET,
            "QUEEN_SYNC_HEARTBEAT_MS": "50",
        }
    )
    woken: list[list[tuple[str | None, str | None]]] = []
    arrived = trio.Event()

    def on_wakes(targets: list[tuple[str | None, str | None]]) -> None:
        woken.append(targets)
        arrived.set()

    cluster = Cluster(
        config,
        ConnectParams.from_config(config, "unused"),
        "instance",
        gateway=True,
        on_wakes=on_wakes,
        on_event=lambda _event: None,
    )
    supervisor = Supervisor("sync", cluster.children())
    link_name = f"sync-peer-{entry.format(peer_port)}"
    assert {child.name for child in supervisor.children} >= {"sync-receiver", link_name}
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        first = await next_heartbeat(peer)
        supervisor.kill(link_name)
        supervisor.kill("sync-receiver")
        after = await next_heartbeat(peer)
        assert after.session_id == first.session_id  # the same instance, a new link incarnation
        code, payload = to_payload(MessageAvailable("orders", "", int(time.time() * 1000)))
        datagram = codec.encode(codec.Packet(code, "peer:1", "abc", 1, payload), SECRET.encode())
        with trio.fail_after(5):
            while not arrived.is_set():  # the receiver may still be rebinding: resend
                await peer.sendto(datagram, (host, own_port))
                with trio.move_on_after(0.2):
                    await arrived.wait()
        nursery.cancel_scope.cancel()
    assert woken[0] == [("orders", None)]
    peer.close()
