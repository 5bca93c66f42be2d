"""The body of `GET /metrics/prometheus` (operations spec §2.3): first what the workers of this
`queen serve` recorded (merged from their shared files), then what one database call reports
(queue depth, oldest pending age, dead letters, leases, the recorded totals). If that call fails
the second part is left out and `queen_database_up` says 0, so a scrape never fails for it.

Gauges of process state count live workers only: a worker that died leaves its gauge files
behind (it could not remove them), so each scrape removes those of pids no longer alive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from queen.metrics.families import process_alive

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")
CLUSTER = {"scope": "cluster"}
# Lifetime totals the workers wrote to worker_metrics: (name, snapshot key, help).
RECORDED_TOTALS = (
    ("queen_cluster_push_requests", "push_requests", "Push requests recorded by every instance"),
    ("queen_cluster_pop_requests", "pop_requests", "Pop attempts recorded by every instance"),
    ("queen_cluster_ack_requests", "ack_requests", "Ack requests recorded by every instance"),
    ("queen_cluster_transactions", "transactions", "Transactions recorded by every instance"),
    ("queen_cluster_push_messages", "push_messages", "Messages pushed, every instance"),
    ("queen_cluster_pop_messages", "pop_messages", "Messages popped, every instance"),
    ("queen_cluster_ack_messages", "ack_messages", "Messages acknowledged, every instance"),
    ("queen_cluster_db_errors", "db_errors", "Failed batch calls, every instance"),
    ("queen_cluster_dlq", "dlq", "Messages moved to the dead-letter queue, every instance"),
)


def forget_dead_workers(directory: Path) -> None:
    for entry in os.scandir(directory):
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match and not process_alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), str(directory))  # type: ignore[no-untyped-call]


class DatabaseFigures:
    """A collector over one `queen.prometheus_snapshot()` answer (None: the call failed)."""

    def __init__(self, snapshot: dict[str, Any] | None, seconds: float) -> None:
        self.snapshot = snapshot
        self.seconds = seconds

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "queen_database_up", "1 when the scrape's database query answered", value=1
        )
        if self.snapshot is None:
            up = GaugeMetricFamily("queen_database_up", up.documentation, value=0)
            yield up
            return
        yield up
        yield GaugeMetricFamily(
            "queen_database_scrape_seconds", "Time the scrape's database query took", self.seconds
        )
        yield from self._per_queue(self.snapshot["queues"])
        yield _cluster_gauge("queen_leases_held", "Live partition leases", self.snapshot["leases"])
        yield _cluster_gauge("queen_dlq_depth", "Dead-letter rows", self.snapshot["deadLetter"])
        recorded = self.snapshot["recorded"]
        for name, key, doc in RECORDED_TOTALS:
            family = CounterMetricFamily(name, doc, labels=["scope"])
            family.add_metric(["cluster"], recorded[key])
            yield family
        acks = CounterMetricFamily(
            "queen_cluster_ack",
            "Acknowledgements by result, every instance",
            labels=["scope", "result"],
        )
        acks.add_metric(["cluster", "success"], recorded["ack_success"])
        acks.add_metric(["cluster", "failed"], recorded["ack_failed"])
        yield acks

    @staticmethod
    def _per_queue(queues: Iterable[dict[str, Any]]) -> Iterator[Metric]:
        families = {
            "pending": GaugeMetricFamily(
                "queen_queue_depth",
                "Messages pending for the most lagging group (leased ones included)",
                labels=["queue"],
            ),
            "processing": GaugeMetricFamily(
                "queen_queue_processing", "Messages inside live leases", labels=["queue"]
            ),
            "oldestPendingSeconds": GaugeMetricFamily(
                "queen_queue_oldest_pending_age_seconds",
                "Age of the oldest pending message (0 when none)",
                labels=["queue"],
            ),
            "partitions": GaugeMetricFamily(
                "queen_queue_partitions", "Partitions of the queue", labels=["queue"]
            ),
            "deadLetter": GaugeMetricFamily(
                "queen_dlq_depth_by_queue", "Dead-letter rows of the queue", labels=["queue"]
            ),
        }
        for queue in queues:
            for key, family in families.items():
                family.add_metric([queue["queue"]], queue[key])
        yield from families.values()


def _cluster_gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["scope"])
    family.add_metric(["cluster"], value)
    return family


def render(directory: Path, database: DatabaseFigures) -> bytes:
    """Blocking (reads every worker's files): run it off the event loop."""
    forget_dead_workers(directory)
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    registry.register(database)
    return generate_latest(registry)
