"""Connection slots against a scripted stand-in for asyncpg: every call gets an answer (a result,
DatabaseUnavailable, DatabaseError, the unexpected error itself or ActorGone), never silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from queen.actors import slots
from queen.actors.mailbox import ActorGone
from queen.actors.slots import ConnectParams, DatabaseError, DatabaseUnavailable, SlotPool

PARAMS = ConnectParams("127.0.0.1", 1, "u", "p", "d", ssl=False, connect_timeout_s=1.0)

Behaviour = Callable[["FakeConnection", str], Awaitable[Any]]


class FakeConnection:
    def __init__(self, behaviour: Behaviour, calls: list[str]) -> None:
        self.behaviour = behaviour
        self.calls = calls
        self.closed = False

    async def fetchval(self, sql: str, *args: Any, **options: Any) -> Any:
        self.calls.append(sql)
        return await self.behaviour(self, sql)

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True


class FakeServer:
    """Stands in for `slots.connect`: counts connections and can refuse them."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.refusing = False
        self.connections: list[FakeConnection] = []
        self.calls: list[str] = []

    async def connect(self, params: ConnectParams, **options: Any) -> FakeConnection:
        await asyncio.sleep(0)
        if self.refusing:
            raise ConnectionRefusedError("connection refused")
        connection = FakeConnection(self.behaviour, self.calls)
        self.connections.append(connection)
        return connection


async def answer(connection: FakeConnection, sql: str) -> Any:
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
            while "slow" not in server.calls:  # noqa: ASYNC110 (a few loop turns)
                await trio.sleep(0.01)
            askers.start_soon(asker, pool, "queued")
            while pool.waiting == 0:  # noqa: ASYNC110 (a few loop turns)
                await trio.sleep(0.01)
            pool_scope.cancel()
    assert outcomes == ["gone", "gone"]
    assert server.connections[0].closed  # a connection cancelled mid-call is never reused
