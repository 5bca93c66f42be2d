"""Samples one worker's health every METRICS_SAMPLE_INTERVAL_MS and writes its current minute to
PostgreSQL every METRICS_AGGREGATE_INTERVAL_S and at each minute's end (operations spec §5.2,
§5.3), from a writer task of its own so a slow or absent database never delays a sample.

A sample is the lateness of this actor's own timer (the event loop's lag), connection slots,
batcher lanes, parked long-polls, the disk buffer and the process's CPU and memory. Each goes to
the Prometheus gauges at once and into the minute's tally (queen/metrics/tally.py). A write that
fails is retried after METRICS_AGGREGATE_INTERVAL_S; a minute's rows are its totals, rewritten
whole each time, so a retry or a later write never counts anything twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
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
MAX_UNWRITTEN = 60  # minutes of rows kept for the database while it is away


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
        self._failing = False
        self._unwritten: dict[datetime, dict[str, Any]] = {}
        self._wake_writer = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                task_status.started()
                await self._sample_loop()
        finally:  # stopping: what the last interval counted still reaches the shared files
            self.recorder.pending.flush()

    async def _sample_loop(self) -> None:
        """Samples on time whatever the database does: writes go to `_write_loop`."""
        due = trio.current_time() + self.interval_s
        last_write = trio.current_time()
        while True:
            await trio.sleep_until(due)
            lag_s = max(0.0, trio.current_time() - due)
            due = max(due + self.interval_s, trio.current_time())
            self.sample(lag_s)
            finished = self.recorder.roll(time.time())
            if finished is not None:
                self._queue_write(finished)
                last_write = trio.current_time()
            elif trio.current_time() - last_write >= self.config.metrics_aggregate_interval_s:
                self._queue_write(self.recorder.minute)
                last_write = trio.current_time()

    def _queue_write(self, minute: WorkerMinute) -> None:
        """The newest rows of each minute wait for the writer; a minute's later rows replace its
        earlier ones, and during a long outage only the last MAX_UNWRITTEN minutes are kept."""
        self._unwritten[minute.bucket] = self.rows(minute)
        while len(self._unwritten) > MAX_UNWRITTEN:
            del self._unwritten[min(self._unwritten)]
        self._wake_writer.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            while self._unwritten:
                bucket = min(self._unwritten)
                rows = self._unwritten.pop(bucket)
                if not await self._write(rows):
                    self._unwritten.setdefault(bucket, rows)  # unless newer rows came meanwhile
                    await trio.sleep(self.config.metrics_aggregate_interval_s)

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
        families.db_pool_size.set(admin.size)
        families.db_pool_idle.set(admin.free)
        families.db_pool_active.set(admin.health.connected - admin.free)
        families.in_flight_requests.labels(str(self.worker_id)).set(watched.in_flight())
        families.shared_state_enabled.set(0)
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
        self.recorder.pending.flush()

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

    async def _write(self, rows: dict[str, Any]) -> bool:
        try:
            with trio.fail_after(WRITE_TIMEOUT_S + 1):
                await metrics.record_minute(self.watched.admin, rows, timeout_s=WRITE_TIMEOUT_S)
        except Exception as error:
            # Once per outage at warning; every write fails while the database is away.
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "could not write this worker's metrics", extra={"error": str(error)})
            self._failing = True
            return False
        self._failing = False
        return True

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
