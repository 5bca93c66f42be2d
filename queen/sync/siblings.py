"""Wake-ups between the worker processes of one server.

A push commits in whichever worker the kernel gave its connection to, while the consumers waiting
for it may be parked in any other worker. Each worker binds a unix datagram socket in a private
directory named after the HTTP port, and after anything that makes messages available sends the
(queue, consumer group or null) pairs concerned to its siblings, as a JSON array, and they wake
their parked pops at once instead of at their next backoff re-check. Datagrams are best effort: a
lost one only costs that re-check. The same arrays carry cluster events (queue settings changed,
a switch flipped; queen/sync/events.py) as JSON objects among the pairs.

One in flight per target and sibling: while the last datagram sent to a sibling is still unread
(its socket's queue holds it: the kernel charges an unread datagram to the sender's socket, so
each sibling gets a socket of its own, and SIOCOUTQ is non-zero), a notification whose targets
that datagram already carries is not sent. The sibling reads that datagram after this push
committed and wakes its parked pops then (a pop between its empty look and parking looks again,
seeing the wake count moved), so dropping the repeat delays no one. A push burst into a busy
sibling costs one datagram per read, not one per push batch; each datagram carries every target
sent since the sibling last caught up, which is what makes "the last one is unread" enough.
Events are rare and always sent.

Only to a sibling that listens. Each worker keeps, in a file of 8 bytes in the same directory
mapped into every sibling's memory, how many of its pops may park right now (counted from before
their first look to their answer), plus one for good when it relays wake-ups to other instances
(worker 0 with a cluster transport). A worker reads a sibling's count after the commit that makes
messages available and sends nothing to a sibling at 0. No wake-up is lost by that: the sibling's
pop counted itself before its first look reached PostgreSQL, so a commit that look did not see
ended after the count was written, and the read after that commit's answer sees it. Without
this, every push and ack woke every sibling (a process wake-up, a scheduler pass, a datagram read
and parsed), for nothing when nobody there waits: pops with `wait=false` and workers without
consumers (measured in docs/performance.md, "Wake-ups nobody waits for").
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import socket
import stat
import struct
import tempfile
import termios
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson
import trio

from queen.sync import events as cluster_events
from queen.sync.events import Event

log = logging.getLogger("queen.siblings")

MAX_DATAGRAM = 8192
_UNREAD = struct.Struct("i")  # SIOCOUTQ (TIOCOUTQ): bytes of our datagrams the sibling holds unread
_LISTENERS = struct.Struct("q")  # a worker's listening count, in its `w<N>.listeners` file

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
        *,
        relays: bool = False,
    ) -> None:
        """`relays`: this worker passes every wake-up on to other instances, so it always
        listens."""
        self.directory = wake_directory(port)
        self.worker_id = worker_id
        self.on_wake = on_wake
        self.on_event = on_event
        self.siblings = [
            _Sibling(self.directory, index) for index in range(num_workers) if index != worker_id
        ]
        self.sent = 0
        self.received = 0
        self._open = False
        self._listeners = int(relays)
        self._published: mmap.mmap | None = None

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """While a pop that may park runs, from before its first look to its answer: siblings
        send this worker their wake-ups (module doc)."""
        self._publish(1)
        try:
            yield
        finally:
            self._publish(-1)

    def _publish(self, change: int) -> None:
        self._listeners += change
        if self._published is not None:
            _LISTENERS.pack_into(self._published, 0, self._listeners)

    def notify(self, targets: Iterable[WakeTarget]) -> None:
        """Tell every sibling what to wake; never blocks, never raises."""
        if not self._open:
            return
        wanted = set(targets)
        for sibling in self.siblings:
            self.sent += sibling.notify(wanted)

    def announce(self, event: Event) -> None:
        """Tell every sibling about a cluster event; never blocks, never raises."""
        if not self._open:
            return
        datagram = orjson.dumps([cluster_events.to_json(event)])
        for sibling in self.siblings:
            self.sent += sibling.send(datagram)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self.siblings:
            task_status.started()
            return
        _private_directory(self.directory)
        own_path = self.directory / f"w{self.worker_id}.sock"
        own_path.unlink(missing_ok=True)
        receiver = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await receiver.bind(str(own_path))
        self._published = _map(_listeners_path(self.directory, self.worker_id), writable=True)
        self._publish(0)
        for sibling in self.siblings:
            sibling.open()
        self._open = True
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
            self._open = False
            if self._published is not None:
                self._published.close()
                self._published = None
            for sibling in self.siblings:
                sibling.close()
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


def _listeners_path(directory: Path, worker_id: int) -> Path:
    return directory / f"w{worker_id}.listeners"


def _map(path: Path, *, writable: bool) -> mmap.mmap:
    """A worker's listening count, shared: its own file read-write (created at 8 bytes; the
    same file, never replaced, so siblings' maps of it stay current across its restarts), or a
    sibling's read-only. OSError while the sibling has not created it yet."""
    flags = (os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY) | os.O_NOFOLLOW
    descriptor = os.open(path, flags, 0o600)
    try:
        if writable and os.fstat(descriptor).st_size < _LISTENERS.size:
            os.ftruncate(descriptor, _LISTENERS.size)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        return mmap.mmap(descriptor, _LISTENERS.size, access=access)
    except ValueError as error:  # a file shorter than a count: not created whole yet
        raise OSError(str(error)) from error
    finally:
        os.close(descriptor)


class _Sibling:
    """The socket this worker sends one sibling's wake-ups from, the sibling's listening count,
    and the targets in flight: those of every datagram sent since the sibling last had nothing of
    ours unread."""

    def __init__(self, directory: Path, worker_id: int) -> None:
        self.path = str(directory / f"w{worker_id}.sock")
        self.listeners_path = _listeners_path(directory, worker_id)
        self.in_flight: set[WakeTarget] = set()
        self._socket: socket.socket | None = None
        self._listeners: mmap.mmap | None = None

    def listens(self) -> bool:
        """Whether the sibling may have a pop to wake; yes while its count cannot be read."""
        if self._listeners is None:
            try:
                self._listeners = _map(self.listeners_path, writable=False)
            except OSError:
                return True
        return bool(_LISTENERS.unpack_from(self._listeners)[0])

    def open(self) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._listeners is not None:
            self._listeners.close()
            self._listeners = None
        self.in_flight.clear()

    def notify(self, targets: set[WakeTarget]) -> int:
        """Send what `targets` adds to the unread datagram, if anything; the datagrams sent."""
        if self._socket is None or not self.listens():
            return 0
        if self.in_flight and not self._unread():
            self.in_flight.clear()
        if targets <= self.in_flight:
            return 0
        carried = self.in_flight | targets
        datagrams = _pack(carried)
        sent = sum(self.send(datagram) for datagram in datagrams)
        # Only a single datagram that arrived whole can stand for everything in flight.
        self.in_flight = carried if sent == 1 == len(datagrams) else set()
        return sent

    def send(self, datagram: bytes) -> int:
        """One datagram to the sibling: 1 if the kernel took it, else 0 (never raises)."""
        if self._socket is None:
            return 0
        with contextlib.suppress(OSError):
            self._socket.sendto(datagram, self.path)
            return 1
        return 0

    def _unread(self) -> bool:
        assert self._socket is not None
        try:
            raw = fcntl.ioctl(self._socket.fileno(), termios.TIOCOUTQ, bytes(_UNREAD.size))
        except OSError:
            return False
        return bool(_UNREAD.unpack(raw)[0])


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
