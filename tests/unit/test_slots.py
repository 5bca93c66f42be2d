"""Connection slots against a scripted stand-in for asyncpg: every call gets an answer (a result,
DatabaseUnavailable, DatabaseError, the unexpected error itself or ActorGone), never silence."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from queen.actors import slots
from queen.actors.mailbox import ActorGone
from queen.actors.slots import SlotPool
from queen.db.connect import ConnectParams
from queen.db.errors import DatabaseError, DatabaseUnavailable

PARAMS = ConnectParams("127.0.0.1", 1, "u", "p", "d", ssl=False, connect_timeout_s=1.0)

Behaviour = Callable[..., Awaitable[Any]]


class FakeConnection:
    def __init__(self, behaviour: Behaviour, served: list[tuple[str, FakeConnection]]) -> None:
        self.behaviour = behaviour
        self.served = served
        self.closed = False

    async def fetchval(self, sql: str, *args: Any, **options: Any) -> Any:
        self.served.append((sql, self))
        return await self.behaviour(self, sql, **options)

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return False

    def terminate(self) -> None:
        self.closed = True


class FakeServer:
    """Stands in for `slots.connect`: counts connections and can refuse them."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.refusing = False
        self.stalling = False  # connection attempts never finish
        self.limit: int | None = None  # connections it accepts at most (others are refused)
        self.connections: list[FakeConnection] = []
        self.served: list[tuple[str, FakeConnection]] = []

    async def connect(self, params: ConnectParams, **options: Any) -> FakeConnection:
        await asyncio.sleep(3600 if self.stalling else 0)
        if self.refusing or (self.limit is not None and len(self.connections) >= self.limit):
            raise ConnectionRefusedError("connection refused")
        connection = FakeConnection(self.behaviour, self.served)
        self.connections.append(connection)
        return connection


async def answer(connection: FakeConnection, sql: str, **options: Any) -> Any:
    if sql == "boom":
        raise ZeroDivisionError("unexpected")
    if sql == "bad argument":
        raise asyncpg.exceptions._base.DataError("invalid input for query argument $1")
    if sql == "lost":
        connection.closed = True
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    if sql == "constraint":
        raise asyncpg.exceptions.UniqueViolationError("duplicate key")
    if sql == "slow":
        await asyncio.sleep(3600)
    if sql == "brief":
        await asyncio.sleep(0.01)
    if sql == "stalled":  # no answer ever comes: only asyncpg's timeout ends the wait
        await asyncio.wait_for(asyncio.sleep(3600), options["timeout"])
    if sql == "answered, then lost":
        connection.closed = True  # the server went away right after answering
    return sql


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeServer]:
    fake = FakeServer(answer)
    monkeypatch.setattr(slots, "connect", fake.connect)
    async with trio_asyncio.open_loop():
        yield fake


async def test_calls_are_answered_on_one_reused_connection(server: FakeServer) -> None:
    async with trio.open_nursery() as nursery:
        pool = SlotPool("test", PARAMS, size=1)
        await nursery.start(pool.run)
        assert [await pool.call(f"q{n}", kind="fetchval") for n in range(3)] == ["q0", "q1", "q2"]
        assert len(server.connections) == 1
        nursery.cancel_scope.cancel()


async def test_unexpected_error_reaches_the_asker_and_the_connection_is_replaced(
    server: FakeServer,
) -> None:
    async with trio.open_nursery() as nursery:
        pool = SlotPool("test", PARAMS, size=1)
        await nursery.start(pool.run)
        with trio.fail_after(5), pytest.raises(ZeroDivisionError):
            await pool.call("boom", kind="fetchval")
        assert server.connections[0].closed
        assert await pool.call("after", kind="fetchval") == "after"
        assert len(server.connections) == 2
        nursery.cancel_scope.cancel()


async def test_refused_argument_is_a_database_error_not_an_outage(server: FakeServer) -> None:
    async with trio.open_nursery() as nursery:
        pool = SlotPool("test", PARAMS, size=1)
        await nursery.start(pool.run)
        with pytest.raises(DatabaseError):
            await pool.call("bad argument", kind="fetchval")
        with pytest.raises(DatabaseError) as constraint:
            await pool.call("constraint", kind="fetchval")
        assert constraint.value.sqlstate == "23505"
        assert await pool.call("still fine", kind="fetchval") == "still fine"
        assert len(server.connections) == 1
        nursery.cancel_scope.cancel()


async def test_lost_connection_is_unavailable_then_replaced(server: FakeServer) -> None:
    async with trio.open_nursery() as nursery:
        pool = SlotPool("test", PARAMS, size=1)
        await nursery.start(pool.run)
        with pytest.raises(DatabaseUnavailable):
            await pool.call("lost", kind="fetchval")
        with trio.fail_after(5):
            while True:  # the slot backs off briefly before reconnecting
                try:
                    assert await pool.call("back", kind="fetchval") == "back"
                    break
                except DatabaseUnavailable:
                    await trio.sleep(0.01)
        assert len(server.connections) == 2
        nursery.cancel_scope.cancel()


async def test_while_backing_off_calls_fail_at_once_without_connecting(
    server: FakeServer,
) -> None:
    server.refusing = True
    async with trio.open_nursery() as nursery:
        pool = SlotPool("test", PARAMS, size=1)
        await nursery.start(pool.run)
        with pytest.raises(DatabaseUnavailable, match="refused"):
            await pool.call("q", kind="fetchval")
        assert pool.health.last_error == "connection refused"
        server.refusing = False
        with pytest.raises(DatabaseUnavailable):  # still inside the backoff
            await pool.call("q", kind="fetchval")
        assert server.connections == []
        nursery.cancel_scope.cancel()


async def test_calls_in_flight_or_queued_when_the_pool_stops_get_actor_gone(
    server: FakeServer,
) -> None:
    outcomes: list[str] = []

    async def asker(pool: SlotPool, sql: str) -> None:
        try:
            await pool.call(sql, kind="fetchval")
            outcomes.append("answered")
        except ActorGone:
            outcomes.append("gone")

    async with trio.open_nursery() as outer:
        pool_scope = trio.CancelScope()
        pool = SlotPool("test", PARAMS, size=1)

        async def run_pool(task_status: trio.TaskStatus[None]) -> None:
            with pool_scope:
                await pool.run(task_status=task_status)

        await outer.start(run_pool)
        async with trio.open_nursery() as askers:
            askers.start_soon(asker, pool, "slow")
            while "slow" not in [sql for sql, _ in server.served]:  # noqa: ASYNC110
                await trio.sleep(0.01)
            askers.start_soon(asker, pool, "queued")
            while pool.waiting == 0:  # noqa: ASYNC110 (a few loop turns)
                await trio.sleep(0.01)
            pool_scope.cancel()
    assert outcomes == ["gone", "gone"]
    assert server.connections[0].closed  # a connection cancelled mid-call is never reused
    assert not asyncio.all_tasks(trio_asyncio.current_loop.get()), "the call's task was left"


async def test_a_call_waiting_for_its_slot_to_reconnect_gets_actor_gone_at_shutdown(
    server: FakeServer,
) -> None:
    outcomes: list[str] = []

    async def ask(pool: SlotPool) -> None:
        with pytest.raises(ActorGone):
            await pool.call("q", kind="fetchval")
        outcomes.append("gone")

    with trio.fail_after(5):
        async with trio.open_nursery() as outer, running(SlotPool("test", PARAMS, size=1)) as pool:
            assert await pool.call("answered, then lost", kind="fetchval") == "answered, then lost"
            server.stalling = True
            outer.start_soon(ask, pool)
            while pool.idle:  # noqa: ASYNC110 (the slot takes the call and reconnects)
                await trio.sleep(0.01)
    assert outcomes == ["gone"]


async def test_an_asker_that_stops_waiting_does_not_cancel_its_call(server: FakeServer) -> None:
    async with running(SlotPool("test", PARAMS, size=1)) as pool:
        with trio.move_on_after(0.001):
            await pool.call("brief", kind="fetchval")
        assert await pool.call("next", kind="fetchval") == "next"
        assert [sql for sql, _ in server.served] == ["brief", "next"]
        assert len(server.connections) == 1 and not server.connections[0].closed


async def test_a_call_past_the_in_flight_deadline_marks_its_connection_dead(
    server: FakeServer,
) -> None:
    quick = dataclasses.replace(PARAMS, call_deadline_s=0.05)
    async with running(SlotPool("test", quick, size=1)) as pool:
        with trio.fail_after(5), pytest.raises(DatabaseUnavailable):
            await pool.call("stalled", kind="fetchval")
        assert server.connections[0].closed


async def test_a_fault_on_the_calls_side_crashes_the_slot_for_its_supervisor(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls run in an asyncio task, outside the slot's nursery: a bug there must still reach
    the supervisor (a restart, logged) rather than leave the slot owned by a task that ended."""
    pool = SlotPool("test", PARAMS, size=1)
    faulty = pool.queued_job

    def fails_once() -> slots.DbCall | None:
        monkeypatch.setattr(pool, "queued_job", faulty)
        raise RuntimeError("a bug")

    async with running(pool):
        monkeypatch.setattr(pool, "queued_job", fails_once)
        assert await pool.call("answered first", kind="fetchval") == "answered first"
        with trio.fail_after(5):
            while len(server.connections) < 2:  # noqa: ASYNC110 (the restart's backoff)
                await trio.sleep(0.01)
        assert server.connections[0].closed
        assert await pool.call("after the restart", kind="fetchval") == "after the restart"


@contextlib.asynccontextmanager
async def running(pool: SlotPool) -> AsyncIterator[SlotPool]:
    """The pool serving inside a nursery; stopped on leaving."""
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        yield pool
        nursery.cancel_scope.cancel()


async def concurrent_outcomes(pool: SlotPool, sql: str, count: int) -> list[str]:
    """`count` calls at once; each one's answer, or "unavailable". None may hang."""
    outcomes: list[str] = []

    async def ask() -> None:
        try:
            outcomes.append(await pool.call(sql, kind="fetchval"))
        except DatabaseUnavailable:
            outcomes.append("unavailable")

    with trio.fail_after(10):
        async with trio.open_nursery() as askers:
            for _ in range(count):
                askers.start_soon(ask)
    return outcomes


async def test_a_steady_load_reuses_the_connection_freed_last(server: FakeServer) -> None:
    async with running(SlotPool("test", PARAMS, size=4)) as pool:
        assert await pool.call("first", kind="fetchval") == "first"
        with trio.fail_after(5):
            while pool.health.connected < 2:  # noqa: ASYNC110 (a few loop turns)
                await trio.sleep(0.01)
        server.served.clear()
        for n in range(20):
            assert await pool.call(f"q{n}", kind="fetchval") == f"q{n}"
    used = {id(connection) for _, connection in server.served}
    assert len(used) == 1, "one call at a time needs one connection"
    assert len(server.connections) == 2, "one more was made ready when the first got busy"


async def test_concurrent_calls_grow_the_pool_up_to_its_size(server: FakeServer) -> None:
    async with running(SlotPool("test", PARAMS, size=3)) as pool:
        assert await concurrent_outcomes(pool, "brief", 12) == ["brief"] * 12
        assert len(server.connections) == 3


async def test_a_slot_that_cannot_connect_leaves_the_jobs_to_the_healthy_ones(
    server: FakeServer,
) -> None:
    """PostgreSQL takes one connection and refuses the rest: every call is still answered, by
    the one connection, instead of failing on slots that cannot connect."""
    server.limit = 1
    async with running(SlotPool("test", PARAMS, size=4)) as pool:
        assert await concurrent_outcomes(pool, "brief", 20) == ["brief"] * 20
        assert len(server.connections) == 1


async def test_new_connections_are_prepared_before_they_serve(server: FakeServer) -> None:
    prepared: list[FakeConnection] = []

    async def on_connect(connection: FakeConnection) -> None:
        await asyncio.sleep(0)
        prepared.append(connection)

    pool = SlotPool("test", PARAMS, size=2, on_connect=on_connect)  # type: ignore[arg-type]
    async with running(pool), trio.open_nursery() as askers:
        for _ in range(6):
            askers.start_soon(partial(pool.call, "brief", kind="fetchval"))
    assert prepared == server.connections
    assert {id(c) for _, c in server.served} <= {id(c) for c in prepared}


async def test_a_failed_warm_up_serves_cold_and_a_hung_one_is_given_up(
    server: FakeServer,
) -> None:
    async def failing(connection: FakeConnection) -> None:
        await asyncio.sleep(0)
        raise asyncpg.exceptions.UndefinedFunctionError("function queen.pop_requests missing")

    pool = SlotPool("test", PARAMS, size=1, on_connect=failing)  # type: ignore[arg-type]
    async with running(pool):
        assert await pool.call("cold", kind="fetchval") == "cold"
        assert len(server.connections) == 1 and not server.connections[0].closed

    async def hanging(connection: FakeConnection) -> None:
        await asyncio.sleep(3600)

    quick = dataclasses.replace(PARAMS, connect_timeout_s=0.05)
    pool = SlotPool("test", quick, size=1, on_connect=hanging)  # type: ignore[arg-type]
    async with running(pool):
        with trio.fail_after(5), pytest.raises(DatabaseUnavailable):
            await pool.call("q", kind="fetchval")
        assert server.connections[-1].closed, "a connection whose warm-up hung is not kept"


async def test_when_every_connection_is_lost_calls_fail_at_once(server: FakeServer) -> None:
    """Slots that lose their connection while others still serve step aside, but the last one
    stays: an outage answers every call with DatabaseUnavailable, none is left queued."""
    async with running(SlotPool("test", PARAMS, size=3)) as pool:
        assert await concurrent_outcomes(pool, "brief", 9) == ["brief"] * 9
        with trio.fail_after(5):
            while pool.health.connected < 3:  # noqa: ASYNC110 (a few loop turns)
                await trio.sleep(0.01)
        server.refusing = True
        assert await concurrent_outcomes(pool, "lost", 12) == ["unavailable"] * 12
        assert pool.health.connected == 0


async def test_a_connection_lost_after_its_answer_does_not_leave_calls_queued(
    server: FakeServer,
) -> None:
    """PostgreSQL goes away between one call's answer and the next call: the slot must not go on
    counting its closed connection as live, or every slot steps aside for it and a call waits
    in the queue until some later call happens to wake a slot (seen under the chaos test)."""
    server.limit = 1  # the other slots stay cold: the one connection is all there is
    async with running(SlotPool("test", PARAMS, size=3)) as pool:
        assert await pool.call("answered, then lost", kind="fetchval") == "answered, then lost"
        server.refusing = True
        with trio.fail_after(5), pytest.raises(DatabaseUnavailable):
            await pool.call("q", kind="fetchval")
        assert pool.health.connected == 0
