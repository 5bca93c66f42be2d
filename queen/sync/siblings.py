"""Wake-ups between the worker processes of one server.

A push commits in whichever worker the kernel gave its connection to, while the consumers waiting
for it may be parked in any other worker. Each worker binds a unix datagram socket in a private
directory named after the HTTP port, and after a commit sends the names of the queues that got
messages (or released a lease) to its siblings, which wake their parked pops at once instead of
at their next backoff re-check. Datagrams are best effort: a lost one only costs that re-check.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

log = logging.getLogger("queen.siblings")

MAX_DATAGRAM = 8192
SEPARATOR = "\n"


def wake_directory(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"queen-{port}-wake"


class SiblingWakeups:
    def __init__(
        self, port: int, worker_id: int, num_workers: int, on_wake: Callable[[str], None]
    ) -> None:
        self.directory = wake_directory(port)
        self.worker_id = worker_id
        self.on_wake = on_wake
        self.siblings = [
            str(self.directory / f"w{index}.sock")
            for index in range(num_workers)
            if index != worker_id
        ]
        self.sent = 0
        self.received = 0
        self._sender: socket.socket | None = None

    def notify(self, queues: Iterable[str]) -> None:
        """Tell every sibling which queues to wake; never blocks, never raises."""
        if not self.siblings or self._sender is None:
            return
        for datagram in _pack(queues):
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
                for queue in datagram.decode(errors="replace").split(SEPARATOR):
                    if queue:
                        self.on_wake(queue)
        finally:
            receiver.close()
            self._sender.close()
            self._sender = None
            with contextlib.suppress(OSError):
                os.unlink(own_path)


def _pack(queues: Iterable[str]) -> list[bytes]:
    """Queue names joined into as few datagrams as fit."""
    datagrams: list[bytes] = []
    current = b""
    for queue in queues:
        encoded = queue.encode()
        if current and len(current) + len(encoded) + 1 > MAX_DATAGRAM:
            datagrams.append(current)
            current = b""
        current = encoded if not current else current + SEPARATOR.encode() + encoded
    if current:
        datagrams.append(current)
    return datagrams
