"""Samples one worker's health every METRICS_SAMPLE_INTERVAL_MS and writes its current minute to
PostgreSQL every METRICS_AGGREGATE_INTERVAL_S and at each minute's end (operations spec §5.2,
§5.3).

A sample is the lateness of this actor's own timer (the event loop's lag), connection slots,
batcher lanes, parked long-polls, the disk buffer and the process's CPU and memory. Each goes to
the Prometheus gauges at once and into the minute's tally (queen/metrics/tally.py). A write that
fails is logged and retried with the next one: the minute's totals are rewritten whole each time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import trio

from queen.actors.batcher import Lane
from queen.actors.slots import SlotPool
from queen.config import Config
from queen.db import metrics
from queen.metrics.families import Families
from queen.metrics.process import ProcessSample
from queen.metrics.process import sample as sample_process
from queen.metrics.recorder import Recorder
from queen.metrics.tally import WorkerMinute

log = logging.getLogger("queen.metrics")

WRITE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Watched:
    """What a sample reads, each owned by another actor and only read here."""

    hot: SlotPool
    admin: SlotPool
    lanes: Sequence[Lane]
    parked: Callable[[], int]
    parked_by_queue: Callable[[], Mapping[str, int]]
    buffer_state: Callable[[], tuple[int, int, bool]]  # pending, failed, replay reaches the db
    maintenance: Callable[[], bool]
    in_flight: Callable[[], int]


class MetricsSampler:
    def __init__(
        self,
        config: Config,
        worker_id: int,
        families: Families,
        recorder: Recorder,
        watched: Watched,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.families = families
        self.recorder = recorder
        self.watched = watched
        self.interval_s = config.metrics_sample_interval_ms / 1000
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.monotonic()
        self._last_process: tuple[float, ProcessSample] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        due = trio.current_time() + self.interval_s
        last_write = trio.current_time()
        while True:
            await trio.sleep_until(due)
            lag_s = max(0.0, trio.current_time() - due)
            due = max(due + self.interval_s, trio.current_time())
            self.sample(lag_s)
            finished = self.recorder.roll(time.time())
            if finished is not None:
                await self._write(finished)
                last_write = trio.current_time()
            elif trio.current_time() - last_write >= self.config.metrics_aggregate_interval_s:
                await self._write(self.recorder.minute)
                last_write = trio.current_time()

    def sample(self, lag_s: float) -> None:
        families, watched, minute = self.families, self.watched, self.recorder.minute
        hot, admin = watched.hot, watched.admin
        queued = sum(lane.waiting for lane in watched.lanes)
        parked = watched.parked()
        minute.add_health(
            lag_s * 1000,
            hot.free,
            hot.health.connected + admin.health.connected,
            queued,
            parked,
        )
        families.event_loop_lag_seconds.set(lag_s)
        families.uptime_seconds.set(time.monotonic() - self.started)
        families.parked_pops.set(parked)
        for queue, waiting in watched.parked_by_queue().items():
            minute.queue(queue).parked_sum += waiting
        for pool in (hot, admin):
            families.slots_size.labels(pool.name).set(pool.size)
            families.slots_connected.labels(pool.name).set(pool.health.connected)
            families.slots_busy.labels(pool.name).set(pool.health.connected - pool.free)
            families.slots_waiting.labels(pool.name).set(pool.waiting)
        for lane in watched.lanes:
            families.lane_queued.labels(lane.name).set(lane.waiting)
            families.lane_in_flight.labels(lane.name).set(lane.limit.limiter.borrowed_tokens)
            families.lane_limit.labels(lane.name).set(lane.limit.limit)
        pending, failed, replay_ok = watched.buffer_state()
        families.buffer_pending.set(pending)
        families.buffer_failed.set(failed)
        families.buffer_db_healthy.set(1 if replay_ok else 0)
        families.maintenance_mode.set(1 if watched.maintenance() else 0)
        self._sample_process(minute)

    def _sample_process(self, minute: WorkerMinute) -> None:
        now, current = time.monotonic(), sample_process()
        families, watched = self.families, self.watched
        families.resident_bytes.set(current.resident_bytes)
        families.virtual_bytes.set(current.virtual_bytes)
        samples: dict[tuple[str, ...], float] = {
            ("memory", "rss_bytes"): current.resident_bytes,
            ("memory", "virtual_bytes"): current.virtual_bytes,
            ("database", "pool_size"): watched.hot.size + watched.admin.size,
            ("database", "pool_idle"): watched.hot.free + watched.admin.free,
            ("database", "pool_active"): (
                watched.hot.health.connected
                - watched.hot.free
                + watched.admin.health.connected
                - watched.admin.free
            ),
            ("registries", "response"): watched.in_flight(),
        }
        if self._last_process is not None:
            then, previous = self._last_process
            user_s = max(0.0, current.cpu_user_s - previous.cpu_user_s)
            system_s = max(0.0, current.cpu_system_s - previous.cpu_system_s)
            families.cpu_user_us.inc(user_s * 1_000_000)
            families.cpu_system_us.inc(system_s * 1_000_000)
            elapsed = now - then
            if elapsed > 0:
                # percent x 100 over the real time between samples (spec §4.12, quirk O31)
                samples["cpu", "user_us"] = round(user_s / elapsed * 10_000, 1)
                samples["cpu", "system_us"] = round(system_s / elapsed * 10_000, 1)
        self._last_process = (now, current)
        minute.add_process(samples)

    async def _write(self, minute: WorkerMinute) -> None:
        try:
            with trio.fail_after(WRITE_TIMEOUT_S + 1):
                await metrics.record_minute(
                    self.watched.admin, self.rows(minute), timeout_s=WRITE_TIMEOUT_S
                )
        except Exception as error:  # the next write carries the same totals again
            log.warning("could not write this worker's metrics", extra={"error": str(error)})

    def rows(self, minute: WorkerMinute) -> dict[str, Any]:
        key = {
            "bucket": minute.bucket.isoformat(),
            "hostname": self.hostname,
            "worker_id": self.worker_id,
            "pid": self.pid,
        }
        worker = {
            k: v for k, v in asdict(minute).items() if k not in ("bucket", "queues", "process")
        }
        worker["ack_messages"] = minute.ack_success + minute.ack_failed
        system = None
        if minute.process:
            system = {
                "bucket": key["bucket"],
                "hostname": self.hostname,
                "port": self.config.port,
                "worker_id": str(self.worker_id),
                "sample_count": minute.samples,
                "metrics": {**minute.process_tree(), "shared_state": {"enabled": False}},
            }
        return {
            "worker": {**worker, **key},
            "queues": [
                # parked_sum / samples: the queue's average of parked pops over the minute
                {**asdict(per_queue), "samples": minute.samples, "queue_name": name, **key}
                for name, per_queue in minute.queues.items()
            ],
            "system": system,
        }
