"""Maintenance switches and the disk buffer as an operator meets them: pushes buffered while push
maintenance is on and replayed once it is off, pops paused only by pop maintenance, damaged buffer
files replayed as far as they are readable, one buffer directory per running instance, and the
buffer's state visible in /health and /metrics.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio

from queen.ids import uuid7_str
from queen.storage.file_buffer import LENGTH, encode
from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    Ledger,
    assert_exactly_once,
    buffer_state,
    eventually,
    new_database,
    push_batch,
    push_load,
    report,
    stored_async,
    wait_drained,
)
from tests.integration.api import Api, unique
from tests.support import ServerProcess, server_env


async def set_switch(api: Api, path: str, enabled: bool) -> dict[str, Any]:
    status, body = await api.request("POST", path, json={"enabled": enabled})
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def consume_all(api: Api, queue: str, deliveries: Counter[str]) -> int:
    """Pop (any partition) and ack until the queue answers empty; returns messages consumed."""
    consumed = 0
    while (popped := await api.pop(queue, batch=50)) is not None:
        deliveries.update(m["transactionId"] for m in popped["messages"])
        results = await api.ack_batch(popped["messages"])
        assert all(r["success"] for r in results), results
        consumed += len(popped["messages"])
    return consumed


async def test_maintenance_on_and_off_under_load_loses_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique("maint")
    ledger = Ledger()
    stop = trio.Event()
    deliveries: Counter[str] = Counter()
    seen: dict[str, Any] = {}
    async with Api(server.url) as api:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        push_load,
                        server.url,
                        queue,
                        ledger,
                        stop,
                        tag="m",
                        producers=3,
                        batch=2,
                        pace_s=0.03,
                        max_messages=3000,
                        partitions=3,
                    )
                )
                await eventually(lambda: len(ledger.acknowledged) >= 60, 10, "stored pushes")
                switched = await set_switch(api, "/api/v1/system/maintenance", True)
                assert switched["maintenanceMode"] is True
                on_at = time.monotonic()
                await eventually(lambda: ledger.buffered >= 60, 10, "buffered pushes")
                state = await buffer_state(api.client)
                assert state is not None
                seen["during"] = state
                seen["health"] = (await api.request("GET", "/health"))[1]["fileBuffer"]
                seen["metrics"] = (await api.request("GET", "/metrics"))[1]["fileBuffer"]

                # Pop maintenance pauses pops although PostgreSQL holds deliverable messages.
                await set_switch(api, "/api/v1/system/maintenance/pop", True)
                status, pop_state = await api.request("GET", "/api/v1/system/maintenance/pop")
                assert status == 200 and pop_state["popMaintenanceMode"] is True
                paused = [await api.pop(queue, batch=50) for _ in range(3)]
                waiting_in_db = sum((await stored_async(pg_cluster, database, queue)).values())
                await set_switch(api, "/api/v1/system/maintenance/pop", False)

                # Push maintenance alone does not stop consumers: what is stored is delivered.
                during_maintenance = await consume_all(api, queue, deliveries)
                off = await set_switch(api, "/api/v1/system/maintenance", False)
                off_at = time.monotonic()
                assert off["maintenanceMode"] is False

                def stored_again() -> bool:
                    return any(
                        at > off_at and "queued" in statuses for at, _, statuses in ledger.answers
                    )

                await eventually(stored_again, 10, "pushes to reach PostgreSQL again")
                stop.set()
        finally:
            await set_switch(api, "/api/v1/system/maintenance/pop", False)
            await set_switch(api, "/api/v1/system/maintenance", False)
        rows = await wait_drained(
            api.client, pg_cluster, database, queue, expected=set(ledger.acknowledged)
        )
        after_replay = await consume_all(api, queue, deliveries)

    in_maintenance = [
        s for at, _, statuses in ledger.answers if on_at + 0.2 < at < off_at for s in statuses
    ]
    figures = report(
        "maintenance",
        ledger,
        rows,
        buffered_during=seen["during"]["bufferedMessages"],
        pops_under_pop_maintenance=sum(p is not None for p in paused),
        stored_while_pops_paused=waiting_in_db,
        consumed_during_push_maintenance=during_maintenance,
        consumed_after_replay=after_replay,
        consumed=sum(deliveries.values()),
        delivered_twice=sum(n > 1 for n in deliveries.values()),
    )
    assert_exactly_once(ledger, rows)
    assert figures["failed"] == 0 and figures["unanswered"] == 0
    assert in_maintenance and set(in_maintenance) == {"buffered"}
    assert seen["during"]["maintenanceMode"] is True and seen["during"]["bufferedMessages"] >= 60
    assert seen["health"]["pending"] > 0 and seen["metrics"]["pending"] > 0
    assert seen["health"]["dbHealthy"] is True
    assert paused == [None, None, None] and waiting_in_db > 0
    assert during_maintenance > 0, "pops continue under push maintenance"
    assert set(deliveries) == set(ledger.acknowledged), "every message consumed"
    assert figures["delivered_twice"] == 0


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def record(queue: str, txid: str) -> bytes:
    return encode(
        {
            "queue": queue,
            "partition": "Default",
            "payload": {"tx": txid},
            "transactionId": txid,
            "failover": True,
        }
    )


async def test_damaged_buffer_files_replay_what_is_readable(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    database = await new_database(pg_cluster)
    queue = unique("damaged")
    env = server_env(pg_cluster, database, FILE_BUFFER_DIR=str(tmp_path / "buffer"))
    worker_dir = tmp_path / "buffer" / "w0"
    worker_dir.mkdir(parents=True, mode=0o700)
    files = {
        # A record whose JSON is garbage, in the middle of the file.
        "corrupt-middle": [
            record(queue, "a1"),
            record(queue, "a2"),
            frame(b'{"queue": "' + queue.encode() + b'", "transac'),
            record(queue, "a3"),
        ],
        # Power cut mid-write: the last record is shorter than its length prefix says.
        "truncated-end": [record(queue, "b1"), record(queue, "b2"), record(queue, "b3")[:-7]],
        # A record without a transactionId cannot be deduplicated, so it is not replayed.
        "no-txid": [
            record(queue, "c1"),
            frame(orjson.dumps({"queue": queue, "payload": 1})),
            record(queue, "c2"),
        ],
    }
    for parts in files.values():
        (worker_dir / f"failover_{uuid7_str()}.buf").write_bytes(b"".join(parts))
    # The original implementation's layout: one buffer right in FILE_BUFFER_DIR, with failed/
    # and an active file its crash left behind.
    root = tmp_path / "buffer"
    (root / "failed").mkdir(mode=0o700)
    (root / f"failover_{uuid7_str()}.buf").write_bytes(record(queue, "d1") + record(queue, "d2"))
    (root / "failed" / f"failover_{uuid7_str()}.buf").write_bytes(record(queue, "e1"))
    (root / f"failover_{uuid7_str()}.buf.tmp").write_bytes(record(queue, "f1"))
    expected = {"a1", "a2", "a3", "b1", "b2", "c1", "c2", "d1", "d2", "e1", "f1"}
    server = ServerProcess(env).start()
    try:
        async with Api(server.url) as api:
            rows = await wait_drained(api.client, pg_cluster, database, queue, expected=expected)
            state = await buffer_state(api.client)
    finally:
        server.stop()
    log = server.log_path.read_text()
    lines = {
        "corrupt": log.count("skipping a corrupt buffer record"),
        "truncated": log.count("truncated record"),
        "no_txid": log.count("without queue or transactionId"),
    }
    print(
        f"\n[damaged-buffer] files={len(files) + 3} readable_records={len(expected)} "
        f"stored={sum(rows.values())} duplicates={sum(n - 1 for n in rows.values())} "
        f"log_lines={lines} left_in_buffer={sorted(p.name for p in root.rglob('*.buf*'))}"
    )
    assert rows == Counter(dict.fromkeys(expected, 1))
    assert lines == {"corrupt": 1, "truncated": 1, "no_txid": 1}
    assert state is not None and state["bufferedMessages"] == 0
    assert not list(root.rglob("*.buf*")), "replayed files are deleted"


async def test_a_record_postgres_rejects_is_quarantined_once(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    """A buffered record PostgreSQL will never take (here a traceId that is no UUID, written by
    an older version) must not block its file, nor be retried every second forever: it goes to
    failed/poison_*.buf, stays counted as buffered, and the log says so once."""
    database = await new_database(pg_cluster)
    queue = unique("poison")
    root = tmp_path / "buffer"
    (root / "w0").mkdir(parents=True, mode=0o700)
    bad = orjson.loads(record(queue, "bad")[LENGTH.size :])
    bad["traceId"] = "not-a-uuid"
    (root / "w0" / f"failover_{uuid7_str()}.buf").write_bytes(
        record(queue, "p1") + encode(bad) + record(queue, "p2")
    )
    server = ServerProcess(server_env(pg_cluster, database, FILE_BUFFER_DIR=str(root))).start()
    try:
        async with Api(server.url) as api:

            async def quarantined() -> bool:
                state = await buffer_state(api.client)
                return state is not None and state["bufferStats"]["failedFiles"]["count"] == 1

            await eventually(quarantined, 15, "the record to be quarantined")
            await trio.sleep(2.5)  # an observation window: retries would come every second
            state = await buffer_state(api.client)
            rows = await stored_async(pg_cluster, database, queue)
    finally:
        server.stop()
    poison = sorted(p.name for p in (root / "w0" / "failed").iterdir())
    log_lines = server.log_path.read_text().count("quarantined buffered records")
    assert state is not None
    print(
        f"\n[poison-record] stored={sorted(rows)} poison_files={poison} "
        f"bufferedMessages={state['bufferedMessages']} "
        f"failedCount={state['bufferStats']['failedCount']} "
        f"quarantine_log_lines={log_lines}"
    )
    assert rows == Counter({"p1": 1, "p2": 1})
    assert len(poison) == 1 and poison[0].startswith("poison_")
    assert state["bufferedMessages"] == 1 and state["bufferStats"]["failedCount"] == 1
    assert log_lines == 1


async def test_a_second_server_on_the_same_buffer_directory_refuses_to_start(
    server: ServerProcess,
) -> None:
    directory = server.env["FILE_BUFFER_DIR"]
    second = ServerProcess(dict(server.env))
    second.start(wait_healthy=False)
    assert second.process is not None
    code = await trio.to_thread.run_sync(partial(second.process.wait, 20))
    log = second.log()
    print(f"\n[buffer-lock] exit_code={code} log={log.strip().splitlines()[-1]!r}")
    assert code == 1
    assert directory in log and "in use" in log
    assert server.health_status() == 200, "the running instance is unaffected"


async def test_health_and_metrics_report_the_buffer(server: ServerProcess) -> None:
    queue = unique("visible")
    ledger = Ledger()
    async with Api(server.url) as api:
        for path in ("/health", "/metrics"):
            status, body = await api.request("GET", path)
            assert status == 200
            assert body["fileBuffer"]["pending"] == 0 and body["fileBuffer"]["dbHealthy"] is True
        await set_switch(api, "/api/v1/system/maintenance", True)
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                await push_batch(client, queue, [f"v{n}" for n in range(5)], ledger)
            buffered = {
                path: (await api.request("GET", path))[1]["fileBuffer"]
                for path in ("/health", "/metrics")
            }
        finally:
            await set_switch(api, "/api/v1/system/maintenance", False)

        async def drained() -> bool:
            _, body = await api.request("GET", "/metrics")
            return bool(body["fileBuffer"]["pending"] == 0)

        await eventually(drained, 10, "the buffer to drain")
    print(f"\n[buffer-visibility] buffered={ledger.buffered} reported={buffered}")
    assert ledger.buffered == 5
    for state in buffered.values():
        assert state["pending"] == 5 and state["dbHealthy"] is True and state["available"]


async def pinned_clients(url: str, workers: int) -> dict[int, httpx.AsyncClient]:
    """One keep-alive connection per worker: SO_REUSEPORT picks a worker per connection, so open
    connections until each worker answered one, and keep those."""
    pinned: dict[int, httpx.AsyncClient] = {}
    with trio.fail_after(20):
        while len(pinned) < workers:
            client = httpx.AsyncClient(
                base_url=url, limits=httpx.Limits(max_connections=1), timeout=10.0
            )
            worker = (await client.get("/health")).json()["worker_id"]
            if worker in pinned:
                await client.aclose()
            else:
                pinned[worker] = client
    return pinned


async def test_buffered_messages_reaches_zero_only_when_every_worker_drained(
    pg_cluster: PgCluster,
) -> None:
    """The JS maintenance test's pattern (poll bufferedMessages until 0, then expect everything)
    against two workers, each with a buffer of its own. Worker 1 holds most of the buffer and
    hears that maintenance is off only through its own poll of system_state; worker 0, which
    answers every request of the client, must still not report 0 before worker 1 has drained."""
    database = await new_database(pg_cluster)
    server = ServerProcess(server_env(pg_cluster, database, NUM_WORKERS="2")).start()
    queue = unique("workers")
    ledger = Ledger()
    try:
        pinned = await pinned_clients(server.url, 2)
        try:
            await pinned[0].post("/api/v1/system/maintenance", json={"enabled": True})
            for worker in (0, 1):
                state = await buffer_state(pinned[worker])  # applies the flag there at once
                assert state is not None and state["maintenanceMode"] is True
            await push_batch(pinned[0], queue, [f"w0-{n}" for n in range(10)], ledger)
            for n in range(20):
                await push_batch(pinned[1], queue, [f"w1-{n}-{k}" for k in range(100)], ledger)
            off = await pinned[0].post("/api/v1/system/maintenance", json={"enabled": False})
            assert off.status_code == 200
            polls = 0

            async def reported_empty() -> bool:
                nonlocal polls
                polls += 1
                state = await buffer_state(pinned[0])
                return state is not None and state["bufferedMessages"] == 0

            await eventually(reported_empty, 30, "bufferedMessages to reach 0", every_s=0.02)
            rows = await stored_async(pg_cluster, database, queue)
        finally:
            for client in pinned.values():
                await client.aclose()
    finally:
        server.stop()
    report("maintenance-two-workers", ledger, rows, polls_until_zero=polls)
    assert ledger.buffered == 2010
    assert_exactly_once(ledger, rows)
