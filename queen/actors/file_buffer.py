"""The file-buffer actor: appends pushes that PostgreSQL cannot take right now to disk, and replays
them through the normal push path once it can.

Appends are group-committed: every request waiting when a write starts shares one write and one
fdatasync, and each gets its answer only after that fsync; a request holding a record over the
10 MiB cap is refused (413) on its own, and a failed write or fsync fails only the requests in it.
The drain loop finalizes an idle active file, replays finalized files oldest first in chunks of
FILE_BUFFER_MAX_BATCH (order kept within a partition), deduplicated by transactionId, so a crash
during replay never doubles a message. A file that fails for lack of a database moves to
`failed/` under its own name and comes back for another try, and no newer file replays while it
waits (a partition's order holds across files); a record PostgreSQL rejects outright (five times)
is quarantined in `failed/poison_*.buf` so it cannot block the rest, and stays there (still
counted as pending) until an operator replays it. Replay stores through the push path's
`store`, which encrypts what a record of an encrypted queue still holds in clear (written by an
earlier version) and never a record marked encrypted.

Order across an outage: the actor counts, per (queue, partition), the records it holds that
replay has not stored or quarantined yet (counted at append, recounted from the files whenever it
starts, taken off once a file is through). While a partition has any, the push path sends its new
pushes behind them (`behind_buffered`): it waits up to HOLD_BACK_S for the replay to catch up and
then goes to PostgreSQL, or appends to the buffer. A waiting push adds nothing to the backlog, so
the replay, which stores records in batches, catches up under any load it can outrun one push at
a time. Only this worker's buffer is known here: another worker may push to the same partition
straight to PostgreSQL while this one still holds earlier records for it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson
import trio

from queen.actors.mailbox import Reply, deliver
from queen.config import Config
from queen.db.errors import DatabaseError, is_availability_error
from queen.db.items import PushItem
from queen.errors import PayloadTooLarge
from queen.ids import uuid7_str
from queen.storage.file_buffer import (
    BufferDirectory,
    RecordTooLarge,
    count_records,
    encode_records,
    orphan_directories,
    read_records,
    scan_buffers,
)

log = logging.getLogger("queen.file_buffer")

PushItems = Callable[[list[PushItem]], Awaitable[list[dict[str, Any]]]]
Target = tuple[str, str]  # (queue, partition)
KNOWN_DOWN_S = 1.0
# How long a push to a partition with buffered records waits for the replay to store them before
# it joins them in the buffer: bounds the push's extra latency while the buffer catches up.
HOLD_BACK_S = 2.0
MAX_FILES_PER_CYCLE = 10
POISON_ATTEMPTS = 5


@dataclass(frozen=True)
class Append:
    records: list[dict[str, Any]]
    reply: Reply[None]


class FileBuffer:
    def __init__(
        self,
        config: Config,
        directory: Path,
        push: PushItems,
        maintenance_on: Callable[[], bool],
        orphans: list[Path] | None = None,
    ) -> None:
        self.config = config
        self.root = Path(config.file_buffer_dir)
        self.directory = BufferDirectory(directory, config.file_buffer_events_per_file)
        self.orphans = [
            BufferDirectory(p, config.file_buffer_events_per_file, lock=p != self.root)
            for p in orphans or []
        ]
        self.push = push
        self.maintenance_on = maintenance_on
        self.available = False
        self.db_healthy = True
        self.replayed_total = 0
        self._unavailable_at: float | None = None
        self._last_write = 0.0
        self._disk = trio.Lock()
        self._wake = trio.Event()
        self._held: Counter[Target] = Counter()
        self._released = trio.Event()
        self._send, self._receive = trio.open_memory_channel[Append](4096)

    # Called from the push path ------------------------------------------------------------------
    async def append(self, records: list[dict[str, Any]]) -> None:
        """Return once the records are fsynced; raise OSError if they could not be written, and
        PayloadTooLarge (413) if one is over the 10 MiB a buffer record may hold."""
        if not self.available:
            raise OSError("File buffer unavailable")
        reply: Reply[None] = Reply()
        await deliver(self._send, Append(records, reply))
        await reply.wait()

    def database_known_down(self) -> bool:
        """A push failed for lack of a database within the last second and none succeeded since."""
        return self._unavailable_at is not None and (
            trio.current_time() - self._unavailable_at < KNOWN_DOWN_S
        )

    def note_database(self, available: bool) -> None:
        self._unavailable_at = None if available else trio.current_time()

    def wake(self) -> None:
        self._wake.set()

    def holding(self) -> bool:
        """Some partition has records here that replay has not stored yet: with none, this is all
        the push path pays for keeping order across an outage."""
        return bool(self._held)

    async def behind_buffered(self, items: list[PushItem]) -> bool:
        """Whether `items` must be appended to the buffer, behind records of their partitions
        it still holds. Waits up to HOLD_BACK_S for the replay to store those (and hurries it),
        so that a partition goes back to PostgreSQL as soon as its backlog is through."""
        targets = {(item.queue, item.partition) for item in items}
        with trio.move_on_after(HOLD_BACK_S):
            while not targets.isdisjoint(self._held):
                self.wake()
                await self._released.wait()
            return False
        return True

    @property
    def pending(self) -> int:
        return self.directory.pending + sum(o.pending for o in self.orphans)

    def stats(self) -> dict[str, Any]:
        stats = self.directory.stats()
        stats["pendingCount"] = self.pending
        stats["dbHealthy"] = self.db_healthy
        return stats

    async def instance_stats(self) -> dict[str, Any]:
        """`stats` for every worker of this instance, read from disk: what the maintenance API
        reports, so that bufferedMessages reaches 0 only once every worker has drained."""
        if not self.available:
            return self.stats()
        stats = await trio.to_thread.run_sync(scan_buffers, self.root)
        stats["dbHealthy"] = self.db_healthy
        return stats

    # The actor ----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await trio.to_thread.run_sync(self.directory.open)
            for orphan in self.orphans:
                await trio.to_thread.run_sync(orphan.open)
            self._held = Counter()
            for directory in (self.directory, *self.orphans):
                self._held += await trio.to_thread.run_sync(_held_targets, directory)
        except OSError as error:
            log.error(
                "file buffer unavailable; pushes cannot fail over to disk",
                extra={"dir": str(self.directory.path), "error": str(error)},
            )
            task_status.started()
            return
        self.available = True
        if self.pending:
            log.info(
                "buffered pushes from an earlier run will be replayed",
                extra={"pending": self.pending},
            )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._drain_loop)
                task_status.started()
        finally:
            self.available = False
            with trio.CancelScope(shield=True):
                async with self._disk:
                    await trio.to_thread.run_sync(self.directory.close)
                    for orphan in self.orphans:
                        await trio.to_thread.run_sync(orphan.close)

    async def _write_loop(self) -> None:
        async for first in self._receive:
            batch = [first]
            while True:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            async with self._disk:
                outcomes = await trio.to_thread.run_sync(_write_batch, self.directory, batch)
            if any(outcome is None for outcome in outcomes):
                self._last_write = trio.current_time()
            for append, outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    self._held.update(_record_target(record) for record in append.records)
                    append.reply.send(None)
                elif isinstance(outcome, RecordTooLarge):
                    append.reply.fail(PayloadTooLarge(f"Too large for the file buffer: {outcome}"))
                else:
                    append.reply.fail(OSError(f"File buffer write failed: {outcome}"))

    async def _drain_loop(self) -> None:
        flush_s = self.config.file_buffer_flush_ms / 1000
        cycles = 0
        while True:
            with trio.move_on_after(flush_s):
                await self._wake.wait()
            self._wake = trio.Event()
            cycles += 1
            if self.maintenance_on():
                continue
            async with self._disk:
                idle = trio.current_time() - self._last_write > 2 * flush_s
                # Pushes held back wait for what the active file holds too: while the database
                # takes replays, finalize it every cycle instead of once writes pause.
                if idle or (self._held and self.db_healthy):
                    await trio.to_thread.run_sync(self.directory.finalize_active)
                if cycles * flush_s >= 1.0:
                    cycles = 0
                    for directory in (self.directory, *self.orphans):
                        await trio.to_thread.run_sync(directory.retry_failed, self.db_healthy)
            for directory in (self.directory, *self.orphans):
                files = await trio.to_thread.run_sync(directory.replay_queue)
                for path in files[: MAX_FILES_PER_CYCLE if self.db_healthy else 1]:
                    if not await self._replay(directory, path):
                        break
            if self._held and self.db_healthy:
                await self._forget_held_if_drained()

    async def _forget_held_if_drained(self) -> None:
        """Counts that outlive every file to replay (a buffer file removed by hand, say) would
        hold their partitions back for good: once no file is left to replay, none is held."""
        async with self._disk:
            for directory in (self.directory, *self.orphans):
                if await trio.to_thread.run_sync(directory.holds_replayable):
                    return
            log.warning(
                "no buffered record left to replay for partitions still counted as held",
                extra={"partitions": len(self._held)},
            )
            self._release(self._held)

    async def _replay(self, directory: BufferDirectory, path: Path) -> bool:
        """Replay one file; False when the database failed us (the file went to failed/).

        Records PostgreSQL rejects are quarantined only once the whole file is through: a file
        that fails half-way goes to failed/ intact and comes back, and must not leave a second
        copy of its rejects behind each time."""
        records, framed = await trio.to_thread.run_sync(_read_file, path)
        groups: dict[tuple[str, str], list[PushItem]] = {}
        for record in records:
            item = _push_item(record)
            if item is not None:
                groups.setdefault((item.queue, item.partition), []).append(item)
        chunk_size = self.config.file_buffer_max_batch
        rejected: list[PushItem] = []
        for items in groups.values():
            for start in range(0, len(items), chunk_size):
                chunk = items[start : start + chunk_size]
                try:
                    await self.push(chunk)
                    continue
                except Exception as error:
                    if not isinstance(error, DatabaseError) or is_availability_error(error):
                        return await self._replay_failed(directory, path, framed, error)
                try:
                    rejected += await self._push_one_by_one(chunk)
                except Exception as error:
                    return await self._replay_failed(directory, path, framed, error)
        async with self._disk:  # the counters both update are shared with the write loop
            if rejected:
                target = await trio.to_thread.run_sync(
                    directory.quarantine, [buffer_record(item) for item in rejected]
                )
                log.error(
                    "quarantined buffered records PostgreSQL rejects; move the file back into "
                    "the buffer directory to replay it once the cause is fixed",
                    extra={"records": len(rejected), "file": str(target)},
                )
            await trio.to_thread.run_sync(directory.replayed, path, framed)
            self._release(Counter({target: len(items) for target, items in groups.items()}))
        self.db_healthy = True
        self.replayed_total += len(records) - len(rejected)
        if records:
            log.info(
                "replayed buffered pushes",
                extra={"file": path.name, "records": len(records) - len(rejected)},
            )
        return True

    def _release(self, through: Counter[Target]) -> None:
        """Take replayed (or quarantined) records off the held counts and wake held pushes."""
        for target, records in list(through.items()):
            if self._held[target] > records:
                self._held[target] -= records
            else:
                self._held.pop(target, None)
        self._released.set()
        self._released = trio.Event()

    async def _replay_failed(
        self, directory: BufferDirectory, path: Path, records: int, error: Exception
    ) -> bool:
        if self.db_healthy:
            log.warning(
                "buffer replay paused: database unavailable",
                extra={"file": path.name, "error": str(error)},
            )
        self.db_healthy = False
        async with self._disk:
            await trio.to_thread.run_sync(directory.move_to_failed, path, records)
        return False

    async def _push_one_by_one(self, chunk: list[PushItem]) -> list[PushItem]:
        """PostgreSQL rejected a chunk's content: store what it accepts and return the rest.

        Each record gets POISON_ATTEMPTS tries, since a rejection can be transient (a deadlock, a
        serialization failure); a lost database raises, so the caller keeps the whole file."""
        rejected = []
        for item in chunk:
            for _ in range(POISON_ATTEMPTS):
                try:
                    await self.push([item])
                    break
                except DatabaseError as error:
                    if is_availability_error(error):
                        raise
            else:
                rejected.append(item)
        return rejected


def _write_batch(directory: BufferDirectory, batch: list[Append]) -> list[Exception | None]:
    """Write the requests of one group commit with one write and one fsync; per request, None
    once it is on disk, else why not. Each request is encoded on its own, so a record over the
    cap refuses its own push and not the ones that happened to share the write."""
    outcomes: list[Exception | None] = []
    blobs: list[bytes] = []
    records = 0
    for append in batch:
        try:
            blobs.append(encode_records(append.records))
        except RecordTooLarge as error:
            outcomes.append(error)
            continue
        outcomes.append(None)
        records += len(append.records)
    if records:
        try:
            directory.append(b"".join(blobs), records)
        except OSError as error:
            log.error("buffer write failed", extra={"error": str(error)})
            outcomes = [error if outcome is None else outcome for outcome in outcomes]
    return outcomes


def _read_file(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The file's usable records, and how many records it frames: `pending` counted the framed
    ones (corrupt JSON included), so that is what replaying or failing the file takes off."""
    return list(read_records(path)), count_records(path)


def buffer_record(item: PushItem) -> dict[str, Any]:
    """The on-disk form of a validated push item (the original's field names)."""
    record: dict[str, Any] = {
        "queue": item.queue,
        "partition": item.partition,
        "payload": orjson.Fragment(bytes(item.payload)),
        "transactionId": item.transaction_id,
        "failover": True,
    }
    if item.trace_id:
        record["traceId"] = item.trace_id
    if item.producer_sub:
        record["producerSub"] = item.producer_sub
    if item.is_encrypted:
        record["isEncrypted"] = True
    return record


def _record_target(record: dict[str, Any]) -> Target:
    """The (queue, partition) a record replays into; the queue is checked by `_replayable`."""
    partition = record.get("partition")
    return record["queue"], partition if isinstance(partition, str) and partition else "Default"


def _replayable(record: dict[str, Any]) -> bool:
    queue = record.get("queue")
    transaction_id = record.get("transactionId")
    return (
        isinstance(queue, str)
        and bool(queue)
        and isinstance(transaction_id, str)
        and bool(transaction_id)
    )


def _held_targets(directory: BufferDirectory) -> Counter[Target]:
    """Per (queue, partition), the records a directory's files will replay: its finalized
    files and the failed ones that come back (not the quarantined ones, which stay)."""
    held: Counter[Target] = Counter()
    for path in directory.files_to_replay():
        held.update(_record_target(r) for r in read_records(path, warn=False) if _replayable(r))
    return held


def _push_item(record: dict[str, Any]) -> PushItem | None:
    if not _replayable(record):
        log.warning("skipping a buffered record without queue or transactionId")
        return None
    queue, partition = _record_target(record)
    return PushItem(
        queue=queue,
        partition=partition,
        transaction_id=record["transactionId"],
        message_id=uuid7_str(),
        payload=msgspec.Raw(orjson.dumps(record.get("payload"))),
        trace_id=record.get("traceId") or None,
        producer_sub=record.get("producerSub") or None,
        skip_capacity=True,
        is_encrypted=record.get("isEncrypted") is True,
    )


def worker_orphans(config: Config, worker_id: int) -> list[Path]:
    """Buffers no worker of this run owns, drained by worker 0: FILE_BUFFER_DIR itself (where the
    original implementation, one buffer per process, left its files: same names and format, so a
    switch of implementation loses nothing) and the subdirectories of workers this run lacks."""
    if worker_id != 0:
        return []
    root = Path(config.file_buffer_dir)
    return [root, *orphan_directories(root, config.num_workers)]
