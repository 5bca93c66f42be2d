"""The one place a worker counts what it did: the batcher reports each answered request and each
procedure call here (queen/actors/root.py, queen/actors/batcher.py), below both HTTP paths, so a
push counts once whichever route or replay made it. Each report goes to the Prometheus families
(shared by the workers) and to the current minute's tally (written to PostgreSQL by the sampler).

Kept cheap on purpose: a report touches a few counters per request, never one per message, except
pop lag, which needs each delivered message's age.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from queen.metrics.families import Families
from queen.metrics.tally import WorkerMinute

_FAILED_ACKS = frozenset(("failed", "dlq", "retry"))


def minute_of(now: float) -> datetime:
    return datetime.fromtimestamp(now - now % 60, UTC)


class Recorder:
    def __init__(self, families: Families) -> None:
        self.families = families
        self.minute = WorkerMinute(bucket=minute_of(time.time()))

    def roll(self, now: float) -> WorkerMinute | None:
        """Start the minute `now` falls in; the finished one, if the minute changed."""
        bucket = minute_of(now)
        if bucket == self.minute.bucket:
            return None
        finished, self.minute = self.minute, WorkerMinute(bucket=bucket)
        return finished

    def pushed(self, queues: Iterable[str]) -> None:
        """One push request (or replayed chunk) answered: the queues of the messages it stored."""
        stored = Tally(queues)
        count = sum(stored.values())
        minute = self.minute
        minute.push_requests += 1
        minute.push_messages += count
        self.families.push_requests.inc()
        if count:
            self.families.push_messages.inc(count)
        for queue, messages in stored.items():
            per_queue = minute.queue(queue)
            per_queue.push_requests += 1
            per_queue.push_messages += messages

    def popped(self, requests: Sequence[Any], results: Sequence[Any]) -> None:
        now = time.time()
        minute = self.minute
        delivered = 0
        for request, result in zip(requests, results, strict=False):
            messages = result.get("messages") if isinstance(result, dict) else None
            queue = (result.get("queue") if isinstance(result, dict) else None) or request.queue
            per_queue = minute.queue(queue) if queue else None
            minute.pop_requests += 1
            if per_queue is not None:
                per_queue.pop_requests += 1
            if not messages:
                minute.pop_empty += 1
                if per_queue is not None:
                    per_queue.pop_empty += 1
                continue
            count = len(messages)
            delivered += count
            lags = [_age_ms(message.get("createdAt"), now) for message in messages]
            minute.pop_messages += count
            minute.add_lag(lags)
            if per_queue is not None:
                per_queue.pop_messages += count
                per_queue.add_lag(lags)
            if request.auto_ack:
                self._acks_counted(queue, count, 0, requests=0)
        self.families.pop_requests.inc(len(requests))
        empty = len(requests) - sum(1 for r in results if isinstance(r, dict) and r.get("messages"))
        if empty:
            self.families.pop_empty.inc(empty)
        if delivered:
            self.families.pop_messages.inc(delivered)

    def acked(self, items: Sequence[Any], results: Sequence[Any]) -> None:
        """One ack request (single or batch) answered."""
        success = failed = rejected = moved = 0
        per_queue: dict[str, list[int]] = {}
        for item, result in zip(items, results, strict=False):
            if not result.get("success"):
                rejected += 1
                continue
            if result.get("dlq"):
                moved += 1
            counts = per_queue.setdefault(result.get("queueName") or "", [0, 0])
            if item.status in _FAILED_ACKS:
                failed += 1
                counts[1] += 1
            else:
                success += 1
                counts[0] += 1
        self.minute.ack_requests += 1
        self.minute.dlq_count += moved
        self.families.ack_requests.inc()
        for queue, (ok, nok) in per_queue.items():
            self._acks_counted(queue or None, ok, nok, requests=1)
        if rejected:
            self.families.ack_messages.labels("rejected").inc(rejected)
        if moved:
            self.families.dlq_moves.inc(moved)

    def _acks_counted(self, queue: str | None, success: int, failed: int, *, requests: int) -> None:
        minute = self.minute
        minute.ack_success += success
        minute.ack_failed += failed
        if queue:
            per_queue = minute.queue(queue)
            per_queue.ack_requests += requests
            per_queue.ack_success += success
            per_queue.ack_failed += failed
        if success:
            self.families.ack_messages.labels("success").inc(success)
        if failed:
            self.families.ack_messages.labels("failed").inc(failed)

    def transacted(self, results: Sequence[Any]) -> None:
        outcome = results[0] if results else {}
        committed = bool(outcome.get("success"))
        self.minute.transactions += 1
        self.families.transactions.labels("committed" if committed else "failed").inc()
        if committed:
            queues = {entry.get("queueName") for entry in outcome.get("results", [])}
            for queue in queues - {None}:
                self.minute.queue(queue).transactions += 1

    def call_done(
        self, op: str, seconds: float, items: int, waits: Iterable[float], failed: bool
    ) -> None:
        """One batch procedure call returned (or failed) after `seconds`, carrying `items` items
        for requests that had waited `waits` seconds in their lane before it started."""
        families = self.families
        families.db_call_seconds.labels(op).observe(seconds)
        families.batch_items.labels(op).observe(items)
        wait_histogram = families.lane_wait_seconds.labels(op)
        for wait in waits:
            wait_histogram.observe(wait)
        if failed:
            families.db_errors.labels(op).inc()
            self.minute.db_errors += 1


def _age_ms(created_at: Any, now: float) -> float:
    if not isinstance(created_at, str):
        return 0.0
    try:
        return max(0.0, (now - datetime.fromisoformat(created_at).timestamp()) * 1000)
    except ValueError:
        return 0.0
