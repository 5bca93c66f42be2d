"""One worker's figures for the current UTC minute, as the rows of queen.worker_metrics,
queue_lag_metrics and system_metrics hold them (sql/schema/05_observability.sql). Pure
bookkeeping: the recorder adds to it, the sampler writes it out and starts the next minute."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Stat:
    """Samples of one value: what system_metrics keeps as {avg, min, max, last}."""

    total: float = 0.0
    count: int = 0
    low: float = 0.0
    high: float = 0.0
    last: float = 0.0

    def add(self, value: float) -> None:
        self.low = value if self.count == 0 else min(self.low, value)
        self.high = value if self.count == 0 else max(self.high, value)
        self.total += value
        self.count += 1
        self.last = value

    def as_json(self) -> dict[str, float]:
        average = self.total / self.count if self.count else 0.0
        return {"avg": round(average, 2), "min": self.low, "max": self.high, "last": self.last}


@dataclass
class Traffic:
    """Request and message counts and pop lag: the columns worker and queue rows share."""

    push_requests: int = 0
    push_messages: int = 0
    pop_requests: int = 0
    pop_messages: int = 0
    pop_empty: int = 0
    ack_requests: int = 0
    ack_success: int = 0
    ack_failed: int = 0
    transactions: int = 0
    lag_count: int = 0
    lag_sum_ms: float = 0.0
    lag_max_ms: float = 0.0

    def add_lag(self, lags_ms: list[float]) -> None:
        if lags_ms:
            self.lag_count += len(lags_ms)
            self.lag_sum_ms += sum(lags_ms)
            self.lag_max_ms = max(self.lag_max_ms, *lags_ms)


@dataclass
class QueueMinute(Traffic):
    parked_sum: float = 0.0  # parked pops on the queue, summed over the worker's samples


@dataclass
class WorkerMinute(Traffic):
    bucket: datetime = field(default_factory=datetime.now)
    samples: int = 0
    event_loop_lag_sum_ms: float = 0.0
    event_loop_lag_max_ms: float = 0.0
    free_slots_sum: float = 0.0
    free_slots_min: int = 0
    db_connections: int = 0
    job_queue_sum: float = 0.0
    job_queue_max: int = 0
    backoff_size: int = 0
    db_errors: int = 0
    dlq_count: int = 0
    queues: dict[str, QueueMinute] = field(default_factory=dict)
    process: dict[tuple[str, ...], Stat] = field(default_factory=dict)

    def queue(self, name: str) -> QueueMinute:
        minute = self.queues.get(name)
        if minute is None:
            minute = self.queues[name] = QueueMinute()
        return minute

    def add_health(
        self, loop_lag_ms: float, free_slots: int, connections: int, job_queue: int, parked: int
    ) -> None:
        """One second's sample of the worker's health."""
        self.free_slots_min = (
            free_slots if self.samples == 0 else min(self.free_slots_min, free_slots)
        )
        self.samples += 1
        self.event_loop_lag_sum_ms += loop_lag_ms
        self.event_loop_lag_max_ms = max(self.event_loop_lag_max_ms, loop_lag_ms)
        self.free_slots_sum += free_slots
        self.db_connections = max(self.db_connections, connections)
        self.job_queue_sum += job_queue
        self.job_queue_max = max(self.job_queue_max, job_queue)
        self.backoff_size = max(self.backoff_size, parked)

    def add_process(self, samples: dict[tuple[str, ...], float]) -> None:
        for path, value in samples.items():
            stat = self.process.get(path)
            if stat is None:
                stat = self.process[path] = Stat()
            stat.add(value)

    def process_tree(self) -> dict[str, Any]:
        """The samples in system_metrics' nested shape (operations spec §4.12)."""
        tree: dict[str, Any] = {}
        for path, stat in self.process.items():
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = stat.as_json()
        return tree
