"""The disk failover buffer's files: where pushes wait while PostgreSQL cannot take them.

Layout and record format are the original's, so buffers survive a switch of implementation in
either direction: `failover_<uuidv7>.buf.tmp` is the active file, renamed to `.buf` when finalized;
`failed/` holds files whose replay failed; a record is a 4-byte little-endian length followed by
compact UTF-8 JSON. Unlike the original we fsync before the client hears "buffered" (a power cut
cannot lose an acknowledged push), never delete a leftover `.tmp` (it is finalized and replayed),
and keep the directory private (0700, files 0600) because payloads of encrypted queues are
plaintext here until replay encrypts them.

Everything in this module is blocking file I/O; the actor calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from queen.ids import uuid7_str

log = logging.getLogger("queen.file_buffer")

LENGTH = struct.Struct("<I")
MAX_RECORD_BYTES = 10 * 1024 * 1024
ACTIVE_SUFFIX = ".buf.tmp"
FINAL_SUFFIX = ".buf"
POISON_PREFIX = "poison_"
REPLAYABLE_PREFIXES = ("failover_", "qos0_", POISON_PREFIX)
LOCK_NAME = ".lock"


class BufferLocked(RuntimeError):
    """Another live process owns this buffer directory."""


def encode(record: dict[str, Any]) -> bytes:
    body = orjson.dumps(record)
    if len(body) > MAX_RECORD_BYTES:
        raise ValueError("record larger than the 10 MiB a buffer record may hold")
    return LENGTH.pack(len(body)) + body


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every intact record of a file. A truncated tail (power cut mid-write) ends the file; a record
    whose JSON does not parse is skipped with a log line and the rest still replays."""
    data = path.read_bytes()
    offset = 0
    while offset + LENGTH.size <= len(data):
        (length,) = LENGTH.unpack_from(data, offset)
        if length == 0 or length > MAX_RECORD_BYTES:
            log.warning(
                "buffer file has a bad record length; ignoring the rest",
                extra={"file": path.name, "offset": offset},
            )
            return
        start = offset + LENGTH.size
        if start + length > len(data):
            log.warning(
                "buffer file ends in a truncated record; ignoring it",
                extra={"file": path.name, "offset": offset},
            )
            return
        offset = start + length
        try:
            record = orjson.loads(data[start:offset])
        except orjson.JSONDecodeError:
            log.warning(
                "skipping a corrupt buffer record", extra={"file": path.name, "offset": start}
            )
            continue
        if isinstance(record, dict):
            yield record
    if offset < len(data):
        log.warning("buffer file ends in a truncated length prefix", extra={"file": path.name})


def count_records(path: Path) -> int:
    """Records in a file, reading only the length prefixes."""
    count = 0
    try:
        with open(path, "rb") as handle:
            while True:
                prefix = handle.read(LENGTH.size)
                if len(prefix) < LENGTH.size:
                    return count
                (length,) = LENGTH.unpack(prefix)
                if length == 0 or length > MAX_RECORD_BYTES:
                    return count
                handle.seek(length, os.SEEK_CUR)
                if handle.tell() > os.fstat(handle.fileno()).st_size:
                    return count
                count += 1
    except FileNotFoundError:
        return count


def lock_directory(path: Path) -> int:
    """Hold an exclusive lock on `path` for as long as the returned descriptor stays open (the
    kernel drops it when the process dies, so a crashed instance never blocks its successor)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BufferLocked(
            f"buffer directory {path} is in use by another running queen; "
            "each instance needs its own FILE_BUFFER_DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        for leftover in sorted(self.path.glob(f"*{ACTIVE_SUFFIX}")):
            if leftover.stat().st_size == 0:
                leftover.unlink()
            else:
                self._finalize(leftover)
        # Records in failed/ are still waiting for the database: they count as pending too, or
        # bufferedMessages would reach 0 while a previous run's failed files are unreplayed.
        self.failed = sum(count_records(p) for p in self.failed_files())
        self.pending = sum(count_records(p) for p in self.replayable_files()) + self.failed

    def close(self) -> None:
        self.finalize_active()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write and fsync a group of records; return only once they are on disk."""
        if self._active_fd is None or self.active_events >= self.events_per_file:
            self.finalize_active()
            self._active = self.path / f"failover_{uuid7_str()}{ACTIVE_SUFFIX}"
            self._active_fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            _fsync_dir(self.path)
        blob = b"".join(encode(record) for record in records)
        written = os.write(self._active_fd, blob)
        if written != len(blob):
            raise OSError(f"short write to {self._active}: {written} of {len(blob)} bytes")
        os.fdatasync(self._active_fd)
        self.active_events += len(records)
        self.pending += len(records)

    def finalize_active(self) -> None:
        if self._active_fd is None or self._active is None:
            return
        os.close(self._active_fd)
        active, self._active, self._active_fd = self._active, None, None
        self.active_events = 0
        if active.stat().st_size == 0:
            active.unlink()
            return
        self._finalize(active)

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
        return sorted(files, key=lambda p: p.name.split("_", 1)[1])

    def failed_files(self) -> list[Path]:
        files = [p for p in self.failed_dir.iterdir() if p.name.endswith(FINAL_SUFFIX)]
        return sorted(files, key=lambda p: p.name.split("_", 1)[-1])

    def move_to_failed(self, path: Path, records: int) -> None:
        prefix = path.name.split("_", 1)[0]
        path.rename(self.failed_dir / f"{prefix}_{uuid7_str()}{FINAL_SUFFIX}")
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
            handle.write(b"".join(encode(record) for record in records))
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
