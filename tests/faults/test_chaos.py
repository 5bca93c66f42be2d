"""Chaos (#13): mixed push / pop / ack / transaction traffic on a two-worker server while, round
after round, PostgreSQL restarts, a worker is SIGKILLed, the connections to PostgreSQL break, and
the buffer disk fills up during an outage. Afterwards every consumer group must have received
every acknowledged push exactly once, in each producer's order per partition, no request may
have been answered 500 or left unanswered, and the workers' memory must have stayed bounded.

Order is asserted among the messages that went straight to PostgreSQL. A worker keeps a
partition's later pushes behind the records its buffer holds for it (test_buffer_order.py), but
not another worker's: a producer whose connection lands on the other worker (its worker was
SIGKILLed and restarted with buffered records) can be stored before them. The figure
`order_breaks_with_buffered` counts the inversions that include buffered messages (about 90 per
run before the buffer held partitions back, 8 after, in one run here); it is reported, not
asserted, since which worker serves a producer is not recorded.

Faults are injected between conditions (the load noticed the last one and recovered), so a round
takes as long as recovery does; the rounds stop at ROUNDS or once CHAOS_BUDGET_S is spent.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    alive,
    buffer_state,
    eventually,
    fill_disk,
    mounted_tmpfs,
    new_database,
    rss_mib,
    served_by,
    sql,
)
from tests.faults.mixed_load import (
    QUEUE_MODE,
    GroupLedger,
    MixedLoad,
    missing_or_strange,
    order_breaks,
)
from tests.integration.api import unique
from tests.support import PausableProxy, ServerProcess, server_env

pytestmark = pytest.mark.faults

ROUNDS = 5
CHAOS_BUDGET_S = 90.0  # no round starts after this; one takes 10-15 s here
OUTAGE_S = 2.0  # how long PostgreSQL stays down once pushes have failed over
DRAIN_S = 45.0
LEASE_TIME_S = 5  # an ack lost to a fault frees its partition this soon
BUFFER_DISK = "2m"
# A worker starts near 50 MiB and peaked 5-15 MiB above that under this load (measured on the
# 2-core machine). What it may hold is bounded (inboxes, lanes' batches, parked long-polls,
# buffer write groups: a few MiB at this rate), so a worker that grows past its start by this
# much keeps something a run should not leave behind.
RSS_GROWTH_BOUND_MIB = 64.0


@pytest.fixture
def buffer_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    with mounted_tmpfs(tmp_path / "disk", BUFFER_DISK) as mount:
        yield mount


class Chaos:
    """The faults, each returning once the load shows it recovered."""

    def __init__(
        self,
        cluster: PgCluster,
        server: ServerProcess,
        proxy: PausableProxy,
        disk: Path,
        load: MixedLoad,
    ) -> None:
        self.cluster, self.server, self.proxy, self.disk, self.load = (
            cluster,
            server,
            proxy,
            disk,
            load,
        )
        self.done: list[str] = []

    def told(self, status: str) -> int:
        return self.load.production.told[status]

    async def more(self, status: str, count: int, within_s: float, what: str) -> None:
        target = self.told(status) + count
        await eventually(lambda: self.told(status) >= target, within_s, what)

    async def postgres_restart(self) -> None:
        await trio.to_thread.run_sync(self.cluster.stop)
        await self.more("buffered", 5, 15, "pushes to fail over to the disk buffer")
        await trio.sleep(OUTAGE_S)  # the outage itself: a deliberate duration
        await trio.to_thread.run_sync(self.cluster.start)
        await self.more("queued", 10, 20, "pushes to reach PostgreSQL again")
        self.done.append("postgres_restart")

    async def worker_sigkill(self, index: int) -> None:
        victim = self.server.worker_pids()[index]
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: not alive(victim), 5, "the worker to die")
        await eventually(
            lambda: self.server.worker_pids().get(index, victim) != victim,
            15,
            "the parent to restart the worker",
        )
        await eventually(
            partial(served_by, self.server.url, index), 15, "the new worker to serve", every_s=0
        )
        await self.more("queued", 10, 15, "pushes after the restart")
        self.done.append(f"worker_sigkill_{index}")

    async def connection_drops(self, times: int) -> None:
        for _ in range(times):
            self.proxy.drop()
            await self.more("queued", 5, 15, "pushes over new connections")
        self.done.append(f"connection_drops_{times}")

    async def disk_full_during_outage(self) -> None:
        refused = partial(self.load.calls.answers.__getitem__, ("push", 503))
        await trio.to_thread.run_sync(self.cluster.stop)
        await self.more("buffered", 5, 15, "pushes to fail over to the disk buffer")
        filler = await trio.to_thread.run_sync(fill_disk, self.disk, 0)
        before = refused()
        await eventually(lambda: refused() > before, 15, "a push refused for want of disk")
        await trio.to_thread.run_sync(filler.unlink)
        await self.more("buffered", 5, 15, "pushes buffered again once the disk has room")
        await trio.to_thread.run_sync(self.cluster.start)
        await self.more("queued", 10, 20, "pushes to reach PostgreSQL again")
        self.done.append("disk_full_during_outage")

    async def run(self) -> None:
        """ROUNDS rounds of every fault, within CHAOS_BUDGET_S; the producers stop after it."""
        started = time.monotonic()
        try:
            for round_index in range(ROUNDS):
                if time.monotonic() - started > CHAOS_BUDGET_S:
                    break
                await self.postgres_restart()
                await self.worker_sigkill(round_index % 2)
                await self.connection_drops(3)
                await self.disk_full_during_outage()
        finally:
            self.load.stop_producing.set()


async def sample_rss(server: ServerProcess, peaks: dict[int, float], stop: trio.Event) -> None:
    """The peak resident size of every worker (and the parent) seen during the run."""
    while not stop.is_set():
        for pid in [server.pid, *server.worker_pids().values()]:
            rss = rss_mib(pid)
            if rss is not None:
                peaks[pid] = max(peaks.get(pid, 0.0), rss)
        with trio.move_on_after(0.5):  # the sampling period
            await stop.wait()


async def behind(
    cluster: PgCluster, database: str, queue: str, groups: list[str]
) -> dict[str, int]:
    """Messages of `queue` each group's cursors have not passed yet."""
    rows = await sql(
        cluster,
        "SELECT g.name, sum(p.last_seq - coalesce(pc.last_consumed_seq, 0))::bigint AS behind "
        "FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id "
        "CROSS JOIN unnest($2::text[]) AS g(name) "
        "LEFT JOIN queen.partition_consumers pc "
        "ON pc.partition_id = p.id AND pc.consumer_group = g.name "
        "WHERE q.name = $1 GROUP BY g.name",
        queue,
        groups,
        database=database,
    )
    return {row["name"]: row["behind"] for row in rows}


def report(
    load: MixedLoad, chaos: Chaos, peaks: dict[int, float], lag: dict[str, int], elapsed_s: float
) -> tuple[dict[str, dict[str, list[str]]], dict[str, tuple[list[str], int]]]:
    """Print the run's figures (also when it failed half-way) and return the per-group checks."""
    groups = load.groups
    ledger = load.production.ledger
    checks = {g.name: missing_or_strange(load.production, g) for g in groups}
    orders = {g.name: order_breaks(load.production, g) for g in groups}
    print(
        f"\n[chaos] faults={chaos.done} elapsed_s={elapsed_s:.1f} "
        f"pushed={len(ledger.attempted)} acknowledged={len(ledger.acknowledged)} "
        f"statuses={dict(ledger.statuses())} given_up={len(ledger.failed)} "
        f"unanswered={len(ledger.unanswered)} "
        f"behind={lag} rss_peak_mib={ {pid: round(mib) for pid, mib in peaks.items()} }"
    )
    for group in groups:
        missing = checks[group.name]
        print(
            f"[chaos] group={group.name} {group.figures()} "
            f"missing={len(missing['missing'])} strangers={len(missing['strangers'])} "
            f"order_breaks_direct={len(orders[group.name][0])} "
            f"order_breaks_with_buffered={orders[group.name][1]}"
        )
    for route, answers in load.calls.by_route().items():
        print(f"[chaos] {route}: {answers}")

    return checks, orders


@pytest.mark.timeout(180)
async def test_chaos_loses_nothing_duplicates_nothing_and_never_answers_500(
    own_cluster: PgCluster, buffer_disk: Path
) -> None:
    cluster = own_cluster
    database = await new_database(cluster)
    proxy = PausableProxy(cluster.port)
    env = server_env(
        cluster,
        database,
        NUM_WORKERS="2",
        PG_HOST="127.0.0.1",
        PG_PORT=str(proxy.port),
        FILE_BUFFER_DIR=str(buffer_disk / "buffer"),
    )
    server = ServerProcess(env).start()
    queue = unique("chaos")
    groups = [GroupLedger("ga"), GroupLedger("gb"), GroupLedger(QUEUE_MODE)]
    load = MixedLoad(server.url, queue, groups)
    chaos = Chaos(cluster, server, proxy, buffer_disk, load)
    peaks: dict[int, float] = {}
    started_rss = 0.0
    lag: dict[str, int] = {}
    started = time.monotonic()
    try:
        with trio.fail_after(170):
            await eventually(lambda: len(server.worker_pids()) == 2, 10, "two workers")
            started_rss = max(rss_mib(pid) or 0.0 for pid in server.worker_pids().values())
            async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
                configured = await client.post(
                    "/api/v1/configure",
                    json={"queue": queue, "options": {"leaseTime": LEASE_TIME_S}},
                )
                assert configured.status_code == 200, configured.text
                async with trio.open_nursery() as consumers:
                    consumers.start_soon(sample_rss, server, peaks, load.stop_consuming)
                    ga, gb, queue_mode = groups
                    for group, style in (
                        (ga, "single"),
                        (ga, "batch"),
                        (gb, "transaction"),
                        (gb, "batch"),
                        (queue_mode, "batch"),
                        (queue_mode, "transaction"),
                    ):
                        consumers.start_soon(load.consumer, group, style)
                    async with trio.open_nursery() as producers:
                        for index, (style, batch) in enumerate(
                            [("push", 1), ("push", 1), ("push", 3), ("transaction", 2)]
                        ):
                            producers.start_soon(load.producer, index, style, batch)
                        await chaos.more("queued", 50, 15, "a healthy load")
                        producers.start_soon(chaos.run)

                    async def drained() -> bool:
                        nonlocal lag
                        state = await buffer_state(client)
                        if state is None or state["bufferedMessages"] != 0:
                            return False
                        if any(missing_or_strange(load.production, g)["missing"] for g in groups):
                            return False
                        lag = await behind(cluster, database, queue, [g.name for g in groups])
                        return not any(lag.values())

                    try:
                        await eventually(drained, DRAIN_S, "every group to drain", every_s=0.5)
                    finally:
                        load.stop_consuming.set()
    finally:
        server.stop()
        proxy.close()
        checks, orders = report(load, chaos, peaks, lag, time.monotonic() - started)
        print(f"[chaos] worker_rss_at_start_mib={started_rss:.0f}")

    assert len(chaos.done) >= 4 * 2, f"too few faults injected in the budget: {chaos.done}"
    for name, failures in checks.items():
        assert not failures["missing"], f"{name} never got {failures['missing'][:5]}"
        assert not failures["strangers"], f"{name} got unsent {failures['strangers'][:5]}"
        assert not failures["after_confirmed"], (
            f"{name} duplicates {failures['after_confirmed'][:5]}"
        )
        assert not orders[name][0], f"{name} out of order: {orders[name][0][:5]}"
    assert load.calls.count(500) == 0, load.calls.by_route()
    assert load.calls.count("ReadTimeout") == 0, "a request went unanswered for 20 s"
    assert max(peaks.values()) < started_rss + RSS_GROWTH_BOUND_MIB, peaks
