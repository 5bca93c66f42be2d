"""Wake-ups between the worker processes of one server.

A push commits in whichever worker the kernel gave its connection to, while the consumers waiting
for it may be parked in any other worker. Each worker binds a unix datagram socket in a private
directory named after the HTTP port, and after anything that makes messages available sends the
(queue, consumer group or null) pairs concerned to its siblings, as a JSON array, and they wake
their parked pops at once instead of at their next backoff re-check. Datagrams are best effort: a
lost one only costs that re-check. The same arrays carry cluster events (queue settings changed,
a switch flipped; queen/sync/events.py) as JSON objects among the pairs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import trio

from queen.sync import events as cluster_events
from queen.sync.events import Event

log = logging.getLogger("queen.siblings")

MAX_DATAGRAM = 8192

WakeTarget = tuple[str | None, str | None]  # None: every queue / every group


def wake_directory(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"queen-{port}-wake"


class SiblingWakeups:
    def __init__(
        self,
        port: int,
        worker_id: int,
        num_workers: int,
        on_wake: Callable[[str | None, str | None], None],
        on_event: Callable[[Event], None] = lambda _event: None,
    ) -> None:
        self.directory = wake_directory(port)
        self.worker_id = worker_id
        self.on_wake = on_wake
        self.on_event = on_event
        self.siblings = [
            str(self.directory / f"w{index}.sock")
            for index in range(num_workers)
            if index != worker_id
        ]
        self.sent = 0
        self.received = 0
        self._sender: socket.socket | None = None

    def notify(self, targets: Iterable[WakeTarget]) -> None:
        """Tell every sibling what to wake; never blocks, never raises."""
        self._send(_pack(targets))

    def announce(self, event: Event) -> None:
        """Tell every sibling about a cluster event; never blocks, never raises."""
        self._send([orjson.dumps([cluster_events.to_json(event)])])

    def _send(self, datagrams: list[bytes]) -> None:
        if not self.siblings or self._sender is None:
            return
        for datagram in datagrams:
            for path in self.siblings:
                with contextlib.suppress(OSError):
                    self._sender.sendto(datagram, path)
                    self.sent += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self.siblings:
            task_status.started()
            return
        self.directory.mkdir(mode=0o700, exist_ok=True)
        own_path = self.directory / f"w{self.worker_id}.sock"
        own_path.unlink(missing_ok=True)
        receiver = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await receiver.bind(str(own_path))
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        task_status.started()
        try:
            while True:
                datagram = await receiver.recv(MAX_DATAGRAM)
                self.received += 1
                targets, events = _unpack(datagram)
                for queue, group in targets:
                    self.on_wake(queue, group)
                for event in events:
                    self.on_event(event)
        finally:
            receiver.close()
            self._sender.close()
            self._sender = None
            with contextlib.suppress(OSError):
                os.unlink(own_path)


def _pack(targets: Iterable[WakeTarget]) -> list[bytes]:
    """The targets as JSON arrays of [queue, group] pairs, as few datagrams as fit. A pair too
    large for any datagram (names are at most a few hundred bytes) wakes more rather than less:
    the whole queue, or everything."""
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 2
    for queue, group in targets:
        encoded = orjson.dumps([queue, group])
        if len(encoded) + 2 > MAX_DATAGRAM:
            encoded = orjson.dumps([queue, None])
        if len(encoded) + 2 > MAX_DATAGRAM:
            encoded = orjson.dumps([None, None])
        if current and size + len(encoded) + 1 > MAX_DATAGRAM:
            datagrams.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
        current.append(encoded)
        size += len(encoded) + 1
    if current:
        datagrams.append(b"[" + b",".join(current) + b"]")
    return datagrams


def _unpack(datagram: bytes) -> tuple[list[WakeTarget], list[Event]]:
    """What a sibling sent; anything malformed is dropped (a lost wake-up costs one re-check)."""
    try:
        entries = orjson.loads(datagram)
    except orjson.JSONDecodeError:
        return [], []
    if not isinstance(entries, list):
        return [], []
    targets: list[WakeTarget] = [
        (pair[0], pair[1])
        for pair in entries
        if isinstance(pair, list)
        and len(pair) == 2
        and (pair[0] is None or isinstance(pair[0], str))
        and (pair[1] is None or isinstance(pair[1], str))
    ]
    events = [
        event
        for entry in entries
        if isinstance(entry, dict) and (event := cluster_events.from_json(entry)) is not None
    ]
    return targets, events
