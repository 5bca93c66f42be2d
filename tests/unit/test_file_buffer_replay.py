"""Replay of one buffer file against a scripted database: records PostgreSQL rejects are
quarantined without blocking the rest, and a database lost half-way keeps the whole file.

The scripted push stands in for the push path so each case can decide, per call, whether the
database takes the items, rejects their content, or is gone; these are the branches a real
outage only reaches by chance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from queen.actors.file_buffer import POISON_ATTEMPTS, FileBuffer
from queen.config import Config
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.db.items import PushItem
from queen.ids import uuid7_str
from queen.storage.file_buffer import count_records, encode, read_records

Decide = Callable[[list[PushItem], int], None]


class ScriptedDatabase:
    """Stores what `decide` lets through; `decide(items, call_number)` raises to refuse."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self.calls = 0
        self.stored: list[str] = []

    async def push(self, items: list[PushItem]) -> list[dict[str, Any]]:
        self.calls += 1
        self.decide(items, self.calls)
        self.stored += [item.transaction_id for item in items]
        return [{"status": "queued"} for _ in items]


def poison(items: list[PushItem], _call: int) -> None:
    if any(item.transaction_id.startswith("bad") for item in items):
        raise DatabaseError('invalid input syntax for type uuid: "not-a-uuid"', "22P02")


def buffer_with_file(tmp_path: Path, db: ScriptedDatabase, txids: list[str]) -> FileBuffer:
    config = Config.from_env({}, file_buffer_dir=str(tmp_path))
    buffer = FileBuffer(config, tmp_path / "w0", db.push, maintenance_on=lambda: False)
    buffer.directory.open()
    records = [
        {"queue": "q", "partition": "Default", "payload": {}, "transactionId": t, "failover": True}
        for t in txids
    ]
    (tmp_path / "w0" / f"failover_{uuid7_str()}.buf").write_bytes(
        b"".join(encode(r) for r in records)
    )
    buffer.directory.pending = len(records)
    return buffer


async def replay_all(buffer: FileBuffer) -> list[bool]:
    directory = buffer.directory
    return [await buffer._replay(directory, path) for path in directory.replayable_files()]


async def test_rejected_records_are_quarantined_after_retries_and_stay_there(
    tmp_path: Path,
) -> None:
    db = ScriptedDatabase(poison)
    buffer = buffer_with_file(tmp_path, db, ["ok1", "bad1", "ok2", "bad2", "ok3"])
    try:
        assert await replay_all(buffer) == [True]
        directory = buffer.directory
        quarantined = directory.failed_files()
        print(
            f"\n[poison] stored={db.stored} calls={db.calls} "
            f"quarantined={[r['transactionId'] for r in read_records(quarantined[0])]} "
            f"pending={directory.pending} failed={directory.failed}"
        )
        assert sorted(db.stored) == ["ok1", "ok2", "ok3"]
        assert db.calls == 1 + 3 + 2 * POISON_ATTEMPTS  # the chunk, then each record alone
        assert [p.name.split("_")[0] for p in quarantined] == ["poison"]
        assert [r["transactionId"] for r in read_records(quarantined[0])] == ["bad1", "bad2"]
        assert (directory.pending, directory.failed) == (2, 2), "still undelivered"
        assert directory.retry_failed(True) == 0, "a quarantined file is not retried by itself"
        assert count_records(quarantined[0]) == 2
    finally:
        buffer.directory.close()


async def test_database_lost_while_isolating_rejects_keeps_the_whole_file(tmp_path: Path) -> None:
    def rejects_then_goes_away(items: list[PushItem], call: int) -> None:
        if call >= 3:
            raise DatabaseUnavailable("connection refused")
        poison(items, call)

    db = ScriptedDatabase(rejects_then_goes_away)
    buffer = buffer_with_file(tmp_path, db, ["ok1", "bad1", "ok2"])
    try:
        assert await replay_all(buffer) == [False], "the replay stops; nothing escapes"
        directory = buffer.directory
        failed = directory.failed_files()
        print(
            f"\n[poison-outage] stored={db.stored} failed_files={[p.name for p in failed]} "
            f"pending={directory.pending} failed={directory.failed} healthy={buffer.db_healthy}"
        )
        assert [p.name.split("_")[0] for p in failed] == ["failover"], "no poison file yet"
        assert count_records(failed[0]) == 3, "the file is kept whole"
        assert (directory.pending, directory.failed, buffer.db_healthy) == (3, 3, False)
    finally:
        buffer.directory.close()
