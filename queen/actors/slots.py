"""Connection slots: each slot actor owns exactly one asyncpg connection (asyncpg connections are
not safe for concurrent use) and executes the database calls its pool hands it, one at a time.

A new connection costs its first calls far more than later ones (PL/pgSQL compiles each function
and plans each statement on first use in a session): slots connect off the request path, and the
pool's `on_connect` runs the hot procedures once before a connection serves anyone. A slot
reconnects with backoff when PostgreSQL goes away. While it is backing off it fails jobs at once
with DatabaseUnavailable instead of holding them: callers decide whether to buffer, retry or
answer 503. A call is never cancelled from outside mid-query (the asker only stops waiting); a
slot cancelled at shutdown discards its connection rather than reuse it in an unknown protocol
state. A call that outlives the in-flight deadline (statement timeout + 5 s) marks its connection
dead: a stalled network would otherwise hold the slot, and every job queued behind it, for as
long as the stall lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import trio
import trio_asyncio

from queen.actors.mailbox import Reply, deliver
from queen.actors.supervisor import Child, Supervisor
from queen.backoff import backoff_delays
from queen.db import bridge
from queen.db.connect import ConnectParams, connect
from queen.db.errors import DatabaseError, DatabaseUnavailable, from_sqlstate
from queen.db.runner import Answer, CallKind

log = logging.getLogger("queen.slots")

STOP_GRACE_S = 1.0


@dataclass(frozen=True)
class DbCall:
    sql: str
    args: tuple[Any, ...]
    reply: Answer
    kind: CallKind = "fetch"
    timeout_s: float | None = None


_CONNECTION_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    # "cannot switch to state N; another operation (2) is in progress": the server ended the
    # connection while it sat idle (pg_terminate_backend, shutdown) and asyncpg is still consuming
    # that FATAL error when the next statement comes; the statement is never sent.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@dataclass
class PoolHealth:
    """Each slot writes only its own entry; readers take the summary."""

    slots: dict[int, bool] = field(default_factory=dict)
    last_error: str = ""
    calls: int = 0

    @property
    def connected(self) -> int:
        return sum(self.slots.values())


OnConnect = Callable[[asyncpg.Connection], Awaitable[None]]


class ConnectionSlot:
    """One connection and the actor that uses it. The pool hands it one job at a time; between
    jobs it takes the next queued job itself, or parks on the pool's idle stack.

    The slot's trio task connects, reconnects and stops; the calls themselves run in an asyncio
    task on trio-asyncio's loop, started by the asker's `hand` when the connection is live, which
    answers the job, takes the queued ones, and parks the slot (or gives it back to the trio task
    when the connection is lost). A call thus costs no scheduler pass of the slot's task, nor an
    asyncio task of its own under load (docs/performance.md, "Fewer passes per call"). That task
    is bounded by the slot's: at most one per slot, and the slot's task cancels it and waits for
    it (at most STOP_GRACE_S) when it stops.
    """

    # trio-asyncio's loop, where the calls run, and the context they run in (the slot's, not the
    # first asker's): both known once the slot's task runs.
    _loop: asyncio.AbstractEventLoop
    _context: contextvars.Context

    def __init__(self, index: int, pool: SlotPool) -> None:
        self.index = index
        self.pool = pool
        self.params = pool.params
        self.health = pool.health
        self._conn: asyncpg.Connection | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._delay = backoff_delays(0.05, 2.0)
        self._needed = trio.Event()
        self._reset()

    def _reset(self) -> None:
        """What one incarnation of the slot's task leaves behind must not reach the next."""
        # Set when the slot comes back to its trio task: its connection was lost or replaced
        # (`_runs` ended without parking it), a job was handed to it while it had no live
        # connection (`_pending`), or the asyncio side failed in a way it could not answer.
        self._back = trio.Event()
        self._pending: DbCall | None = None
        self._crashed: Exception | None = None
        # The asyncio task running the slot's calls, and the job it is answering.
        self._runs: asyncio.Task[None] | None = None
        self._job: DbCall | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def hand(self, job: DbCall) -> None:
        """Only the pool calls this, and only on a slot it just took off the idle stack. A live
        connection starts the call right here, in the caller's scheduler pass; a slot without one
        gets the job in its own task, which connects or fails it."""
        conn = self._conn
        if conn is not None and not conn.is_closed():
            self._launch(conn, job)
        else:
            self._pending = job
            self._back.set()

    def wake(self) -> None:
        self._needed.set()

    @property
    def may_retry(self) -> bool:
        """Not inside its reconnect backoff: waking it would make a connection attempt."""
        return trio.current_time() >= self._retry_at

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._reset()
        self._loop = trio_asyncio.current_loop.get()
        self._context = contextvars.copy_context()
        self.health.slots[self.index] = False
        task_status.started()
        try:
            if self.index >= self.pool.eager:
                await self._connect_when_needed()
            else:
                with contextlib.suppress(DatabaseUnavailable):
                    await self._ensure_connected()
            while True:
                self._back = trio.Event()
                job, self._pending = self._pending, None
                if job is None:
                    if not self.connected:
                        # A connection can close after its last call answered (PostgreSQL went
                        # away in between): it stops counting as live before the count is read,
                        # or this slot would step aside for itself, every other slot for it, and
                        # queued jobs would wait until some later call woke a slot (found by the
                        # chaos test).
                        self.health.slots[self.index] = False
                        if self.health.connected > 0:
                            # Other slots serve: jobs this one took would only fail. It waits,
                            # cold, until the pool needs another slot. (The last slot to lose its
                            # connection stays, and fails jobs at once while it backs off.)
                            await self._connect_when_needed()
                            continue
                    job = self.pool.queued_job()
                if job is None:
                    self.pool.park(self)
                elif not await self._start(job):
                    continue
                await self._back.wait()
                if self._crashed is not None:
                    raise self._crashed
        finally:
            self.pool.done_warming(self)
            self.pool.forget(self)
            if self._pending is not None:
                self._pending.reply.abandon()
            await self._stop_runs()
            self.health.slots.pop(self.index, None)
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.terminate()

    async def _connect_when_needed(self) -> None:
        self._needed = trio.Event()
        self.pool.cold.append(self)
        await self._needed.wait()
        try:
            with contextlib.suppress(DatabaseUnavailable):
                await self._ensure_connected()
        finally:
            self.pool.done_warming(self)

    async def _ensure_connected(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        if trio.current_time() < self._retry_at:
            raise DatabaseUnavailable(self.health.last_error or "database unavailable")
        try:
            conn = await trio_asyncio.aio_as_trio(connect)(
                self.params, command_timeout_s=self._command_timeout_s()
            )
        except Exception as error:
            self._mark_lost(error)
            raise DatabaseUnavailable(self.health.last_error) from error
        try:
            # However the session is set up, a warm-up that hangs must not hold the slot (and
            # the pool's growth, which waits for it) for good.
            with trio.fail_after(self.params.connect_timeout_s):
                await self._warm_up(conn)
        except BaseException as error:
            conn.terminate()
            if not isinstance(error, Exception):
                raise
            self._mark_lost(error)
            raise DatabaseUnavailable(self.health.last_error) from error
        self._conn = conn
        self._failures = 0
        self.health.slots[self.index] = True
        return conn

    def _command_timeout_s(self) -> float | None:
        """When a call times out or is cancelled, asyncpg sends PostgreSQL a CancelRequest over a
        connection of its own, bounded only by the command timeout. On a stalled network that
        request never completes, and its pending task kept the worker from exiting at shutdown.
        Slot calls always pass a timeout when one applies (the in-flight deadline), so the
        command timeout bounds just that request and the warm-up; with statement timeouts off
        nothing is bounded, as before."""
        if self.params.call_deadline_s is None:
            return None
        return self.params.connect_timeout_s

    async def _warm_up(self, conn: asyncpg.Connection) -> None:
        """A warm-up that fails leaves a usable, merely cold connection, unless it also left the
        connection closed or inside its transaction."""
        if self.pool.on_connect is None:
            return
        try:
            await trio_asyncio.aio_as_trio(self.pool.on_connect)(conn)
        except Exception as error:
            if conn.is_closed() or conn.is_in_transaction():
                raise
            log.warning(
                "connection warm-up failed; the connection serves cold",
                extra={"pool": self.pool.name, "slot": self.index, "error": str(error)},
            )

    def _mark_lost(self, error: BaseException) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        if self.health.slots.get(self.index) or self._failures == 0:
            log.warning("database connection lost", extra={"slot": self.index, "error": str(error)})
        self.health.slots[self.index] = False
        self.health.last_error = str(error) or type(error).__name__
        self._retry_at = trio.current_time() + self._delay(self._failures)
        self._failures += 1

    async def _start(self, job: DbCall) -> bool:
        """Start `job` on this slot's connection, connecting first if need be; False when it could
        not start (the job was failed: the database is unavailable)."""
        try:
            conn = await self._ensure_connected()
        except DatabaseUnavailable as error:
            job.reply.fail(error)
            return False
        except BaseException:
            job.reply.abandon()  # stopped while connecting: the asker gets ActorGone
            raise
        self._launch(conn, job)
        return True

    def _launch(self, conn: asyncpg.Connection, job: DbCall) -> None:
        """From here until it parks the slot or gives it back, an asyncio task owns the slot. It
        answers each job's Reply itself (setting a trio Event from trio-asyncio's loop, which runs
        as a trio task): the slot's own task is no stop on a call's way."""
        self._job = job
        self._runs = self._loop.create_task(self._run_jobs(conn, job), context=self._context.copy())

    async def _run_jobs(self, conn: asyncpg.Connection, job: DbCall) -> None:
        """The asyncio side: answer `job`, then the jobs queued meanwhile, on one connection. It
        parks the slot when none is left, and gives the slot back to its trio task when the
        connection is lost or replaced."""
        try:
            while True:
                await self._answer(conn, job)
                if self._conn is not conn:
                    break
                next_job = self.pool.queued_job()
                if next_job is None:
                    self._job = self._runs = None
                    self.pool.park(self)
                    return
                self._job = job = next_job
        except Exception as error:  # a fault of this code, not of the call: the slot crashes
            job.reply.abandon()
            self._crashed = error
        self._job = self._runs = None
        self._back.set()

    async def _stop_runs(self) -> None:
        """At shutdown, a call in flight is cancelled (its asker gets ActorGone) and waited for,
        at most STOP_GRACE_S: asyncpg ends a cancelled call at once and sends PostgreSQL's cancel
        request from a task of its own, which the command timeout bounds."""
        runs, job = self._runs, self._job
        self._runs = self._job = None
        if job is not None:
            job.reply.abandon()
        if runs is None or runs.done():
            return
        ended = trio.Event()
        runs.add_done_callback(lambda _: ended.set())
        runs.cancel()
        with trio.CancelScope(shield=True, deadline=trio.current_time() + STOP_GRACE_S):
            await ended.wait()

    async def _answer(self, conn: asyncpg.Connection, job: DbCall) -> None:
        """Run one job on `conn` (asyncio side) and answer it whatever happens; a connection found
        lost or in an unknown state is dropped."""
        method = getattr(conn, job.kind)
        try:
            result = await method(
                job.sql,
                *job.args,
                timeout=job.timeout_s if job.timeout_s is not None else self.params.call_deadline_s,
            )
        except asyncpg.PostgresError as error:
            if isinstance(error, _CONNECTION_LOST):
                self._mark_lost(error)
                job.reply.fail(DatabaseUnavailable(str(error)))
            else:
                job.reply.fail(from_sqlstate(str(error), getattr(error, "sqlstate", None)))
            return
        except asyncpg.InterfaceError as error:
            if not conn.is_closed():
                # Refused on our side (bad argument, wrong argument count): the connection is
                # fine and a retry would fail the same way, so this is not "unavailable".
                job.reply.fail(DatabaseError(str(error)))
                return
            self._mark_lost(error)
            job.reply.fail(DatabaseUnavailable(str(error)))
            return
        except _CONNECTION_LOST as error:
            self._mark_lost(error)
            job.reply.fail(DatabaseUnavailable(str(error) or type(error).__name__))
            return
        except Exception as error:
            # Nothing says what state the connection is in: replace it, and let the asker's
            # error table turn this into a 500 with an id in the log.
            self._discard()
            job.reply.fail(error)
            return
        self.health.calls += 1
        job.reply.send(result)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        self.health.slots[self.index] = False
        if conn is not None:
            conn.terminate()


class SlotPool:
    """`size` slots behind one `call`, the way the rest of queen reaches PostgreSQL.

    Jobs go to the slot that was freed last (a stack, not a queue): a steady load keeps reusing
    the few connections it needs, whose plans and caches are warm, instead of rotating through
    all of them.

    The `eager` first slots connect at start; the pool grows one slot at a time after that,
    whenever a call takes the last free slot or finds none, or a slot leaves others queued behind
    the job it takes, and off every request's path: the new slot connects and runs `on_connect`
    before it takes a job. A job that finds no free slot waits in the queue for whichever slot
    frees first, never for a connection being made. (Waking a slot per queued job instead had a
    burst start a dozen warm-ups at once on this 2-core machine, each then taking 90-220 ms and
    slowing everything else.)

    A slot whose connection is down, while others have theirs, waits cold until the pool needs
    another slot, instead of taking jobs it could only fail. When none is connected, slots take
    jobs and fail them at once while they back off, so callers learn of an outage without
    waiting.
    """

    def __init__(
        self,
        name: str,
        params: ConnectParams,
        size: int,
        queue_size: int = 4096,
        *,
        eager: int = 1,
        on_connect: OnConnect | None = None,
    ) -> None:
        self.name = name
        self.params = params
        self.size = size
        self.eager = eager
        self.on_connect = on_connect
        self.health = PoolHealth()
        self.idle: list[ConnectionSlot] = []
        self.cold: list[ConnectionSlot] = []
        self.warming: ConnectionSlot | None = None
        self._send, self._receive = trio.open_memory_channel[DbCall](queue_size)

    @property
    def waiting(self) -> int:
        return self._send.statistics().current_buffer_used

    @property
    def free(self) -> int:
        """Connected slots parked without a job (what metrics call free connection slots)."""
        return sum(1 for slot in self.idle if slot.connected)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        bridge.install()  # every call of the pool crosses trio-asyncio's loop (queen/db/bridge.py)
        children = [
            Child(f"{self.name}-slot-{i}", ConnectionSlot(i, self).run) for i in range(self.size)
        ]
        try:
            await Supervisor(f"{self.name}-pool", children).run(task_status=task_status)
        finally:
            # Calls queued for the slots that just stopped are answered ActorGone; the inbox
            # stays open for the pool's next incarnation when its supervisor restarts it.
            _abandon_queued(self._receive)

    async def call(
        self, sql: str, *args: Any, kind: CallKind = "fetch", timeout_s: float | None = None
    ) -> Any:
        reply: Reply[Any] = Reply()
        await self.submit(reply, sql, *args, kind=kind, timeout_s=timeout_s)
        return await reply.wait()

    async def submit(
        self,
        answer: Answer,
        sql: str,
        *args: Any,
        kind: CallKind = "fetch",
        timeout_s: float | None = None,
    ) -> None:
        """Start a call whose outcome goes to `answer`, on trio-asyncio's loop where the result
        arrives (or on the slot's task, when it fails without reaching the database). It yields
        only when every slot is busy, on the way into the queue, as `call` always did."""
        job = DbCall(sql, args, answer, kind, timeout_s)
        slot = self.idle.pop() if self.idle else None
        if not self.idle:
            self._grow()
        if slot is not None:
            slot.hand(job)
        else:
            await deliver(self._send, job)

    def queued_job(self) -> DbCall | None:
        try:
            job = self._receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None
        if self.waiting:
            self._grow()
        return job

    def _grow(self) -> None:
        """Start one more slot connecting, unless one already is or none may try now."""
        if self.warming is not None:
            return
        for slot in self.cold:
            if slot.may_retry:
                self.cold.remove(slot)
                self.warming = slot
                slot.wake()
                return

    def park(self, slot: ConnectionSlot) -> None:
        if slot.connected:
            self.idle.append(slot)
        else:
            self.idle.insert(0, slot)

    def done_warming(self, slot: ConnectionSlot) -> None:
        if self.warming is slot:
            self.warming = None

    def forget(self, slot: ConnectionSlot) -> None:
        for stack in (self.idle, self.cold):
            if slot in stack:
                stack.remove(slot)


def _abandon_queued(jobs: trio.MemoryReceiveChannel[DbCall]) -> None:
    """Calls still queued when a slot or the pool stops are answered with ActorGone, never left
    waiting."""
    while True:
        try:
            jobs.receive_nowait().reply.abandon()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
