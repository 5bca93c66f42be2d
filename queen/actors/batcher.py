"""The batcher: many HTTP requests become one stored-procedure call.

One lane per operation type (push, pop, ack, renew, transaction, stream cycle), listed with its
limits in `lane_table`. A lane takes the first waiting request, adds whatever else is already
queued, and, while earlier calls of its type are still in flight, waits up to its hold (by default
SIDECAR_MICRO_BATCH_WAIT_MS) for more, or until those calls have all returned. An idle lane fires
at once, so a lone request pays no batching delay, and a light load rarely waits the whole hold (at
200 single-message pushes/s, ending the hold when the lane went idle took the push round trip's p99
from 12.4 to 8.5 ms). It then needs a grant from its adaptive concurrency limit and a free
connection slot, makes one call with every request's items concatenated, and hands each request its
own slice of the result. That last step runs where the result arrives (a `FusedCall` is the call's
`Answer`, given the result on trio-asyncio's loop by the slot): a call costs the lane no task and
no scheduler pass of its own.

A fused call that PostgreSQL rejects is retried request by request, so one request's bad data never
fails the others it happened to share a batch with. A transient failure (a timeout, a lock or
deadlock lost) is nobody's bad data: it fails every request of the call at once, each asker then
retrying or buffering as it does, rather than paying the wait again once per request.

There is no partition actor in front of the push lane (the design's per-partition serialisation):
measured with `ops/bench --phases latency` (200 pushes/s into one partition, `log_lock_waits` at
1 ms, a busy machine), holding a push back while an earlier call of the same worker held its
partition removed the lock waits of a single worker (142 and 14 waits down to 1 and 0) but not
those of two (581 and 45 against 562 and 338: the waits are between workers, which no
per-worker actor orders), and the p99 got no better (95 and 40 ms without, 146 and 69 ms with).
The partition's row lock in `queen.push_batch` already orders its pushes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from queen.actors.concurrency import AdaptiveLimit
from queen.actors.mailbox import Reply, deliver_soon
from queen.config import Config
from queen.db.batches import (
    ACK,
    PUSH,
    RENEW,
    TRANSACTION,
    OpenPops,
    Procedure,
    Results,
    pop_owned_by,
)
from queen.db.errors import DatabaseError, TransientDatabaseError
from queen.db.runner import Submitter
from queen.db.streams import STREAM_CYCLE

log = logging.getLogger("queen.batcher")

Delivered = Callable[[Sequence[Any], Results], None]
# After each procedure call: lane name, seconds the call took, items it carried, how long each of
# its requests had waited in the lane, and whether it failed (queen/metrics/recorder.py).
CallObserver = Callable[[str, float, int, Iterable[float], bool], None]


@dataclass(frozen=True)
class BatchJob:
    """One request's items; the reply gets exactly len(items) results, in order."""

    items: Sequence[Any]
    reply: Reply[Results]
    queued_at: float = field(default_factory=trio.current_time)


@dataclass(frozen=True)
class LaneSpec:
    """One row of the lane table: the procedure a lane calls and how much it fuses. A call
    carries at most `max_requests` requests and, past its first request, at most `max_items`
    items; at most `max_concurrent` calls are in flight (the adaptive limit's ceiling)."""

    name: str
    procedure: Procedure
    hold_s: float
    max_requests: int
    max_items: int
    max_concurrent: int


def lane_table(
    config: Config, lease_owner: str, open_pops: OpenPops | None = None
) -> tuple[LaneSpec, ...]:
    """Every lane and its limits, all from Config (QUEEN_<TYPE>_* with the original's defaults;
    a hold not set per type is SIDECAR_MICRO_BATCH_WAIT_MS, as in the original). Pops record
    `lease_owner` on the leases they take (queen/actors/lease_reclaim.py)."""

    def hold_s(override_ms: int | None) -> float:
        return (config.sidecar_micro_batch_wait_ms if override_ms is None else override_ms) / 1000

    items = config.sidecar_max_items_per_tx
    return (
        LaneSpec(
            "push",
            PUSH,
            hold_s(config.push_max_hold_ms),
            config.push_max_batch_size,
            items,
            config.push_max_concurrent,
        ),
        LaneSpec(
            "pop",
            pop_owned_by(lease_owner, open_pops),
            hold_s(config.pop_max_hold_ms),
            config.pop_max_batch_size,
            items,
            config.pop_max_concurrent,
        ),
        LaneSpec(
            "ack",
            ACK,
            hold_s(config.ack_max_hold_ms),
            config.ack_max_batch_size,
            items,
            config.ack_max_concurrent,
        ),
        LaneSpec(
            "renew",
            RENEW,
            hold_s(config.renew_lease_max_hold_ms),
            config.renew_lease_max_batch_size,
            items,
            config.renew_lease_max_concurrent,
        ),
        # A transaction is all or nothing: fused with another, one's failure would fail both.
        # It shares push's concurrency: the original's own default for transactions (one in
        # flight per worker) queues every transaction behind one waiting on a row lock.
        LaneSpec("transaction", TRANSACTION, 0.0, 1, 1, config.push_max_concurrent),
        # A streaming cycle is all or nothing too, and its own call bounds its duration.
        LaneSpec("stream_cycle", STREAM_CYCLE, 0.0, 1, 1, config.streams_cycle_max_concurrent),
    )


class Lane:
    def __init__(
        self,
        spec: LaneSpec,
        pool: Submitter,
        *,
        on_results: Delivered | None = None,
        on_undelivered: Callable[[Any], None] | None = None,
        observer: CallObserver | None = None,
        inbox_size: int = 4096,
    ) -> None:
        self.name = spec.name
        self.pool = pool
        self.procedure = spec.procedure
        self.hold_s = spec.hold_s
        self.max_requests = spec.max_requests
        self.max_items = spec.max_items
        self.limit = AdaptiveLimit(1, spec.max_concurrent)
        self.on_results = on_results
        self.on_undelivered = on_undelivered
        self.observer = observer
        # The wait for more requests while calls are in flight; it ends early when the last of
        # them returns, since a call could then start at once.
        self._hold: trio.CancelScope | None = None
        self._send, self._receive = trio.open_memory_channel[BatchJob](inbox_size)
        self._calls: trio.Nursery | None = None  # the retries one by one, while the lane runs
        self._in_flight: set[FusedCall] = set()

    @property
    def waiting(self) -> int:
        return self._send.statistics().current_buffer_used

    async def submit(self, items: Sequence[Any]) -> Results:
        reply: Reply[Results] = Reply()
        await deliver_soon(self._send, BatchJob(items, reply))
        return await reply.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as self._calls:
                task_status.started()
                async for first in self._receive:
                    batch = [first]
                    grant = object()
                    try:
                        await self._gather(batch)
                        await self._acquire(grant)
                    except BaseException:
                        for job in batch:  # stopped or crashed before the call: never a hang
                            job.reply.abandon()
                        raise
                    await self._start(FusedCall(self, batch, grant))
        finally:
            self._calls = None
            for call in list(self._in_flight):
                call.abandon()  # the pool may still answer, to nobody: the askers get ActorGone

    async def _acquire(self, grant: object) -> None:
        try:
            self.limit.limiter.acquire_on_behalf_of_nowait(grant)
        except trio.WouldBlock:
            await self.limit.limiter.acquire_on_behalf_of(grant)

    async def _gather(self, batch: list[BatchJob]) -> None:
        count = self._drain(batch, len(batch[0].items))
        if self.limit.limiter.borrowed_tokens > 0 and self.hold_s > 0:
            with trio.move_on_after(self.hold_s) as self._hold:
                while count < self.max_items and len(batch) < self.max_requests:
                    try:
                        job = await self._receive.receive()
                    except trio.EndOfChannel:
                        break
                    batch.append(job)
                    count = self._drain(batch, count + len(job.items))
            self._hold = None

    def _drain(self, batch: list[BatchJob], count: int) -> int:
        while count < self.max_items and len(batch) < self.max_requests:
            try:
                job = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            batch.append(job)
            count += len(job.items)
        return count

    async def _start(self, call: FusedCall) -> None:
        """Hand the fused call to the pool; `call` hears how it went, on the loop's task."""
        self._in_flight.add(call)
        try:
            args, call.state = self.procedure.encode(call.items)
            await self.pool.submit(
                call,
                self.procedure.sql,
                *args,
                kind=self.procedure.kind,
                timeout_s=self.procedure.timeout_s,
            )
        except Exception as error:
            call.fail(error)
        except BaseException:
            call.abandon()
            raise

    def _succeeded(self, call: FusedCall, raw: Any) -> None:
        try:
            results = self.procedure.decode(raw, call.items, call.state)
            self._check_count(results, len(call.items))
        except Exception as error:
            self._failed(call, error)
            return
        now = trio.current_time()
        self.limit.record(now - call.started, now)
        self._observe(call.batch, call.started, len(call.items), failed=False)
        offset = 0
        for job in call.batch:
            self._deliver(job, results[offset : offset + len(job.items)])
            offset += len(job.items)
        self._finish(call)

    def _failed(self, call: FusedCall, error: BaseException) -> None:
        self._observe(call.batch, call.started, len(call.items), failed=True)
        calls = self._calls
        rejected = isinstance(error, DatabaseError) and not isinstance(
            error, TransientDatabaseError
        )
        if rejected and len(call.batch) > 1 and calls is not None:
            log.info(
                "fused call rejected; retrying its requests one by one",
                extra={"lane": self.name, "requests": len(call.batch), "error": str(error)},
            )
            calls.start_soon(self._one_by_one, call)
            return
        for job in call.batch:
            job.reply.fail(error)
        self._finish(call)

    async def _one_by_one(self, call: FusedCall) -> None:
        try:
            for job in call.batch:
                try:
                    self._deliver(job, await self._call(job.items))
                except Exception as single_error:
                    job.reply.fail(single_error)
        finally:
            self._finish(call)

    def _finish(self, call: FusedCall) -> None:
        """Once per call, however it ended: no request left unanswered (a no-op for those
        answered; ActorGone for the others), its grant back, and the hold ended if the lane just
        went idle."""
        if call not in self._in_flight:
            return
        self._in_flight.remove(call)
        for job in call.batch:
            job.reply.abandon()
        self.limit.limiter.release_on_behalf_of(call.grant)
        if self._hold is not None and self.limit.limiter.borrowed_tokens == 0:
            self._hold.cancel()

    def _crash(self, error: Exception) -> None:
        """A hook failed where the result arrived (on the slot's asyncio task): the lane crashes,
        as it did when the hooks ran in one of its own tasks, not the slot."""
        if self._calls is not None:
            self._calls.start_soon(_reraise, error)

    def _observe(self, batch: list[BatchJob], started: float, items: int, *, failed: bool) -> None:
        if self.observer is not None:
            waits = (started - job.queued_at for job in batch)
            self.observer(self.name, trio.current_time() - started, items, waits, failed)

    async def _call(self, items: Sequence[Any]) -> Results:
        results = await self.procedure.call(self.pool, items)
        self._check_count(results, len(items))
        return results

    def _check_count(self, results: Results, items: int) -> None:
        if len(results) != items:
            raise DatabaseError(f"{self.name}: {len(results)} results for {items} items")

    def _deliver(self, job: BatchJob, results: Results) -> None:
        if self.on_results is not None:
            self.on_results(job.items, results)
        if not job.reply.send(results) and self.on_undelivered is not None:
            for result in results:
                self.on_undelivered(result)


class FusedCall:
    """One fused call in flight, and the `Answer` the pool gives its outcome to: on trio-asyncio's
    loop, where the result arrives, each request gets its slice right there, so the lane spawns
    no task per call (docs/performance.md, "Fewer passes per call")."""

    __slots__ = ("_lane", "_open", "batch", "grant", "items", "started", "state")

    def __init__(self, lane: Lane, batch: list[BatchJob], grant: object) -> None:
        self._lane = lane
        self._open = True
        self.batch = batch
        self.grant = grant
        self.items = [item for job in batch for item in job.items]
        self.started = trio.current_time()
        self.state: Any = None  # what the procedure's encode left for its decode

    def send(self, value: Any) -> bool:
        return self._settle(self._lane._succeeded, value)

    def fail(self, error: BaseException) -> bool:
        return self._settle(self._lane._failed, error)

    def abandon(self) -> None:
        self._open = False
        self._lane._finish(self)

    def _settle(self, how: Callable[[FusedCall, Any], None], outcome: Any) -> bool:
        if not self._open:
            return False
        self._open = False
        try:
            how(self, outcome)
        except Exception as error:
            self._lane._crash(error)
            self._lane._finish(self)
        return True


async def _reraise(error: Exception) -> None:
    raise error


class Batcher:
    """The lanes of one worker process, one per row of the lane table."""

    def __init__(
        self,
        config: Config,
        pool: Submitter,
        *,
        on_pushed: Delivered,
        on_popped: Delivered,
        on_acked: Delivered,
        on_transaction: Delivered,
        on_cycle: Delivered,
        on_pop_undelivered: Callable[[Any], None],
        lease_owner: str,
        observer: CallObserver | None = None,
        open_pops: OpenPops | None = None,
    ) -> None:
        """`open_pops` decrypts what pops deliver (queen/actors/encryption.py)."""
        specs = {spec.name: spec for spec in lane_table(config, lease_owner, open_pops)}

        def lane(name: str, **hooks: Any) -> Lane:
            return Lane(specs[name], pool, observer=observer, **hooks)

        self.push = lane("push", on_results=on_pushed)
        self.pop = lane("pop", on_results=on_popped, on_undelivered=on_pop_undelivered)
        self.ack = lane("ack", on_results=on_acked)
        self.renew = lane("renew")
        self.transaction = lane("transaction", on_results=on_transaction)
        self.stream_cycle = lane("stream_cycle", on_results=on_cycle)
        self.lanes = (
            self.push,
            self.pop,
            self.ack,
            self.renew,
            self.transaction,
            self.stream_cycle,
        )
