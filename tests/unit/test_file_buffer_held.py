"""A partition the buffer holds records for keeps its new pushes behind them: the buffer counts
what it holds per (queue, partition), from its files at start and from every append, and lets a
held push go only once the replay has stored those records, or after HOLD_BACK_S.

The drain loop runs for real against a database the test opens and closes, so each case decides
when the replay may store anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import trio

from queen.actors.file_buffer import HOLD_BACK_S, FileBuffer, buffer_record
from queen.config import Config
from queen.db.items import PushItem
from queen.ids import uuid7_str
from queen.storage.file_buffer import encode_records
from tests.support import buffered_record


class GatedDatabase:
    """Stores pushes once `open` is set; until then every push waits."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.stored: list[str] = []

    async def push(self, items: list[PushItem]) -> list[dict[str, Any]]:
        await self.open.wait()
        self.stored += [item.transaction_id for item in items]
        return [{"status": "queued"} for _ in items]


def item(partition: str, txid: str = "new") -> PushItem:
    return PushItem(
        queue="q",
        partition=partition,
        transaction_id=txid,
        message_id=uuid7_str(),
        payload=msgspec.Raw(b"{}"),
    )


def write_file(
    directory: Path, partition: str, txids: list[str], prefix: str = "failover_"
) -> None:
    records = [buffered_record(t, partition=partition) for t in txids]
    (directory / f"{prefix}{uuid7_str()}.buf").write_bytes(encode_records(records))


def new_buffer(tmp_path: Path, db: GatedDatabase) -> FileBuffer:
    config = Config.from_env({}, file_buffer_dir=str(tmp_path), file_buffer_flush_ms=20)
    return FileBuffer(config, tmp_path / "w0", db.push, maintenance_on=lambda: False)


async def test_records_on_disk_at_start_hold_their_partitions_until_replayed(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "w0"
    (directory / "failed").mkdir(parents=True)
    write_file(directory, "finalized", ["f1", "f2"])
    write_file(directory / "failed", "failed", ["x1"])
    write_file(directory / "failed", "quarantined", ["poison1"], prefix="poison_")
    db = GatedDatabase()
    buffer = new_buffer(tmp_path, db)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(buffer.run)
            assert buffer.holding()
            assert not await buffer.behind_buffered([item("elsewhere")])
            assert not await buffer.behind_buffered([item("quarantined")]), "set aside, not held"
            db.open.set()
            assert not await buffer.behind_buffered([item("finalized"), item("failed")])
            assert sorted(db.stored) == ["f1", "f2", "x1"]
            assert not buffer.holding()
            nursery.cancel_scope.cancel()


async def test_a_held_push_waits_for_the_replay_and_no_longer_than_hold_back(
    tmp_path: Path,
) -> None:
    db = GatedDatabase()
    buffer = new_buffer(tmp_path, db)
    with trio.fail_after(10 + HOLD_BACK_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(buffer.run)
            assert not buffer.holding()
            await buffer.append([buffer_record(item("p", "buffered"))])
            assert buffer.holding()
            started = trio.current_time()
            assert await buffer.behind_buffered([item("p")]), "still held: goes to the buffer"
            waited = trio.current_time() - started
            assert HOLD_BACK_S <= waited < HOLD_BACK_S + 1
            db.open.set()
            assert not await buffer.behind_buffered([item("p")])
            assert db.stored == ["buffered"]
            assert not buffer.holding()
            nursery.cancel_scope.cancel()
