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
their first look to their answer), plus one while it relays wake-ups to other instances (worker
0 with UDP peers listed, or over NOTIFY while another instance listens). A worker reads a
sibling's count after the commit that makes messages available and sends nothing to a sibling at
0. No wake-up is lost by that: the sibling's pop wrote its count before its first look was sent
to PostgreSQL, the look's snapshot came after that, a commit the look did not see became visible
after the snapshot, and the count is read after that commit's answer came back: every step is
ordered by a system call or a PostgreSQL lock, so the read sees the count. Without this, every
push and ack woke every sibling (a process wake-up, a scheduler pass, a datagram read and
parsed), for nothing when nobody there waits: pops with `wait=false` and workers without
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
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson
import trio

from queen.sync import events as cluster_events
from queen.sync.events import Event

log = logging.getLogger("queen.siblings")

MAX_DATAGRAM = 8192
_UNREAD = struct.Struct("i")  # SIOCOUTQ (TIOCOUTQ): bytes of our datagrams the sibling holds unread
_COUNT = struct.Struct("q")  # a worker's listening count, in its `w<N>.listeners` file
REPLACED_CHECK_S = 1.0

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
        relaying: bool = False,
    ) -> None:
        """`relaying`: this worker passes every wake-up on to other instances (see `relay`)."""
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
        self._relaying = relaying
        self._count = int(relaying)
        self._shared = _SharedCount(_count_path(self.directory, worker_id))

    def relay(self, relaying: bool) -> None:
        """While this worker passes wake-ups on to other instances it listens to every one of
        its siblings' (one more in its count)."""
        if relaying != self._relaying:
            self._relaying = relaying
            self._count_by(1 if relaying else -1)

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Around a pop that may park, entered before its first look: a sibling that reads 0
        after its commit sends no wake-up, so a pop counted any later could miss one (module
        doc)."""
        self._count_by(1)
        try:
            yield
        finally:
            self._count_by(-1)

    def _count_by(self, change: int) -> None:
        self._count += change
        self._shared.write(self._count)

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
        receiver: trio.socket.SocketType | None = None
        try:
            self._share_count()
            own_path.unlink(missing_ok=True)
            receiver = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            await receiver.bind(str(own_path))
            for sibling in self.siblings:
                sibling.open()
            self._open = True
            task_status.started()
            while True:
                datagram = await receiver.recv(MAX_DATAGRAM)
                self.received += 1
                targets, events = _unpack(datagram)
                for queue, group in targets:
                    self.on_wake(queue, group)
                for event in events:
                    self.on_event(event)
        finally:
            if receiver is not None:
                receiver.close()
            self._open = False
            self._shared.close()
            for sibling in self.siblings:
                sibling.close()
            with contextlib.suppress(OSError):
                os.unlink(own_path)

    def _share_count(self) -> None:
        """Before the socket is bound, so no sibling finds this worker reachable and its count
        out of date. A count that cannot be shared leaves no file behind: a sibling that cannot
        read one sends every wake-up, as before counts were shared."""
        try:
            self._shared.share(self._count)
        except OSError as error:
            log.warning(
                "cannot share this worker's count of waiting pops; siblings will wake it always",
                extra={"path": str(self._shared.path), "error": str(error)},
            )
            self._shared.close()
            with contextlib.suppress(OSError):
                os.unlink(self._shared.path)


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


def _count_path(directory: Path, worker_id: int) -> Path:
    return directory / f"w{worker_id}.listeners"


class _SharedCount:
    """One worker's listening count, in a file of 8 bytes mapped by that worker (read-write) and
    by each of its siblings (read-only). queen never replaces the file, so siblings' maps stay
    current across the worker's restarts; a reader still looks, at most once a second while the
    count reads 0, whether the file was deleted and created anew from outside (a temp-directory
    cleaner), since a map of the deleted file would read 0 for good."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        self._inode = 0
        self._checked_at = 0.0

    def share(self, count: int) -> None:
        """The owner's side: the file created if need be and `count` written through it, not
        the map (on a full disk, or into a sparse file, that is an OSError here rather than a
        SIGBUS at the first store), then mapped for writing."""
        self._open(os.O_RDWR | os.O_CREAT, share=_COUNT.pack(count))

    def _open(self, flags: int, *, share: bytes | None = None) -> None:
        """OSError when the file is missing, not a regular file, or (for a reader) short: a
        sibling still creating it."""
        descriptor = os.open(self.path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{self.path} is not a regular file")
            if share is not None:
                os.pwrite(descriptor, share, 0)
            elif info.st_size < _COUNT.size:
                raise OSError(f"{self.path} is not written whole yet")
            access = mmap.ACCESS_READ if share is None else mmap.ACCESS_WRITE
            self._map = mmap.mmap(descriptor, _COUNT.size, access=access)
            self._inode = info.st_ino
        finally:
            os.close(descriptor)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None

    def write(self, count: int) -> None:
        if self._map is not None:
            _COUNT.pack_into(self._map, 0, count)

    def read(self) -> int | None:
        """The sibling's count; None while it cannot be read."""
        if self._map is None:
            try:
                self._open(os.O_RDONLY)
            except OSError:
                return None
        assert self._map is not None
        count: int = _COUNT.unpack_from(self._map)[0]
        if count == 0 and self._replaced():
            self.close()
            return None
        return count

    def _replaced(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at < REPLACED_CHECK_S:
            return False
        self._checked_at = now
        try:
            return os.stat(self.path, follow_symlinks=False).st_ino != self._inode
        except OSError:
            return True


class _Sibling:
    """The socket this worker sends one sibling's wake-ups from, the sibling's listening count,
    and the targets in flight: those of every datagram sent since the sibling last had nothing of
    ours unread."""

    def __init__(self, directory: Path, worker_id: int) -> None:
        self.path = str(directory / f"w{worker_id}.sock")
        self.count = _SharedCount(_count_path(directory, worker_id))
        self.in_flight: set[WakeTarget] = set()
        self._socket: socket.socket | None = None

    def listens(self) -> bool:
        """Whether the sibling may have a pop to wake; yes while its count cannot be read."""
        return self.count.read() != 0

    def open(self) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self.count.close()
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
