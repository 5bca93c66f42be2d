"""What the recorder counts from the batcher's answers (queen/metrics/recorder.py): per request
and per queue in the minute's tally, once per operation, with acks split by outcome and pop lag
taken from each delivered message's age; and the minute rolling over."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from queen.db.items import AckItem, PopRequest
from queen.metrics.families import open_families
from queen.metrics.recorder import Recorder, minute_of


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    return Recorder(open_families(tmp_path / "prometheus"))


def _pop(queue: str, auto_ack: bool = False) -> PopRequest:
    return PopRequest("__QUEUE_MODE__", 10, 1, auto_ack, "", "", "lease", queue=queue)


def _ack(status: str) -> AckItem:
    return AckItem("tx", "p", "__QUEUE_MODE__", "lease", status, None)


def _created(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def test_push_pop_and_ack_are_counted_per_request_and_per_queue(recorder: Recorder) -> None:
    recorder.pushed(["a", "a", "b"])
    recorder.popped(
        [_pop("a"), _pop("b")],
        [{"queue": "a", "messages": [{"createdAt": _created(2)}, {"createdAt": _created(4)}]},
         {"queue": "b", "messages": []}],
    )  # fmt: skip
    recorder.acked(
        [_ack("completed"), _ack("failed"), _ack("completed")],
        [{"success": True, "queueName": "a"}, {"success": True, "queueName": "a", "dlq": True},
         {"success": False, "queueName": "a"}],
    )  # fmt: skip
    minute = recorder.minute
    assert (minute.push_requests, minute.push_messages) == (1, 3)
    assert (minute.pop_requests, minute.pop_messages, minute.pop_empty) == (2, 2, 1)
    assert (minute.ack_requests, minute.ack_success, minute.ack_failed) == (1, 1, 1)
    assert minute.dlq_count == 1
    assert minute.lag_count == 2 and 5_900 < minute.lag_sum_ms < 7_000
    assert 3_900 < minute.lag_max_ms < 5_000
    a, b = minute.queues["a"], minute.queues["b"]
    assert (a.push_messages, a.pop_messages, a.ack_success, a.ack_failed) == (2, 2, 1, 1)
    assert (b.push_messages, b.pop_empty) == (1, 1)


def test_auto_ack_pops_count_as_acks(recorder: Recorder) -> None:
    recorder.popped([_pop("a", auto_ack=True)], [{"queue": "a", "messages": [{"createdAt": None}]}])
    assert recorder.minute.ack_success == 1
    assert recorder.minute.queues["a"].ack_success == 1


def test_the_minute_rolls_over_once(recorder: Recorder) -> None:
    now = time.time()
    recorder.roll(now)  # the fixture may have been made in the minute before
    recorder.pushed(["a"])
    finished = recorder.roll(now + 60)
    assert finished is not None and finished.push_requests == 1
    assert finished.bucket == minute_of(now) < recorder.minute.bucket
    assert recorder.minute.push_requests == 0
    assert recorder.roll(now + 60) is None
