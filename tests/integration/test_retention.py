"""Retention and eviction (operations spec §5.5, §5.6; issues #4, #5) against real PostgreSQL.

Messages are made old by moving `created_at` back in SQL (keeping it non-decreasing in `seq`, as
push does) instead of waiting. Cycles are started directly (`CALL queen.retention_round(...)`),
through the actor in this process, and, once queen/worker.py starts it, by the server itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from queen.actors.retention import RetentionServices
from queen.config import Config
from queen.db.connect import ConnectParams
from queen.storage.pgcluster import PgCluster, free_port
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql, server_env

NEVER_MS = "3600000"


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    """The server's own cycles, if it runs them, only run at start-up: the cycles the tests start
    are the only ones deleting anything while a test looks."""
    env = server_env(pg_cluster, database, RETENTION_INTERVAL=NEVER_MS, EVICTION_INTERVAL=NEVER_MS)
    process = ServerProcess(env).start()
    try:
        yield process
    finally:
        process.stop()


@dataclasses.dataclass
class Db:
    cluster: PgCluster
    name: str

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await trio.to_thread.run_sync(
            lambda: run_sql(self.cluster, sql, *args, database=self.name)
        )
        return rows

    async def value(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def retention_cycle(
        self,
        *,
        days: int = 30,
        batch: int = 1000,
        wait_for_lock: bool = True,
        metrics_days: int = 90,
        group_days: int = 0,
    ) -> dict[str, Any]:
        return await self._cycle(
            "CALL queen.retention_round($1, $2, 60000, 0, $3, $4, NULL)",
            batch,
            days,
            metrics_days,
            group_days,
            wait=wait_for_lock,
        )

    async def eviction_cycle(self, *, batch: int = 1000) -> dict[str, Any]:
        return await self._cycle("CALL queen.eviction_round($1, 30000, 0, NULL)", batch, wait=True)

    async def _cycle(self, sql: str, *args: Any, wait: bool) -> dict[str, Any]:
        """A cycle the server happens to be running holds the lock: wait for it, then run."""
        outcome: list[dict[str, Any]] = []

        async def ran() -> bool:
            outcome[:] = [json.loads(await self.value(sql, *args))]
            return bool(outcome[0]["ran"]) or not wait

        await eventually(ran, 30)
        return outcome[0]

    async def partition_id(self, queue: str, partition: str = "Default") -> uuid.UUID:
        found = await self.value(
            "SELECT p.id FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id "
            "WHERE q.name = $1 AND p.name = $2",
            queue,
            partition,
        )
        assert isinstance(found, uuid.UUID)
        return found

    async def seqs(self, partition_id: uuid.UUID) -> list[int]:
        rows = await self.fetch(
            "SELECT seq FROM queen.messages WHERE partition_id = $1 ORDER BY seq", partition_id
        )
        return [row["seq"] for row in rows]

    async def age(self, partition_id: uuid.UUID, seconds: int, upto_seq: int | None = None) -> None:
        """Move the first messages (all by default) back in time; order by seq is kept."""
        await self.fetch(
            "UPDATE queen.messages SET created_at = created_at - make_interval(secs => $2) "
            "WHERE partition_id = $1 AND ($3::bigint IS NULL OR seq <= $3)",
            partition_id,
            seconds,
            upto_seq,
        )

    async def history(self, partition_id: uuid.UUID) -> list[tuple[str, int]]:
        rows = await self.fetch(
            "SELECT retention_type, messages_deleted FROM queen.retention_history "
            "WHERE partition_id = $1 ORDER BY executed_at, retention_type",
            partition_id,
        )
        return [(row["retention_type"], row["messages_deleted"]) for row in rows]


@pytest.fixture
def db(pg_cluster: PgCluster, database: str, server: ServerProcess) -> Db:
    """Depends on `server`, which applies the migrations."""
    return Db(pg_cluster, database)


@asynccontextmanager
async def session(db: Db) -> AsyncIterator[asyncpg.Connection]:
    """A connection the test keeps (to hold a lock or a transaction open)."""
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(
        **{**db.cluster.dsn_parts(), "database": db.name}
    )
    try:
        yield conn
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()


def aio(fn: Any) -> Any:
    return trio_asyncio.aio_as_trio(fn)


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Wait for a condition on database state or logs: nothing there can signal an Event."""
    with trio.fail_after(timeout_s):
        while not await condition():  # noqa: ASYNC110
            await trio.sleep(0.05)


async def configure(api: Api, queue: str, **options: Any) -> None:
    status, body = await api.request(
        "POST", "/api/v1/configure", json={"queue": queue, "options": options}
    )
    assert status == 200, body


async def consume(
    api: Api, queue: str, partition: str, count: int, group: str | None = None
) -> list[dict[str, Any]]:
    """Pop `count` messages of one partition as `group` and ack them all."""
    params: dict[str, Any] = {"batch": count}
    if group is not None:
        params["consumerGroup"] = group
    popped = await api.pop(queue, partition, **params)
    assert popped is not None and len(popped["messages"]) == count, popped
    results = await api.ack_batch(popped["messages"], group=group)
    assert all(r["success"] for r in results), results
    return popped["messages"]  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
async def test_age_retention_deletes_only_messages_past_retention(
    db: Db, server: ServerProcess
) -> None:
    queue, plain = unique("age"), unique("plain")
    async with Api(server.url) as api:
        await configure(api, queue, retentionEnabled=True, retentionSeconds=60)
        await api.push(queue, [{"n": n} for n in range(10)], partition="p")
        await api.push(plain, [{"n": n} for n in range(3)])
        partition, other = await db.partition_id(queue, "p"), await db.partition_id(plain)
        await consume(api, queue, "p", 2)
        await db.age(partition, 120, upto_seq=6)
        await db.age(other, 120)

        result = await db.retention_cycle()
        assert result["ran"] and result["retention"] >= 6

        assert await db.seqs(partition) == [7, 8, 9, 10], "older than retention: gone, read or not"
        assert await db.seqs(other) == [1, 2, 3], "a queue without retention keeps everything"
        assert await db.history(partition) == [("retention", 6)]
        assert (
            await db.value("SELECT last_seq FROM queen.partitions WHERE id = $1", partition) == 10
        )

        popped = await api.pop(queue, batch=10)
        assert popped is not None, "the group's cursor moved over the deleted messages"
        assert [m["data"]["n"] for m in popped["messages"]] == [6, 7, 8, 9]
        await api.ack_batch(popped["messages"])
        await api.push(queue, [{"n": 10}], partition="p")
        assert await db.seqs(partition) == [7, 8, 9, 10, 11], "a sequence number is never reused"


@pytest.mark.timeout(60)
async def test_completed_retention_waits_for_every_group_of_the_queue(
    db: Db, server: ServerProcess
) -> None:
    queue = unique("done")
    async with Api(server.url) as api:
        await configure(api, queue, retentionEnabled=True, completedRetentionSeconds=60)
        await api.push(queue, [{"n": n} for n in range(10)], partition="p")
        await api.push(queue, [{"n": n} for n in range(4)], partition="q")
        p, q = await db.partition_id(queue, "p"), await db.partition_id(queue, "q")
        await consume(api, queue, "p", 10, "g1")
        await consume(api, queue, "p", 4, "g2")
        await db.age(p, 120)
        await db.age(q, 120)

        await db.retention_cycle()
        assert await db.seqs(p) == [5, 6, 7, 8, 9, 10], "g2 has not consumed 5..10"
        assert await db.seqs(q) == [1, 2, 3, 4], "nobody consumed q"
        assert await db.history(p) == [("completed_retention", 4)]

        # g3 reads q only: it has no cursor on p, so it holds p back (quirk O29), and g1/g2,
        # which never read q, hold q back.
        await consume(api, queue, "q", 4, "g3")
        await consume(api, queue, "p", 6, "g2")
        await db.retention_cycle()
        assert await db.seqs(p) == [5, 6, 7, 8, 9, 10]
        assert await db.seqs(q) == [1, 2, 3, 4]

        await consume(api, queue, "p", 6, "g3")
        for group in ("g1", "g2"):
            await consume(api, queue, "q", 4, group)
        await api.push(queue, [{"n": "young"}], partition="p")
        for group in ("g1", "g2", "g3"):
            await consume(api, queue, "p", 1, group)
        await db.retention_cycle()
        assert await db.seqs(p) == [11], "completed but younger than completedRetentionSeconds"
        assert await db.seqs(q) == []
        assert [kind for kind, _ in await db.history(p)] == ["completed_retention"] * 2
        assert sum(n for _, n in await db.history(p)) == 10


@pytest.mark.timeout(60)
async def test_messages_inside_a_live_lease_are_never_deleted(
    db: Db, server: ServerProcess
) -> None:
    queue = unique("leased")
    async with Api(server.url) as api:
        await configure(
            api, queue, retentionEnabled=True, retentionSeconds=60, maxWaitTimeSeconds=60
        )
        await api.push(queue, [{"n": n} for n in range(10)], partition="p")
        partition = await db.partition_id(queue, "p")
        await db.age(partition, 120)
        popped = await api.pop(queue, "p", batch=3)
        assert popped is not None
        leased = popped["messages"]

        await db.eviction_cycle()
        assert await db.seqs(partition) == [1, 2, 3], "eviction spares the leased batch"
        await db.retention_cycle()
        assert await db.seqs(partition) == [1, 2, 3], "so does age retention"

        # An ack out of order moves the cursor past messages the client still holds.
        assert (await api.ack(leased[2]))["success"]
        await db.retention_cycle()
        await db.eviction_cycle()
        assert await db.seqs(partition) == [1, 2, 3]
        for message in leased[:2]:
            result = await api.ack(message)
            assert result["success"] and result["error"] is None

        await db.retention_cycle()
        assert await db.seqs(partition) == [], "lease over: old messages go"
        assert await db.history(partition) == [("max_wait_time_eviction", 7), ("retention", 3)]


@pytest.mark.timeout(60)
async def test_eviction_deletes_only_unconsumed_messages_past_max_wait(
    db: Db, server: ServerProcess
) -> None:
    queue = unique("evict")
    async with Api(server.url) as api:
        await configure(api, queue, maxWaitTimeSeconds=30, deadLetterQueue=True)
        await api.push(queue, [{"n": n} for n in range(6)], partition="p")
        await api.push(queue, [{"n": n} for n in range(3)], partition="r")
        p, r = await db.partition_id(queue, "p"), await db.partition_id(queue, "r")
        await consume(api, queue, "p", 2)
        await db.age(p, 60)
        await db.age(r, 60)
        await api.push(queue, [{"n": 6}, {"n": 7}], partition="p")

        result = await db.eviction_cycle()
        assert result["ran"] and result["evicted"] >= 7
        assert await db.seqs(p) == [1, 2, 7, 8], "consumed by every group, or young: kept"
        assert await db.seqs(r) == []
        assert await db.history(p) == [("max_wait_time_eviction", 4)]
        assert await db.history(r) == [("max_wait_time_eviction", 3)], "one row per partition"
        dead = await db.value(
            "SELECT count(*) FROM queen.dead_letter_queue WHERE partition_id = ANY($1::uuid[])",
            [p, r],
        )
        assert dead == 0, "evicted messages are deleted, not dead-lettered"

        popped = await api.pop(queue, "p", batch=10)
        assert popped is not None and [m["data"]["n"] for m in popped["messages"]] == [6, 7]


@pytest.mark.timeout(60)
async def test_a_partition_emptied_under_a_cursor_does_not_stall_pops(
    db: Db, server: ServerProcess
) -> None:
    """Partition `a`, read least recently, is the first a pop tries; once eviction has removed
    what was pending there, the pop must go on to `b` instead of coming back empty (the pop
    steps over the gap; retention leaves cursors alone)."""
    queue = unique("gap")
    async with Api(server.url) as api:
        await configure(api, queue, maxWaitTimeSeconds=30)
        await api.push(queue, [{"n": n} for n in range(3)], partition="a")
        await consume(api, queue, "a", 1)
        await api.push(queue, [{"n": n} for n in range(3)], partition="b")
        await consume(api, queue, "b", 1)
        a = await db.partition_id(queue, "a")
        await db.age(a, 60)
        await db.eviction_cycle()
        assert await db.seqs(a) == [1]

        popped = await api.pop(queue, batch=10)
        assert popped is not None and popped["partition"] == "b"
        assert [m["data"]["n"] for m in popped["messages"]] == [1, 2]


@pytest.mark.timeout(60)
async def test_a_partition_that_cannot_be_cleaned_does_not_stop_the_cycle(
    db: Db, server: ServerProcess
) -> None:
    queue = unique("poison")
    async with Api(server.url) as api:
        await configure(api, queue, retentionEnabled=True, retentionSeconds=60)
        for name in ("bad", "good"):
            await api.push(queue, [{"n": n} for n in range(3)], partition=name)
    bad, good = await db.partition_id(queue, "bad"), await db.partition_id(queue, "good")
    await db.age(bad, 120)
    await db.age(good, 120)
    await db.fetch(
        "CREATE FUNCTION public.refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" IF OLD.partition_id = '{bad}' THEN RAISE EXCEPTION 'poisoned partition'; END IF;"
        " RETURN OLD; END $$"
    )
    await db.fetch(
        "CREATE TRIGGER refuse_delete BEFORE DELETE ON queen.messages"
        " FOR EACH ROW EXECUTE FUNCTION public.refuse_delete()"
    )
    try:
        result = await db.retention_cycle()
    finally:
        await db.fetch("DROP TRIGGER refuse_delete ON queen.messages")
        await db.fetch("DROP FUNCTION public.refuse_delete()")
    assert result["errors"] == 1 and "poisoned partition" in result["error"]
    assert await db.seqs(bad) == [1, 2, 3]
    assert await db.seqs(good) == [], "the other partition is cleaned all the same"


@pytest.mark.timeout(60)
async def test_one_cycle_at_a_time_across_connections(db: Db, server: ServerProcess) -> None:
    queue = unique("locked")
    async with Api(server.url) as api:
        await configure(api, queue, retentionEnabled=True, retentionSeconds=60)
        for name in ("a", "b", "c"):
            await api.push(queue, [{"n": n} for n in range(5)], partition=name)
        partitions = [await db.partition_id(queue, name) for name in ("a", "b", "c")]
        for partition in partitions:
            await db.age(partition, 120)
        await db.retention_cycle()  # makes sure the cycle-start stamp row exists
        await api.push(queue, [{"n": "late"}], partition="a")
        await db.age(partitions[0], 120)

    async with trio_asyncio.open_loop(), session(db) as holder:
        await aio(holder.execute)("SELECT pg_advisory_lock(737001)")
        skipped = await db.retention_cycle(wait_for_lock=False)
        assert skipped == {"ran": False, "reason": "locked"}
        assert await db.seqs(partitions[0]) == [6], "a skipped cycle deletes nothing"
        await aio(holder.execute)("SELECT pg_advisory_unlock(737001)")

        # Hold the first cycle right after it took the lock (on its start stamp), start a
        # second one on another connection, then let the first go.
        await aio(holder.execute)("BEGIN")
        await aio(holder.execute)(
            "SELECT 1 FROM queen.system_state WHERE key = 'service_round:retention' FOR UPDATE"
        )
        first: list[dict[str, Any]] = []

        async def first_cycle() -> None:
            first.append(await db.retention_cycle(wait_for_lock=False))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_cycle)

            async def first_holds_the_lock() -> bool:
                held = await db.value(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 737001"
                    " AND granted"
                )
                return bool(held)

            await eventually(first_holds_the_lock)
            second = await db.retention_cycle(wait_for_lock=False)
            assert second == {"ran": False, "reason": "locked"}
            await aio(holder.execute)("ROLLBACK")
    assert first[0]["ran"] and first[0]["retention"] >= 1
    assert await db.seqs(partitions[0]) == []
    assert await db.history(partitions[0]) == [("retention", 5), ("retention", 1)]


@pytest.mark.timeout(60)
async def test_partition_cleanup_respects_partition_cleanup_days(
    db: Db, server: ServerProcess
) -> None:
    queue = unique("idle")
    names = ("idle", "recent", "holds", "read_lately", "read_long_ago")
    async with Api(server.url) as api:
        for name in names:
            await api.push(queue, [{"n": name}], partition=name)
        for name in ("read_lately", "read_long_ago"):
            await consume(api, queue, name, 1)
    ids = {name: await db.partition_id(queue, name) for name in names}
    await db.fetch(
        "DELETE FROM queen.messages WHERE partition_id = ANY($1::uuid[])",
        [ids[n] for n in names if n != "holds"],
    )
    for name, days in (
        ("idle", 40),
        ("recent", 10),
        ("holds", 40),
        ("read_lately", 40),
        ("read_long_ago", 40),
    ):
        await db.fetch(
            "UPDATE queen.partitions SET created_at = now() - make_interval(days => $2),"
            " last_activity = now() - make_interval(days => $2) WHERE id = $1",
            ids[name],
            days,
        )
    await db.fetch(
        "UPDATE queen.partition_consumers SET created_at = now() - interval '40 days',"
        " last_consumed_at = now() - make_interval(days => $2) WHERE partition_id = $1",
        ids["read_long_ago"],
        35,
    )
    await db.fetch(
        "UPDATE queen.partition_consumers SET created_at = now() - interval '40 days',"
        " last_consumed_at = now() - interval '5 days' WHERE partition_id = $1",
        ids["read_lately"],
    )

    async def remaining() -> set[str]:
        rows = await db.fetch(
            "SELECT p.name FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id"
            " WHERE q.name = $1",
            queue,
        )
        return {row["name"] for row in rows}

    cleanup_rows = (
        "SELECT count(*) FROM queen.retention_history WHERE retention_type = 'partition_cleanup'"
    )
    before = await db.value(cleanup_rows)
    await db.retention_cycle(days=45)
    assert await remaining() == set(names), "nothing is idle for 45 days"
    result = await db.retention_cycle(days=30)
    assert result["partitionsDropped"] >= 2
    assert await remaining() == {"recent", "holds", "read_lately"}
    assert await db.value(cleanup_rows) - before == 2
    cursors = await db.value(
        "SELECT count(*) FROM queen.partition_consumers WHERE partition_id = $1",
        ids["read_long_ago"],
    )
    assert cursors == 0, "a dropped partition takes its cursors with it"


@pytest.mark.timeout(60)
async def test_old_consumption_log_and_history_rows_are_pruned_in_batches(
    db: Db, server: ServerProcess
) -> None:
    queue = unique("logs")
    async with Api(server.url) as api:
        await api.push(queue, [{"n": n} for n in range(7)])
        for _ in range(7):
            await consume(api, queue, "Default", 1)
    partition = await db.partition_id(queue)
    await db.fetch(
        "INSERT INTO queen.retention_history (partition_id, messages_deleted, retention_type,"
        " executed_at) SELECT $1, n, 'retention', now() - make_interval(days => n * 20)"
        " FROM generate_series(1, 7) n",
        partition,
    )
    await db.fetch(
        "UPDATE queen.messages_consumed SET acked_at = now() - interval '100 days' WHERE id IN"
        " (SELECT id FROM queen.messages_consumed WHERE partition_id = $1 ORDER BY acked_at"
        " LIMIT 5)",
        partition,
    )

    async def logged() -> int:
        return int(
            await db.value(
                "SELECT count(*) FROM queen.messages_consumed WHERE partition_id = $1", partition
            )
        )

    assert await logged() == 7
    result = await db.retention_cycle(batch=2, metrics_days=90)
    assert result["consumedLogDeleted"] >= 5 and result["historyDeleted"] >= 3
    assert await logged() == 2, "rows younger than METRICS_RETENTION_DAYS stay"
    assert [n for _, n in await db.history(partition)] == [4, 3, 2, 1], "20..80 days old stay"


@pytest.mark.timeout(60)
async def test_consumer_groups_idle_past_their_limit_are_forgotten(
    db: Db, server: ServerProcess
) -> None:
    queue = unique("groups")
    async with Api(server.url) as api:
        # `gone` subscribes from now on (metadata, watermark) and reads what follows, the others
        # read everything; `leased` holds a lease it never acks.
        await api.push(queue, [{"n": n} for n in range(3)])
        assert await api.pop(queue, consumerGroup="gone", subscriptionMode="new") is None
        await api.push(queue, [{"n": n} for n in range(3, 6)])
        await consume(api, queue, "Default", 3, "gone")
        for group in ("alive", "watching", None):
            await consume(api, queue, "Default", 6, group)
        assert await api.pop(queue, "Default", batch=1, consumerGroup="leased") is not None

        await db.fetch(
            "UPDATE queen.partition_consumers pc"
            " SET created_at = pc.created_at - interval '40 days',"
            " last_consumed_at = pc.last_consumed_at - interval '40 days',"
            " lease_acquired_at = pc.lease_acquired_at - interval '40 days'"
            " FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id"
            " WHERE p.id = pc.partition_id AND q.name = $1",
            queue,
        )
        await db.fetch(
            "UPDATE queen.consumer_groups_metadata SET created_at = now() - interval '40 days'"
            " WHERE queue_name = $1",
            queue,
        )
        await db.fetch(
            "UPDATE queen.consumer_watermarks SET updated_at = now() - interval '40 days'"
            " WHERE queue_name = $1",
            queue,
        )
        # Still used: an empty queue-wide pop, and a consumed message.
        assert await api.pop(queue, consumerGroup="watching") is None
        await api.push(queue, [{"n": 6}])
        await consume(api, queue, "Default", 1, "alive")

        async def remembered() -> dict[str, set[str]]:
            tables = {
                "cursors": "SELECT pc.consumer_group AS g FROM queen.partition_consumers pc"
                " JOIN queen.partitions p ON p.id = pc.partition_id"
                " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1",
                "metadata": "SELECT consumer_group AS g FROM queen.consumer_groups_metadata"
                " WHERE queue_name = $1",
                "watermarks": "SELECT consumer_group AS g FROM queen.consumer_watermarks"
                " WHERE queue_name = $1",
            }
            return {
                name: {row["g"] for row in await db.fetch(sql, queue)}
                for name, sql in tables.items()
            }

        before = await remembered()
        assert "gone" in before["metadata"] and "gone" in before["watermarks"]
        await db.retention_cycle(group_days=0)
        await db.retention_cycle(group_days=45)
        assert await remembered() == before, "0 means never; nobody is idle for 45 days"

        result = await db.retention_cycle(group_days=30)
        assert result["groupsDropped"] >= 1
        after = await remembered()
        assert after["cursors"] == {"alive", "watching", "leased", "__QUEUE_MODE__"}
        assert "gone" not in after["metadata"] | after["watermarks"]

        back = await api.pop(queue, batch=10, consumerGroup="gone")
        assert back is not None, "a forgotten group that comes back starts as a new group"
        assert [m["data"]["n"] for m in back["messages"]] == list(range(7))


def _actor_config(db: Db, **overrides: Any) -> tuple[Config, ConnectParams]:
    parts = db.cluster.dsn_parts()
    config = Config().with_database(
        str(parts["host"]), int(parts["port"]), str(parts["user"]), str(parts["password"]), db.name
    )
    config = dataclasses.replace(config, **overrides)
    return config, ConnectParams.from_config(config, "queen-test")


@pytest.mark.timeout(60)
async def test_the_actor_runs_both_cycles_on_its_interval(db: Db, server: ServerProcess) -> None:
    aged, evicted = unique("actor-age"), unique("actor-evict")
    async with Api(server.url) as api:
        await configure(api, aged, retentionEnabled=True, retentionSeconds=60)
        await configure(api, evicted, maxWaitTimeSeconds=60)
        await api.push(aged, [{"n": n} for n in range(3)])
        await api.push(evicted, [{"n": n} for n in range(3)])
    partitions = [await db.partition_id(aged), await db.partition_id(evicted)]

    config, params = _actor_config(db, retention_interval=200, eviction_interval=200)
    actor = RetentionServices(config, params)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        for partition in partitions:
            await db.age(partition, 120)

        async def all_deleted() -> bool:
            return not any([await db.seqs(p) for p in partitions])

        await eventually(all_deleted)
        nursery.cancel_scope.cancel()
    assert await db.history(partitions[0]) == [("retention", 3)]
    assert await db.history(partitions[1]) == [("max_wait_time_eviction", 3)]
    assert actor.last_outcome.keys() == {"retention", "eviction"}


@pytest.mark.timeout(30)
async def test_the_actor_survives_an_unreachable_database(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    config, params = _actor_config(db, retention_interval=100, eviction_interval=100)
    params = dataclasses.replace(params, port=free_port(), connect_timeout_s=1.0)
    actor = RetentionServices(config, params)
    caplog.set_level(logging.DEBUG, logger="queen")
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        await nursery.start(actor.run)

        async def three_cycles_logged() -> bool:
            return len([r for r in caplog.records if r.name == "queen.retention"]) >= 3

        await eventually(three_cycles_logged)
        nursery.cancel_scope.cancel()
    records = [r for r in caplog.records if r.name == "queen.retention"]
    assert [r.levelno for r in records[:3]] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "failed" in records[0].getMessage()


@pytest.mark.timeout(90)
async def test_the_server_runs_the_cycles_itself(
    db: Db, pg_cluster: PgCluster, database: str
) -> None:
    env = server_env(pg_cluster, database, RETENTION_INTERVAL="500", EVICTION_INTERVAL="500")
    busy = ServerProcess({**env, "NUM_WORKERS": "2"}).start()
    try:
        queue = unique("served")
        async with Api(busy.url) as api:
            await configure(api, queue, retentionEnabled=True, retentionSeconds=60)
            await api.push(queue, [{"n": n} for n in range(4)])
        partition = await db.partition_id(queue)
        await db.age(partition, 120)

        async def deleted() -> bool:
            return not await db.seqs(partition)

        await eventually(deleted, 30)
        assert await db.history(partition) == [("retention", 4)], "done once, by one worker"
    finally:
        busy.stop()


# Fault test 6 (issue #4): retention under load removes only what the rules allow ---------------

RETENTION_S, COMPLETED_S, MAX_WAIT_S = 3, 1, 2
GROUPS = ("fast", "slow")
AUDIT_SQL = (
    """
CREATE TABLE IF NOT EXISTS public.deleted_messages (
    id uuid, partition_id uuid, seq bigint, created_at timestamptz, deleted_at timestamptz,
    cursors jsonb)
""",
    """
CREATE OR REPLACE FUNCTION public.audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.deleted_messages
    SELECT OLD.id, OLD.partition_id, OLD.seq, OLD.created_at, clock_timestamp(),
           (SELECT coalesce(jsonb_object_agg(consumer_group, last_consumed_seq), '{}')
            FROM queen.partition_consumers WHERE partition_id = OLD.partition_id);
    RETURN OLD;
END $$
""",
    """
CREATE OR REPLACE TRIGGER audit_delete AFTER DELETE ON queen.messages
FOR EACH ROW EXECUTE FUNCTION public.audit_delete()
""",
)


@dataclasses.dataclass
class Load:
    pushed: dict[str, str] = dataclasses.field(default_factory=dict)  # message id -> queue
    received: dict[str, set[str]] = dataclasses.field(
        default_factory=lambda: {g: set() for g in GROUPS}
    )
    failed_acks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    acks: int = 0


@pytest.mark.timeout(120)
@pytest.mark.faults
async def test_retention_under_load_removes_only_what_the_rules_allow(
    db: Db, server: ServerProcess
) -> None:
    aged, evicted = unique("load-age"), unique("load-evict")
    for statement in AUDIT_SQL:
        await db.fetch(statement)
    config, params = _actor_config(
        db, retention_interval=200, eviction_interval=200, retention_batch_size=50
    )
    actor = RetentionServices(config, params)
    load = Load()
    rng = random.Random(4)
    try:
        async with Api(server.url) as api:
            await configure(
                api,
                aged,
                retentionEnabled=True,
                retentionSeconds=RETENTION_S,
                completedRetentionSeconds=COMPLETED_S,
            )
            await configure(api, evicted, maxWaitTimeSeconds=MAX_WAIT_S)
            pushing = trio.Event()

            async def producer(queue: str) -> None:
                while not pushing.is_set():
                    items = [{"q": queue} for _ in range(rng.randint(1, 5))]
                    for result in await api.push(queue, items, partition=f"p{rng.randint(0, 3)}"):
                        load.pushed[result["message_id"]] = queue
                    await trio.sleep(0.01)

            async def consumer(queue: str, group: str, pause: tuple[float, float]) -> None:
                """`slow` stops reading for a while (so messages age out unread) and then holds
                one lease through the pause (so leased messages age past every limit)."""
                start = trio.current_time()
                while True:
                    elapsed = trio.current_time() - start
                    popped = await api.pop(queue, batch=10, consumerGroup=group)
                    if popped is None:
                        if pushing.is_set():
                            return
                        await trio.sleep(0.02)
                        continue
                    messages = popped["messages"]
                    load.received[group].update(m["id"] for m in messages)
                    if pause[0] <= elapsed < pause[1]:
                        await trio.sleep(pause[1] - elapsed)
                    results = await api.ack_batch(messages, group=group)
                    load.acks += len(results)
                    load.failed_acks.extend(r for r in results if not r["success"])

            async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
                await nursery.start(actor.run)
                async with trio.open_nursery() as clients:
                    for queue in (aged, evicted):
                        clients.start_soon(producer, queue)
                        clients.start_soon(consumer, queue, "fast", (99.0, 99.0))
                        clients.start_soon(consumer, queue, "slow", (2.0, 6.5))
                    await trio.sleep(9)
                    pushing.set()
                nursery.cancel_scope.cancel()
    finally:
        await db.fetch("DROP TRIGGER IF EXISTS audit_delete ON queen.messages")

    rows = await db.fetch(
        "SELECT d.*, q.name AS queue, extract(epoch FROM d.deleted_at - d.created_at) AS age"
        " FROM public.deleted_messages d JOIN queen.partitions p ON p.id = d.partition_id"
        " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = ANY($1::text[])",
        [aged, evicted],
    )
    deleted = {str(row["id"]): row for row in rows}
    by_rule = {"age": 0, "completed": 0, "evicted": 0}
    for row in rows:
        cursors = json.loads(row["cursors"])
        passed_by_all = all(cursors.get(g, 0) >= row["seq"] for g in GROUPS)
        if row["queue"] == aged:
            if row["age"] >= RETENTION_S:
                by_rule["age"] += 1
            else:
                assert row["age"] >= COMPLETED_S and passed_by_all, dict(row)
                by_rule["completed"] += 1
        else:
            assert row["age"] >= MAX_WAIT_S and not passed_by_all, dict(row)
            by_rule["evicted"] += 1

    assert load.failed_acks == [], "an ack failed: a message was deleted inside a live lease"
    remaining = {
        str(row["id"])
        for row in await db.fetch(
            "SELECT m.id FROM queen.messages m JOIN queen.partitions p ON p.id = m.partition_id"
            " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = ANY($1::text[])",
            [aged, evicted],
        )
    }
    limit = {aged: RETENTION_S, evicted: MAX_WAIT_S}
    for group in GROUPS:
        for message_id, queue in load.pushed.items():
            if message_id in load.received[group] or message_id in remaining:
                continue
            row = deleted.get(message_id)
            assert row is not None, f"{message_id} vanished without a deletion"
            assert row["age"] >= limit[queue], f"{group} lost {message_id} before its time"
    assert by_rule["age"] > 0 and by_rule["completed"] > 0 and by_rule["evicted"] > 0, by_rule
    print(f"load: pushed {len(load.pushed)}, acks {load.acks}, deleted by rule {by_rule}")
