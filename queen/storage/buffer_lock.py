"""The lock that gives one running instance its buffer directory. Apart from the buffer itself:
`queen serve` takes it before starting workers, and stays clear of the buffer's JSON codec."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class BufferLocked(RuntimeError):
    """Another live process owns this buffer directory."""


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
