"""Observability seen by an operator of a real two-worker `queen serve` (issue #16): after a known
workload, Prometheus counters equal what was pushed, popped and acked, queue depth equals the
pending count in SQL, every status and analytics route reports the same workload, bad input is
refused with 400/404, requests carry ids into the logs, and old metric rows are pruned.

The server writes its metric rows every second here (METRICS_AGGREGATE_INTERVAL_S=1) instead of
every minute, so the routes fed by them are checked by waiting for a condition, not for time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from queen.storage.pgcluster import PgCluster
from tests.integration.api import unique
from tests.support import ServerProcess, run_sql, server_env, wait_until

PUSH_REQUESTS = 12
MESSAGES_PER_PUSH = 3
POP_BATCH = 4
POPS = 4
FAILED_ACKS = 1  # a failed ack gives the whole batch back: one per batch


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    env = server_env(
        pg_cluster,
        database,
        NUM_WORKERS="2",
        METRICS_AGGREGATE_INTERVAL_S="1",
        METRICS_SAMPLE_INTERVAL_MS="200",
        RETENTION_INTERVAL="1000",
        LOG_FORMAT="json",
        QUEEN_ACCESS_LOG="info",
    )
    process = ServerProcess(env).start()
    try:
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class Workload:
    queue: str
    pushed: int
    popped: int
    acked: int
    failed: int


def _call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A fresh connection per call: the kernel spreads connections over both workers."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.request(method, path, **kwargs)


def _get(server: ServerProcess, path: str, **params: Any) -> Any:
    response = _call(server, "GET", path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def workload(server: ServerProcess) -> Workload:
    """Pushes, pops and acks a known number of messages on one queue (a few acks negative)."""
    queue = unique("metrics")
    for request in range(PUSH_REQUESTS):
        items = [
            {"queue": queue, "payload": {"n": request * MESSAGES_PER_PUSH + i}}
            for i in range(MESSAGES_PER_PUSH)
        ]
        assert _call(server, "POST", "/api/v1/push", json={"items": items}).status_code == 201
    # The partition is leased until its batch is acked: pop, ack, pop again. The last batch is
    # acked as failed, which gives it back for redelivery (still pending).
    for batch, status in [*[(POP_BATCH, "completed")] * POPS, (FAILED_ACKS, "failed")]:
        body = _get(server, f"/api/v1/pop/queue/{queue}", batch=batch, wait="false")
        assert len(body["messages"]) == batch
        acks = [
            {
                "transactionId": m["transactionId"],
                "partitionId": m["partitionId"],
                "leaseId": m["leaseId"],
                "status": status,
            }
            for m in body["messages"]
        ]
        response = _call(server, "POST", "/api/v1/ack/batch", json={"acknowledgments": acks})
        assert response.status_code == 200 and all(r["success"] for r in response.json())
    acked = POPS * POP_BATCH
    return Workload(
        queue, PUSH_REQUESTS * MESSAGES_PER_PUSH, acked + FAILED_ACKS, acked, FAILED_ACKS
    )


def _scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = _call(server, "GET", "/metrics/prometheus")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _pending_in_sql(cluster: PgCluster, database: str, queue: str) -> int:
    rows = run_sql(
        cluster,
        """SELECT count(*) AS n FROM queen.messages m
           JOIN queen.partitions p ON p.id = m.partition_id
           JOIN queen.queues q ON q.id = p.queue_id
           WHERE q.name = $1 AND m.seq > coalesce(
               (SELECT pc.last_consumed_seq FROM queen.partition_consumers pc
                WHERE pc.partition_id = p.id AND pc.consumer_group = '__QUEUE_MODE__'), 0)""",
        queue,
        database=database,
    )
    return int(rows[0]["n"])


def test_prometheus_counts_the_workload_of_both_workers(
    server: ServerProcess, workload: Workload, pg_cluster: PgCluster, database: str
) -> None:
    samples = _scrape(server)
    assert samples["queen_push_messages_total", ()] == workload.pushed
    assert samples["queen_push_requests_total", ()] == PUSH_REQUESTS
    assert samples["queen_pop_messages_total", ()] == workload.popped
    assert samples["queen_ack_messages_total", (("result", "success"),)] == workload.acked
    assert samples["queen_ack_messages_total", (("result", "failed"),)] == workload.failed
    assert samples["queen_db_call_duration_seconds_count", (("op", "push"),)] >= 1
    depth = samples["queen_queue_depth", (("queue", workload.queue),)]
    assert depth == _pending_in_sql(pg_cluster, database, workload.queue)
    assert depth == workload.pushed - workload.acked
    assert samples["queen_queue_oldest_pending_age_seconds", (("queue", workload.queue),)] > 0
    assert samples["queen_database_up", ()] == 1
    assert samples["queen_connection_slots", (("pool", "hot"),)] > 0
    assert samples["queen_process_resident_memory_bytes", ()] > 0
    assert samples["queen_leases_held", (("scope", "cluster"),)] == 0
    # A second scrape, answered by either worker, sees the same totals.
    assert _scrape(server)["queen_push_messages_total", ()] == workload.pushed


def test_both_workers_report_and_the_status_route_sees_the_workload(
    server: ServerProcess, workload: Workload
) -> None:
    def recorded() -> bool:
        body = _get(server, "/api/v1/status", queue=workload.queue)
        return sum(point["ingested"] for point in body["throughput"]) == workload.pushed and sum(
            point["processed"] for point in body["throughput"]
        ) == (workload.acked + workload.failed)

    wait_until(recorded, 20, "the workers' metric rows to hold the workload", every_s=0.3)
    body = _get(server, "/api/v1/status", queue=workload.queue)
    assert sum(point["popMessages"] for point in body["throughput"]) == workload.popped
    remaining = workload.pushed - workload.acked
    assert body["messages"]["total"] == workload.pushed
    assert body["messages"]["pending"] == remaining
    assert body["messages"]["completed"] == workload.acked
    assert body["messages"]["processing"] == 0
    assert [q["name"] for q in body["queues"]] == [workload.queue]
    assert body["queues"][0]["totalConsumed"] == workload.acked
    assert body["bucketMinutes"] == 1
    assert body["deadLetterQueue"] == {"totalMessages": 0, "affectedPartitions": 0, "topErrors": []}
    assert {worker["workerId"] for worker in body["workers"]} == {0, 1}

    unfiltered = _get(server, "/api/v1/status")
    assert sum(p["ingested"] for p in unfiltered["throughput"]) >= workload.pushed
    assert unfiltered["messages"]["batchEfficiency"]["push"] == MESSAGES_PER_PUSH


def test_status_queue_routes_report_the_workload(server: ServerProcess, workload: Workload) -> None:
    remaining = workload.pushed - workload.acked
    listed = _get(server, "/api/v1/status/queues", queue=workload.queue)
    assert listed["total"] == 1 and listed["pagination"] == {"limit": 100, "offset": 0}
    assert listed["queues"][0]["messages"] == {
        "total": workload.pushed,
        "pending": remaining,
        "processing": 0,
        "completed": workload.acked,
        "deadLetter": 0,
    }

    detail = _get(server, f"/api/v1/status/queues/{workload.queue}")
    assert detail["queue"]["name"] == workload.queue
    assert detail["totals"]["total"] == workload.pushed
    assert detail["totals"]["messages"]["pending"] == remaining
    [partition] = detail["partitions"]
    assert partition["cursor"]["totalConsumed"] == workload.acked
    assert partition["messages"] == partition["stats"]
    assert partition["oldestMessage"] is not None

    everything = _get(server, f"/api/v1/status/queues/{workload.queue}/messages", limit=1000)
    assert len(everything) == workload.pushed
    statuses = [message["status"] for message in everything]
    assert statuses.count("completed") == workload.acked
    assert statuses.count("pending") == remaining
    assert [m["createdAt"] for m in everything] == sorted(
        (m["createdAt"] for m in everything), reverse=True
    )
    second_page = _get(
        server, f"/api/v1/status/queues/{workload.queue}/messages", limit=5, offset=5
    )
    assert [m["id"] for m in second_page] == [m["id"] for m in everything[5:10]]


def test_analytics_routes_report_the_workload(server: ServerProcess, workload: Workload) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    analytics = _get(
        server,
        "/api/v1/status/analytics",
        queue=workload.queue,
        interval="minute",
        **{"from": since},
    )
    assert sum(point["messages"] for point in analytics["dataPoints"]) == workload.pushed
    assert len(analytics["dataPoints"]) in (10, 11)

    def workers_listed() -> bool:
        body = _get(server, "/api/v1/analytics/worker-metrics")
        return {w["workerId"] for w in body["workers"]} == {0, 1} and any(
            q["queueName"] == workload.queue and q["popCount"] == workload.popped
            for q in body["queues"]
        )

    wait_until(workers_listed, 20, "both workers and the queue's pops in worker-metrics", 0.3)
    workers = _get(server, "/api/v1/analytics/worker-metrics")
    assert workers["summary"]["totalPushMessages"] >= workload.pushed
    assert workers["timeSeries"] and workers["bucketMinutes"] == 1
    one = _get(server, "/api/v1/analytics/worker-metrics", workerId=1)
    assert {w["workerId"] for w in one["workers"]} == {1}

    system = _get(server, "/api/v1/analytics/system-metrics")
    assert system["replicaCount"] == 2
    point = system["replicas"][0]["timeSeries"][-1]
    assert point["metrics"]["memory"]["rss_bytes"]["avg"] > 0
    assert set(point["metrics"]["cpu"]) == {"user_us", "system_us"}

    postgres = _get(server, "/api/v1/analytics/postgres-stats")
    assert "messages" in {table["table"] for table in postgres["tableSizes"]}
    assert postgres["databaseCache"]["database"]
    assert postgres["bufferUsage"] == []


def test_per_queue_analytics_report_the_workload(server: ServerProcess, workload: Workload) -> None:
    def ops() -> list[dict[str, Any]]:
        body = _get(server, "/api/v1/analytics/queue-ops", queue=workload.queue)
        assert body["queues"] in ([], [workload.queue])
        return list(body["series"])

    def counted() -> bool:
        series = ops()
        return sum(point["pushMessages"] for point in series) == workload.pushed and sum(
            point["ackSuccess"] + point["ackFailed"] for point in series
        ) == (workload.acked + workload.failed)

    wait_until(counted, 20, "queue-ops to hold the workload", every_s=0.3)
    series = ops()
    assert sum(point["popMessages"] for point in series) == workload.popped
    assert sum(point["ackFailed"] for point in series) == workload.failed
    assert sum(point["partitionsCreated"] for point in series) == 1
    assert all(point["partitionCount"] == 1 for point in series)

    lag = _get(server, "/api/v1/analytics/queue-lag", queue=workload.queue)
    assert sum(row["popCount"] for row in lag) == workload.popped
    assert [row["bucketTime"] for row in lag] == sorted(
        (r["bucketTime"] for r in lag), reverse=True
    )

    retention = _get(server, "/api/v1/analytics/retention", queue=workload.queue)
    assert retention["series"] == [] and retention["totals"]["totalMsgs"] == 0


def test_parked_long_polls_are_reported_per_worker(server: ServerProcess) -> None:
    queue = unique("parked")
    assert _call(server, "POST", "/api/v1/configure", json={"queue": queue}).status_code == 200
    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(
            _call, server, "GET", f"/api/v1/pop/queue/{queue}", params={"wait": "true", "timeout": "5000"}
        )

        def reported() -> bool:
            body = _get(server, "/api/v1/analytics/queue-parked-replicas", queue=queue)
            return any(point["parkedCount"] > 0 for point in body["series"])

        wait_until(reported, 15, "the parked pop in queue-parked-replicas", every_s=0.3)
        assert len(_get(server, "/api/v1/analytics/queue-parked-replicas")["replicas"]) >= 1
        assert waiting.result(timeout=15).status_code == 204


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/v1/status/queues/no-such-queue", {}, 404),
        ("/api/v1/status", {"from": "yesterday"}, 400),
        ("/api/v1/status", {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 400),
        ("/api/v1/status", {"from": "2001-01-01T00:00:00Z"}, 400),
        ("/api/v1/status/queues", {"limit": "100000"}, 400),
        ("/api/v1/status/queues", {"offset": "-1"}, 400),
        ("/api/v1/status/queues/q/messages", {"limit": "5000"}, 400),
        ("/api/v1/status/analytics", {"interval": "fortnight"}, 400),
        ("/api/v1/status/analytics", {"interval": "minute", "from": "2026-01-01T00:00:00Z"}, 400),
        ("/api/v1/analytics/worker-metrics", {"workerId": "two"}, 400),
        ("/api/v1/analytics/system-metrics", {"to": "not a time"}, 400),
        ("/api/v1/analytics/queue-ops", {"from": "2026-13-01"}, 400),
        ("/api/v1/analytics/retention", {"from": "2030-01-01T00:00:00Z"}, 400),
    ],
)
def test_bad_input_is_refused(
    server: ServerProcess, path: str, params: dict[str, str], status: int
) -> None:
    response = _call(server, "GET", path, params=params)
    assert response.status_code == status
    assert isinstance(response.json()["error"], str)


def test_unknown_queue_has_no_messages(server: ServerProcess) -> None:
    assert _get(server, "/api/v1/status/queues/no-such-queue/messages") == []


def test_request_ids_are_echoed_and_logged(server: ServerProcess) -> None:
    chosen = _call(server, "GET", "/api/v1/status/queues", headers={"X-Request-Id": "abc-123"})
    assert chosen.headers["x-request-id"] == "abc-123"
    drawn = _call(server, "GET", "/health", headers={"X-Request-Id": "no spaces allowed"})
    drawn_id = drawn.headers["x-request-id"]
    assert drawn_id != "no spaces allowed" and len(drawn_id) == 32

    def logged() -> list[dict[str, Any]]:
        lines = [line for line in server.log_path.read_text().splitlines() if "abc-123" in line]
        return [json.loads(line) for line in lines]

    wait_until(lambda: bool(logged()), 10, "the access log line")
    [entry] = logged()
    assert entry["logger"] == "queen.access" and entry["level"] == "info"
    assert entry["request_id"] == "abc-123"
    assert entry["path"] == "/api/v1/status/queues" and entry["status"] == 200


def test_metric_rows_past_retention_are_pruned(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    run_sql(
        pg_cluster,
        """INSERT INTO queen.worker_metrics (bucket, hostname, worker_id, pid)
           VALUES (now() - interval '91 days', 'gone-host', 7, 1)""",
        database=database,
    )

    def old_rows() -> int:
        rows = run_sql(
            pg_cluster,
            "SELECT count(*) AS n FROM queen.worker_metrics"
            " WHERE bucket < now() - interval '90 days'",
            database=database,
        )
        return int(rows[0]["n"])

    wait_until(lambda: old_rows() == 0, 15, "the janitor to prune the 91-day-old row", 0.2)
