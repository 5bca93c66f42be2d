"""Who the peers are: the QUEEN_UDP_PEERS list parsed into entries, each entry resolved to the
addresses it names right now, and the test that an address is this instance itself.

An entry may be one host or a DNS name that resolves to many pods (a Kubernetes headless service);
its peer link (queen/sync/link.py) re-resolves it periodically, so pods that come and go are
followed without a restart. Parsing keeps the original's leniency (schemes and a trailing slash
dropped, a bad port means the default one) and adds `[v6]:port` (D-U8).
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

import trio

Address = tuple[str, int]


@dataclass(frozen=True)
class PeerEntry:
    host: str
    port: int

    @property
    def label(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def config_server_id(self) -> str:
        """The id the peer most likely announces: the first DNS label (whole host when it is
        an address) and the port, which is what a StatefulSet pod calls itself."""
        if self.host[:1].isdigit() or ":" in self.host:
            return f"{self.host}:{self.port}"
        return f"{self.host.split('.', 1)[0]}:{self.port}"


def parse_peers(text: str, default_port: int) -> list[PeerEntry]:
    """Entries in list order, duplicates and empty items dropped."""
    entries: list[PeerEntry] = []
    for raw in text.split(","):
        item = raw.strip(" \t")
        for scheme in ("http://", "https://"):
            if item.startswith(scheme):
                item = item[len(scheme) :]
        item = item.removesuffix("/")
        if not item:
            continue
        entry = _split(item, default_port)
        if entry not in entries:
            entries.append(entry)
    return entries


def _split(item: str, default_port: int) -> PeerEntry:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        return PeerEntry(host, _port(rest.removeprefix(":"), default_port))
    if item.count(":") > 1:  # a bare IPv6 literal
        return PeerEntry(item, default_port)
    host, colon, port = item.rpartition(":")
    if not colon:
        return PeerEntry(item, default_port)
    return PeerEntry(host, _port(port, default_port))


def _port(text: str, default_port: int) -> int:
    with contextlib.suppress(ValueError):
        port = int(text)
        if 0 < port < 65536:
            return port
    return default_port


async def resolve(entry: PeerEntry, family: int) -> set[Address]:
    """Every address `entry` names now, in the socket's family (IPv4 names become v4-mapped
    addresses on an IPv6 socket). An unresolvable name yields nothing, not an error: it is
    retried at the next round."""
    lookup_family = socket.AF_INET if family == socket.AF_INET else socket.AF_UNSPEC
    try:
        infos = await trio.socket.getaddrinfo(
            entry.host, entry.port, lookup_family, socket.SOCK_DGRAM
        )
    except OSError:
        return set()
    found: set[Address] = set()
    for info_family, *_, sockaddr in infos:
        ip = str(sockaddr[0])
        if family == socket.AF_INET6 and info_family == socket.AF_INET:
            ip = f"::ffff:{ip}"
        found.add((ip, entry.port))
    return found


def is_self(address: Address, bind_host: str, own_port: int) -> bool:
    """Whether `address` reaches this instance's own socket: our port on our bound address, or
    on any local address when bound to all of them (D-U7)."""
    ip, port = address
    if port != own_port:
        return False
    if bind_host not in ("0.0.0.0", "::", ""):
        return _same_ip(ip, bind_host)
    return is_local_ip(ip)


def _same_ip(left: str, right: str) -> bool:
    return left.removeprefix("::ffff:") == right.removeprefix("::ffff:")


def is_local_ip(ip: str) -> bool:
    """An address of this host: one a socket can bind."""
    plain = ip.removeprefix("::ffff:")
    family = socket.AF_INET6 if ":" in plain else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((plain, 0))
    except OSError:
        return False
    return True
