"""The Prometheus families this process records into, shared by every worker of one `queen serve`
through prometheus_client's multiprocess mode: each worker writes its values to memory-mapped
files in one directory per run, and whichever worker answers a scrape merges them all
(queen/metrics/exposition.py). Counters and histograms sum over workers, including workers that
have since died (their totals stay true); gauges of process state sum over the live workers only.

`open_families` must run before any family is made: prometheus_client picks its value storage when
a metric is built, and only the multiprocess storage is visible to the other workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, values

DIRECTORY_PREFIX = "queen-prometheus-"
# Seconds: a lone push round trip is ~1-10 ms, a 1000-message push tens of ms, a long-poll up to
# its timeout.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
OPS = ("push", "pop", "ack", "renew", "transaction")


@dataclass(frozen=True)
class Families:
    """Every family a worker writes; the names and labels operators query (docs/metrics.md)."""

    directory: Path
    push_requests: Counter
    pop_requests: Counter
    pop_empty: Counter
    ack_requests: Counter
    transactions: Counter
    push_messages: Counter
    pop_messages: Counter
    ack_messages: Counter
    dlq_moves: Counter
    db_errors: Counter
    db_call_seconds: Histogram
    batch_items: Histogram
    lane_wait_seconds: Histogram
    request_seconds: Histogram
    cpu_user_us: Counter
    cpu_system_us: Counter
    resident_bytes: Gauge
    virtual_bytes: Gauge
    uptime_seconds: Gauge
    lane_queued: Gauge
    lane_in_flight: Gauge
    lane_limit: Gauge
    slots_size: Gauge
    slots_connected: Gauge
    slots_busy: Gauge
    slots_waiting: Gauge
    parked_pops: Gauge
    buffer_pending: Gauge
    buffer_failed: Gauge
    buffer_db_healthy: Gauge
    maintenance_mode: Gauge
    event_loop_lag_seconds: Gauge


def run_directory(parent_pid: int, instance_id: str) -> Path:
    """The directory the workers of one `queen serve` share: named by that run, so a restarted
    server never adds the counters of the previous one."""
    return Path(tempfile.gettempdir()) / f"{DIRECTORY_PREFIX}{parent_pid}-{instance_id}"


def remove_stale_directories(keep: Path) -> None:
    """Directories of runs whose `queen serve` is gone (the parent pid in the name no longer
    lives): a crashed server cannot clean up after itself, so its successor does."""
    for candidate in keep.parent.glob(f"{DIRECTORY_PREFIX}*"):
        if candidate == keep:
            continue
        parent = candidate.name.removeprefix(DIRECTORY_PREFIX).split("-", 1)[0]
        if parent.isdigit() and not process_alive(int(parent)):
            shutil.rmtree(candidate, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_families(directory: Path) -> Families:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]

    def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, labels, registry=None)

    def live(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livesum") -> Gauge:
        return Gauge(name, doc, labels, registry=None, multiprocess_mode=mode)  # type: ignore[arg-type]

    def histogram(name: str, doc: str, labels: tuple[str, ...] = (), **kw: object) -> Histogram:
        return Histogram(name, doc, labels, registry=None, **kw)  # type: ignore[arg-type]

    return Families(
        directory=directory,
        push_requests=counter("queen_push_requests", "Push requests stored or refused"),
        pop_requests=counter("queen_pop_requests", "Pop attempts (each long-poll look counts)"),
        pop_empty=counter("queen_pop_empty", "Pop attempts that found nothing"),
        ack_requests=counter("queen_ack_requests", "Ack requests (a batch counts once)"),
        transactions=counter("queen_transactions", "Transactions run", ("result",)),
        push_messages=counter("queen_push_messages", "Messages stored by push and replay"),
        pop_messages=counter("queen_pop_messages", "Messages delivered by pop"),
        ack_messages=counter("queen_ack_messages", "Acknowledgements by outcome", ("result",)),
        dlq_moves=counter("queen_dlq_moves", "Messages moved to the dead-letter queue"),
        db_errors=counter("queen_db_errors", "Batch calls PostgreSQL failed", ("op",)),
        db_call_seconds=histogram(
            "queen_db_call_duration_seconds",
            "One batch procedure call, from the lane to its answer",
            ("op",),
            buckets=LATENCY_BUCKETS,
        ),
        batch_items=histogram(
            "queen_batch_items",
            "Items fused into one batch procedure call",
            ("op",),
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
        ),
        lane_wait_seconds=histogram(
            "queen_batcher_wait_seconds",
            "Time a request waited in its batcher lane before its call started",
            ("op",),
            buckets=LATENCY_BUCKETS,
        ),
        request_seconds=histogram(
            "queen_http_request_duration_seconds",
            "HTTP requests, from the first byte in to the last byte out",
            ("route", "method", "status"),
            buckets=LATENCY_BUCKETS,
        ),
        cpu_user_us=counter("queen_cpu_user_microseconds", "Process CPU time in user mode"),
        cpu_system_us=counter("queen_cpu_system_microseconds", "Process CPU time in the kernel"),
        resident_bytes=live("queen_process_resident_memory_bytes", "Resident memory (RSS)"),
        virtual_bytes=live("queen_process_virtual_memory_bytes", "Virtual memory size"),
        uptime_seconds=live(
            "queen_uptime_seconds", "Seconds since the oldest live worker started", mode="livemax"
        ),
        lane_queued=live("queen_batcher_queued", "Requests waiting in a batcher lane", ("op",)),
        lane_in_flight=live("queen_batcher_in_flight", "Batch calls in flight", ("op",)),
        lane_limit=live(
            "queen_batcher_concurrency_limit", "Adaptive limit on calls in flight", ("op",)
        ),
        slots_size=live("queen_connection_slots", "Connection slots", ("pool",)),
        slots_connected=live(
            "queen_connection_slots_connected", "Slots holding a connection", ("pool",)
        ),
        slots_busy=live("queen_connection_slots_busy", "Slots running a call", ("pool",)),
        slots_waiting=live(
            "queen_connection_slots_waiting", "Calls queued for a free slot", ("pool",)
        ),
        parked_pops=live("queen_queue_backoff_groups", "Long-polls parked waiting for messages"),
        buffer_pending=live("queen_file_buffer_pending", "Pushes held in the disk buffer"),
        buffer_failed=live("queen_file_buffer_failed", "Disk-buffer records in failed/"),
        buffer_db_healthy=live(
            "queen_file_buffer_db_healthy",
            "1 when the disk buffer's replay reaches PostgreSQL",
            mode="livemin",
        ),
        maintenance_mode=live(
            "queen_maintenance_mode_enabled", "1 while push maintenance is on", mode="livemax"
        ),
        event_loop_lag_seconds=live(
            "queen_event_loop_lag_seconds",
            "Largest lateness of a worker's 1 s timer",
            mode="livemax",
        ),
    )
