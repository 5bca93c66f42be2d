"""Wake-ups between the worker processes of one server.

A push commits in whichever worker the kernel gave its connection to, while the consumers waiting
for it may be parked in any other worker. Each worker binds a unix datagram socket in a private
directory named after the HTTP port, and after anything that makes messages available sends the
(queue, consumer group or null) pairs concerned to its siblings, as a JSON array, and they wake
their parked pops at once instead of at their next backoff re-check. Datagrams are best effort: a
lost one only costs that re-check.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
import trio

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

    def notify(self, targets: Iterable[WakeTarget]) -> None:
        """Tell every sibling what to wake; never blocks, never raises."""
        if not self.siblings or self._sender is None:
            return
        for datagram in _pack(targets):
            for path in self.siblings:
                with contextlib.suppress(OSError):
                    self._sender.sendto(datagram, path)
                    self.sent += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self.siblings:
            task_status.started()
            return
        _private_directory(self.directory)
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
                for queue, group in _unpack(datagram):
                    self.on_wake(queue, group)
        finally:
            receiver.close()
            self._sender.close()
            self._sender = None
            with contextlib.suppress(OSError):
                os.unlink(own_path)


def _private_directory(path: Path) -> None:
    """The sockets' directory sits in the shared temporary directory: another local user who
    created it first (or planted a symlink there) could read or forge wake-ups, so an existing
    one must be a real directory of ours that nobody else may enter."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{path} must be a directory owned by this user with mode 0700; remove it"
        )


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


def _unpack(datagram: bytes) -> list[WakeTarget]:
    """What a sibling sent; anything malformed is dropped (a lost wake-up costs one re-check)."""
    try:
        pairs = orjson.loads(datagram)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(pairs, list):
        return []
    return [
        (pair[0], pair[1])
        for pair in pairs
        if isinstance(pair, list)
        and len(pair) == 2
        and (pair[0] is None or isinstance(pair[0], str))
        and (pair[1] is None or isinstance(pair[1], str))
    ]
