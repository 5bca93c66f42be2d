"""The disk failover buffer's files: where pushes wait while PostgreSQL cannot take them.

Layout and record format are the original's, so buffers survive a switch of implementation in
either direction: `failover_<uuidv7>.buf.tmp` is the active file, renamed to `.buf` when finalized;
`failed/` holds files whose replay failed; a record is a 4-byte little-endian length followed by
compact UTF-8 JSON. Unlike the original we fsync before the client hears "buffered" (a power cut
cannot lose an acknowledged push), never delete a leftover `.tmp` (it is finalized and replayed),
cut a failed append back off its file and write on in a new one (so no torn record ever sits in
front of acknowledged ones), keep a failed file's name (its uuidv7 is its place in the replay
order), and keep the directory private (0700, files 0600): payloads sit here as the clients sent
them.

Everything in this module is blocking file I/O; the actor calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from queen.ids import uuid7_str
from queen.storage.buffer_lock import lock_directory

log = logging.getLogger("queen.file_buffer")

LENGTH = struct.Struct("<I")
MAX_RECORD_BYTES = 10 * 1024 * 1024
ACTIVE_SUFFIX = ".buf.tmp"
FINAL_SUFFIX = ".buf"
POISON_PREFIX = "poison_"
REPLAYABLE_PREFIXES = ("failover_", "qos0_", POISON_PREFIX)
OPEN_BRACE, CLOSE_BRACE = ord("{"), ord("}")


class RecordTooLarge(ValueError):
    """A record over the 10 MiB a buffer record may hold (the original's reader stops there)."""


def encode(record: dict[str, Any]) -> bytes:
    body = orjson.dumps(record)
    if len(body) > MAX_RECORD_BYTES:
        raise RecordTooLarge(
            f"a buffered message may hold at most {MAX_RECORD_BYTES} bytes; this one has "
            f"{len(body)}"
        )
    return LENGTH.pack(len(body)) + body


def encode_records(records: list[dict[str, Any]]) -> bytes:
    return b"".join(encode(record) for record in records)


def _record_end(data: bytes, header: int) -> int | None:
    """Where a record framed at `header` would end, or None when none can be: the length fits the
    file and the body opens with `{` and closes with `}`, as a compact JSON object does."""
    size = len(data)
    if header + LENGTH.size >= size:
        return None
    length: int = LENGTH.unpack_from(data, header)[0]
    start = header + LENGTH.size
    end = start + length
    if not 0 < length <= MAX_RECORD_BYTES or end > size:
        return None
    if data[start] != OPEN_BRACE or data[end - 1] != CLOSE_BRACE:
        return None
    return end


def _next_frame(data: bytes, offset: int) -> tuple[int, int] | None:
    """(header, end) of the first frame at or after `offset`.

    Past a damaged spot only a position whose length has a zero high byte (every length below
    16 MiB has) right before a `{` can start a record. JSON text never holds a zero byte, so
    the search cannot stop inside a record's body: it stops at the next real record, or at a
    frame spanning one, which then fails to parse (the lengths inside hold zero bytes)."""
    end = _record_end(data, offset)
    if end is not None:
        return offset, end
    brace = data.find(b"{", offset + LENGTH.size + 1)
    while brace != -1:
        header = brace - LENGTH.size
        if data[brace - 1] == 0 and (end := _record_end(data, header)) is not None:
            return header, end
        brace = data.find(b"{", brace + 1)
    return None


def _followed_by_a_record(data: bytes, end: int) -> bool:
    """The file ends at `end`, or what follows starts like a record: a length with a zero high
    byte, then `{`."""
    following = data[end : end + LENGTH.size + 1]
    return not following or (
        len(following) > LENGTH.size
        and following[LENGTH.size - 1] == 0
        and following[LENGTH.size] == OPEN_BRACE
    )


def _parses(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


def read_records(path: Path, *, warn: bool = True) -> Iterator[dict[str, Any]]:
    """Every intact record of a file. Bytes that frame no record (a torn append an older version
    left in place, a damaged record) are skipped with a log line (unless `warn` is off: a read
    that replay repeats) and reading goes on at the next record, so nothing acknowledged after
    them is lost; a torn tail ends the file."""
    data = path.read_bytes()
    offset = 0
    unreadable_from: int | None = None
    while (found := _next_frame(data, offset)) is not None:
        header, end = found
        if header > offset and unreadable_from is None:
            unreadable_from = offset
        try:
            record = orjson.loads(data[header + LENGTH.size : end])
        except orjson.JSONDecodeError:
            # Framed like a record but not one: look for records inside it too (a torn record's
            # length can span intact records appended after it).
            unreadable_from = header if unreadable_from is None else unreadable_from
            offset = header + 1
            continue
        if unreadable_from is not None:
            if warn:
                log.warning(
                    "skipping a corrupt buffer record; reading on at the next intact one",
                    extra={"file": path.name, "offset": unreadable_from},
                )
            unreadable_from = None
        offset = end
        if isinstance(record, dict):
            yield record
    if offset < len(data) and warn:
        log.warning(
            "buffer file ends in a truncated record; ignoring it",
            extra={
                "file": path.name,
                "offset": offset if unreadable_from is None else unreadable_from,
            },
        )


def count_records(path: Path) -> int:
    """Records a file frames, found as `read_records` finds them but parsing a record only where
    no record follows it (damage). Exact for what this version writes; in a file an older
    version tore in the middle it can be off by the records a torn spot happens to frame, which
    only parsing tells (`read_records` is what replays). The file is read, not mapped: a mapping
    of the active file would fault if a failed append cut it shorter meanwhile."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    count, offset = 0, 0
    while (found := _next_frame(data, offset)) is not None:
        header, end = found
        if _followed_by_a_record(data, end) or _parses(data[header + LENGTH.size : end]):
            count, offset = count + 1, end
        else:
            offset = header + 1
    return count


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _order_key(path: Path) -> str:
    """A file's place in the replay order: the uuidv7 it was created with, whatever its prefix."""
    return path.name.split("_", 1)[-1]


@dataclass
class BufferDirectory:
    """One process's buffer directory, locked for as long as the process lives."""

    path: Path
    events_per_file: int = 10_000
    # False only for FILE_BUFFER_DIR itself, which `queen serve` locks for the instance's life.
    lock: bool = True
    _lock_fd: int | None = None
    _active: Path | None = None
    _active_fd: int | None = None
    _active_size: int = 0  # bytes of acknowledged records in the active file
    active_events: int = 0
    pending: int = 0
    failed: int = 0

    @property
    def failed_dir(self) -> Path:
        return self.path / "failed"

    def open(self) -> None:
        """Create, lock, finalize leftovers of a previous run and count what waits for replay."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.failed_dir.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        if self.lock:
            self._lock_fd = lock_directory(self.path)
        self._finalize_leftovers()
        # Records in failed/ are still waiting for the database: they count as pending too, or
        # bufferedMessages would reach 0 while a previous run's failed files are unreplayed.
        self.failed = sum(count_records(p) for p in self.failed_files())
        self.pending = sum(count_records(p) for p in self.replayable_files()) + self.failed

    def close(self) -> None:
        self.finalize_active()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def append(self, blob: bytes, records: int) -> None:
        """Write and fsync `records` encoded records; return only once they are on disk.

        On any failure the file is cut back to its acknowledged records and retired, so the next
        append starts a new file: a torn record must not sit in front of records acknowledged
        later, and a descriptor whose fsync failed may report success for lost pages next time."""
        try:
            if self._active_fd is None or self.active_events >= self.events_per_file:
                self.finalize_active()
                self._open_active()
            assert self._active_fd is not None
            view = memoryview(blob)
            while view:  # a short write is followed by one that reports why (ENOSPC, EDQUOT, ...)
                view = view[os.write(self._active_fd, view) :]
            os.fdatasync(self._active_fd)
        except OSError:
            self._abandon_active()
            raise
        self._active_size += len(blob)
        self.active_events += records
        self.pending += records

    def _open_active(self) -> None:
        self._active = self.path / f"failover_{uuid7_str()}{ACTIVE_SUFFIX}"
        self._active_fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active_size = 0
        _fsync_dir(self.path)

    def _abandon_active(self) -> None:
        """Cut what a failed append left off the active file and retire it. If even that fails,
        the torn bytes stay at the very end of a file nobody appends to again, which replay
        reads up to."""
        if self._active_fd is None:
            return
        try:
            os.ftruncate(self._active_fd, self._active_size)
            os.fdatasync(self._active_fd)
        except OSError as error:
            log.error(
                "could not cut a failed append off a buffer file; replay will skip its torn tail",
                extra={"file": str(self._active), "error": str(error)},
            )
        try:
            self.finalize_active()
        except OSError as error:  # left as .tmp: the next finalize_active picks it up
            log.error(
                "could not finalize a buffer file after a failed append",
                extra={"error": str(error)},
            )

    def finalize_active(self) -> None:
        """Finalize the active file, and any other `.tmp` that a failed rename left behind."""
        if self._active_fd is not None:
            fd, self._active_fd, self._active = self._active_fd, None, None
            self.active_events = self._active_size = 0
            with contextlib.suppress(OSError):
                os.close(fd)
        self._finalize_leftovers()

    def _finalize_leftovers(self) -> None:
        for leftover in sorted(self.path.glob(f"*{ACTIVE_SUFFIX}"), key=_order_key):
            if leftover.stat().st_size == 0:
                leftover.unlink()
            else:
                self._finalize(leftover)

    def _finalize(self, path: Path) -> None:
        path.rename(path.with_name(path.name[: -len(ACTIVE_SUFFIX)] + FINAL_SUFFIX))
        _fsync_dir(path.parent)

    @property
    def has_active(self) -> bool:
        return self._active_fd is not None

    def replayable_files(self) -> list[Path]:
        """Finalized files in replay order: oldest name (uuidv7) first."""
        files = [
            p
            for p in self.path.iterdir()
            if p.name.endswith(FINAL_SUFFIX) and p.name.startswith(REPLAYABLE_PREFIXES)
        ]
        return sorted(files, key=_order_key)

    def replay_queue(self) -> list[Path]:
        """The files that may replay now, oldest first: none newer than a file still waiting in
        failed/, or a partition's later pushes would reach PostgreSQL before its earlier ones."""
        files = self.replayable_files()
        waiting = [p for p in self.failed_files() if not p.name.startswith(POISON_PREFIX)]
        if waiting:
            oldest_waiting = _order_key(waiting[0])
            files = [p for p in files if _order_key(p) < oldest_waiting]
        return files

    def files_to_replay(self) -> list[Path]:
        """Every file whose records will replay: the finalized ones and the failed ones that
        come back (quarantined files stay until an operator moves them back)."""
        waiting = [p for p in self.failed_files() if not p.name.startswith(POISON_PREFIX)]
        return self.replayable_files() + waiting

    def holds_replayable(self) -> bool:
        return self.has_active or bool(self.files_to_replay())

    def failed_files(self) -> list[Path]:
        files = [p for p in self.failed_dir.iterdir() if p.name.endswith(FINAL_SUFFIX)]
        return sorted(files, key=_order_key)

    def move_to_failed(self, path: Path, records: int) -> None:
        """Park a file whose replay failed. It keeps its name, so when it comes back it still
        replays before every file created after it."""
        path.rename(self.failed_dir / path.name)
        _fsync_dir(self.failed_dir)
        self.failed += records

    def retry_failed(self, all_of_them: bool) -> int:
        """Move failed files back for another replay (all, or just the oldest as a probe).

        Quarantined (`poison_`) files stay: their records failed every attempt already, and
        retrying them each second would only repeat the error; an operator moves one back into
        the directory to replay it once the cause is fixed."""
        files = [p for p in self.failed_files() if not p.name.startswith(POISON_PREFIX)]
        if not all_of_them:
            files = files[:1]
        for path in files:
            records = count_records(path)
            path.rename(self.path / path.name)
            self.failed = max(0, self.failed - records)
        if files:
            _fsync_dir(self.path)
        return len(files)

    def quarantine(self, records: list[dict[str, Any]]) -> Path:
        """Records PostgreSQL rejected, set aside in failed/ so they stop blocking their file.

        They are still undelivered messages: they stay in `pending` and `failed` (the file they
        came from is about to be counted out by `replayed`) until an operator replays them."""
        target = self.failed_dir / f"{POISON_PREFIX}{uuid7_str()}{FINAL_SUFFIX}"
        with open(target, "wb") as handle:
            handle.write(encode_records(records))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(self.failed_dir)
        self.pending += len(records)
        self.failed += len(records)
        return target

    def replayed(self, path: Path, records: int) -> None:
        path.unlink()
        _fsync_dir(self.path)
        self.pending = max(0, self.pending - records)

    def stats(self) -> dict[str, Any]:
        return {
            "pendingCount": self.pending,
            "failedCount": self.failed,
            "failedFiles": failed_files_summary(self.failed_files()),
        }


SCAN_ATTEMPTS = 5


def _buffer_files(root: Path) -> list[Path]:
    """Every buffer file under FILE_BUFFER_DIR: each worker's directory and its failed/ (and the
    root itself, the original's single-directory layout)."""
    found = [
        path
        for pattern in ("*.buf*", "*/*.buf*", "*/*/*.buf*")
        for path in root.glob(pattern)
        if path.name.startswith(REPLAYABLE_PREFIXES)
        and path.name.endswith((FINAL_SUFFIX, ACTIVE_SUFFIX))
    ]
    return sorted(found)


def scan_buffers(root: Path) -> dict[str, Any]:
    """Pending and failed records of every worker's buffer, counted from the files themselves.

    Each worker process tracks only its own buffer, so its counters cannot answer "is everything
    in the database?" for the instance: a client polling bufferedMessages would get 0 from one
    worker while another still holds records. Files move between a directory and its failed/
    while we count; a rename in that window could hide one, so the count is redone until the
    listing before and after it agree."""
    files: list[Path] = []
    counts: dict[Path, int] = {}
    for _ in range(SCAN_ATTEMPTS):
        try:
            files = _buffer_files(root)
        except FileNotFoundError:
            files = []
        counts = {path: count_records(path) for path in files}
        if _buffer_files(root) == files:
            break
    failed_files = [p for p in files if p.parent.name == "failed"]
    return {
        "pendingCount": sum(counts.values()),
        "failedCount": sum(counts[p] for p in failed_files),
        "failedFiles": failed_files_summary(failed_files),
    }


def failed_files_summary(failed_files: list[Path]) -> dict[str, Any]:
    """The `failedFiles` block of the maintenance endpoint (original field names)."""
    total_bytes = 0
    for path in failed_files:
        with contextlib.suppress(FileNotFoundError):
            total_bytes += path.stat().st_size
    return {
        "count": len(failed_files),
        "totalBytes": total_bytes,
        "totalMB": round(total_bytes / 1024 / 1024, 3),
        "failoverCount": sum(p.name.startswith("failover_") for p in failed_files),
        "qos0Count": sum(p.name.startswith("qos0_") for p in failed_files),
    }


def worker_directory(root: Path, worker_id: int) -> Path:
    """Each worker process owns a subdirectory; the original's layout has one per process."""
    return root / f"w{worker_id}"


def orphan_directories(root: Path, num_workers: int) -> list[Path]:
    """Buffers of worker indexes this run lacks (NUM_WORKERS shrank); worker 0 drains them."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in root.iterdir():
            index = entry.name[1:]
            if entry.is_dir() and entry.name.startswith("w") and index.isdigit():
                found.extend([entry] if int(index) >= num_workers else [])
    return sorted(found)
