"""Buffered pushes of one partition reach PostgreSQL in the order they were buffered, however many
replay attempts fail on the way: a file that failed waits in failed/ under its own name, and no
newer file replays before it.

The drain loop runs for real against a scripted push that is refused for lack of a database a
given number of times: the recovery probes (one a second) are what used to reorder files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from queen.actors.file_buffer import FileBuffer
from queen.actors.slots import DatabaseUnavailable
from queen.config import Config
from queen.db.items import PushItem
from queen.ids import uuid7_str
from queen.storage.file_buffer import BufferDirectory, encode_records
from tests.support import buffered_record


def buffer_file(directory: Path, txids: list[str]) -> Path:
    path = directory / f"failover_{uuid7_str()}.buf"
    path.write_bytes(encode_records([buffered_record(t, partition="p") for t in txids]))
    return path


class FlakyDatabase:
    """Refuses the first `outage_calls` pushes as unreachable, then stores in call order."""

    def __init__(self, outage_calls: int, expected: int) -> None:
        self.outage_calls = outage_calls
        self.expected = expected
        self.calls = 0
        self.stored: list[str] = []
        self.all_stored = trio.Event()

    async def push(self, items: list[PushItem]) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.outage_calls:
            raise DatabaseUnavailable("connection refused")
        self.stored += [item.transaction_id for item in items]
        if len(self.stored) >= self.expected:
            self.all_stored.set()
        return [{"status": "queued"} for _ in items]


async def test_files_replay_in_buffered_order_after_failed_probes(tmp_path: Path) -> None:
    directory = tmp_path / "w0"
    directory.mkdir()
    files = [buffer_file(directory, [f"{n}a", f"{n}b"]) for n in range(1, 4)]
    expected = ["1a", "1b", "2a", "2b", "3a", "3b"]
    # The first replay fails, then four probes: the old renaming sent the oldest file behind
    # the others after the second.
    db = FlakyDatabase(outage_calls=5, expected=len(expected))
    config = Config.from_env({}, file_buffer_dir=str(tmp_path))
    buffer = FileBuffer(config, directory, db.push, maintenance_on=lambda: False)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(buffer.run)
            await db.all_stored.wait()
            nursery.cancel_scope.cancel()
    print(f"\n[replay-order] calls={db.calls} stored={db.stored} files={[p.name for p in files]}")
    assert db.stored == expected


def test_a_failed_file_keeps_its_place_in_the_replay_queue(tmp_path: Path) -> None:
    directory = BufferDirectory(tmp_path / "w0", lock=False)
    directory.open()
    oldest, middle, newest = (buffer_file(directory.path, [name]) for name in "abc")
    directory.move_to_failed(oldest, 1)
    assert directory.replay_queue() == [], "nothing newer than a waiting file may replay"
    directory.move_to_failed(middle, 1)
    assert [p.name for p in directory.failed_files()] == [oldest.name, middle.name]
    directory.retry_failed(all_of_them=False)
    assert directory.replay_queue() == [oldest], "the probe is the oldest file"
    directory.move_to_failed(oldest, 1)
    directory.retry_failed(all_of_them=True)
    assert directory.replay_queue() == [oldest, middle, newest]
