"""queen-mq 0.15.0's Stream SDK against queen: windowed aggregations whose sinks a consumer group
drains, with exact per-partition counts and sums; a runner stopped and restarted without
reprocessing; a changed pipeline refused until reset. Message counts stay small here; the large
run is the benchmark's (ops/bench/streams.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.compat.harness import ClientRunner, script, unique_queue

pytestmark = pytest.mark.compat


def expected_windows(partitions: int) -> dict[tuple[str, int], tuple[int, int]]:
    """What stream_stories' messages give: window w of partition p holds w + 2 messages with
    values 100 p + i."""
    return {
        (f"p{p}", w): (w + 2, sum(p * 100 + i for i in range(w + 2)))
        for p in range(partitions)
        for w in range(2)
    }


def observed_windows(results: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[int, int]]:
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for result in results:
        data = result["data"]
        assert result["partition"] == data["partition"], "sink items co-partitioned with source"
        key = (data["partition"], data["window"])
        assert key not in seen, f"window {key} emitted twice"
        seen[key] = (data["count"], data["sum"])
    return seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("window", "partitions"), [("tumbling", 20), ("session", 4), ("cron", 4)])
def test_windowed_sums_reach_the_sink_exactly_once_per_window(
    client015: ClientRunner, window: str, partitions: int
) -> None:
    result = client015.run(
        script("stream_stories"),
        {
            "scenario": "windows",
            "window": window,
            "queue": unique_queue("stream-src"),
            "sink": unique_queue("stream-sink"),
            "query": unique_queue(f"test-{window}"),
            "partitions": partitions,
            "expected": 2 * partitions,
        },
        timeout_s=100,
    )
    assert result["metrics"]["errorsTotal"] == 0, result["metrics"]
    assert observed_windows(result["results"]) == expected_windows(partitions)


@pytest.mark.timeout(120)
def test_a_restarted_runner_resumes_where_the_stopped_one_committed(
    client015: ClientRunner,
) -> None:
    count = 60
    result = client015.run(
        script("stream_stories"),
        {
            "scenario": "restart",
            "queue": unique_queue("stream-src"),
            "sink": unique_queue("stream-sink"),
            "query": unique_queue("test-restart"),
            "count": count,
            "partitions": 3,
        },
        timeout_s=100,
    )
    assert result["first_runner"] < count, "the first runner stopped mid-stream"
    seen = Counter(result["indexes"])
    assert sorted(seen) == list(range(count)), "every source message reached the sink"
    assert [i for i, n in seen.items() if n > 1] == [], "none was processed twice"
    assert result["errors"] == 0


@pytest.mark.timeout(60)
def test_a_changed_pipeline_is_refused_until_reset(client015: ClientRunner) -> None:
    result = client015.run(
        script("stream_stories"),
        {"scenario": "shape", "queue": unique_queue("stream-src"), "query": unique_queue("test-s")},
        timeout_s=50,
    )
    assert result["changed"]["type"] == "StreamsConfigHashMismatch", result
    assert "config_hash mismatch" in result["changed"]["message"]
    assert result["reset"] == "accepted"
