"""Queue semantics of issue #5 through the official clients' public API, each story with queen-mq
0.15.0 and with 2.6.0: consumer groups, subscription modes, seeks, retries into the DLQ and back,
delayed processing, the window buffer, priority in namespace/task pops, traces, maintenance mode.

The stories live in scripts/queue_semantics.py (run by the client's own interpreter); what they
observed is asserted here.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest

from tests.compat.harness import ClientRunner, script, unique_queue

pytestmark = [pytest.mark.compat, pytest.mark.timeout(90)]

SCRIPT = script("queue_semantics")


def story(client: ClientRunner, name: str, **args: Any) -> Any:
    return client.run(SCRIPT, {"story": name, **args})


def test_every_consumer_group_sees_every_message(client: ClientRunner, queue_name: str) -> None:
    partitions, per_partition = 3, 10
    consumers = {"": 1, "billing": 2, "audit": 1}  # "" = queue mode
    result = story(
        client,
        "groups",
        queue=queue_name,
        partitions=partitions,
        per_partition=per_partition,
        consumers=consumers,
        batch=4,
    )
    assert result["timed_out"] is False, result["by_consumer"]
    everything = sorted(f"p{p}-{i}" for p in range(partitions) for i in range(per_partition))
    for group in consumers:
        seen = result["seen"][group]
        assert sorted(m["id"] for m in seen) == everything, f"group {group!r}: each message once"
        by_partition: dict[int, list[int]] = defaultdict(list)
        for message in seen:
            by_partition[message["p"]].append(message["i"])
        assert all(order == sorted(order) for order in by_partition.values()), by_partition
    billing = [n for name, n in result["by_consumer"].items() if name.startswith("billing#")]
    assert sum(billing) == partitions * per_partition, "two consumers of one group share its work"
    assert result["leftovers"] == {group: 0 for group in consumers}


def test_subscription_mode_new_skips_history(client: ClientRunner, queue_name: str) -> None:
    result = story(client, "subscription", queue=queue_name)
    assert result["first_pops"] == {"new": [], "now": []}, "a new subscriber's first pop is empty"
    fresh = ["n0", "n1", "n2"]  # pushed after the subscription, on old partitions and a new one
    assert sorted(result["late"]) == fresh, "mode new: history skipped on every partition"
    assert sorted(result["fresh"]) == fresh, "subscriptionFrom=now: the same"
    assert sorted(result["since_h2"]) == ["h2", "h3", *fresh], "from a timestamp: at or after it"
    assert sorted(result["everything"]) == ["h0", "h1", "h2", "h3", *fresh], "default: all"
    assert result["late_again"] == []


def test_seek_replays_from_a_timestamp_and_skips_to_the_end(
    client: ClientRunner, queue_name: str
) -> None:
    result = story(client, "seek", queue=queue_name)
    history = ["a0", "a1", "b0", "b1", "c0"]
    assert result["first"] == history and result["head"] == ["a0"]
    assert result["bystander"] == history

    replay = result["replay_seek"]
    assert replay["success"] is True and replay["partitionsUpdated"] == 1
    assert replay["seekToEnd"] is False
    assert replay["targetTimestamp"] == result["b0_created_at"][:23] + "Z"
    assert result["replayed"] == ["b0", "b1", "c0"], "everything created at or after the target"

    skip = result["skip_seek"]
    assert skip["success"] is True and skip["seekToEnd"] is True
    assert skip["targetTimestamp"] is None
    assert result["skipped"] == [], "the backlog (a1 .. c0) was skipped"
    assert result["after"] == {"replay": ["d0"], "skip": ["d0"], "bystander": ["d0"]}, (
        "after a seek the group follows new messages; the bystander was never moved"
    )
    assert result["rewind"]["targetTimestamp"] == "1970-01-01T00:00:00.000Z"
    assert result["from_start"] == [*history, "d0"]

    stranger = result["stranger"]
    assert stranger.get("exception"), f"seek of a group without a position must fail: {stranger}"
    assert "no position" in stranger["message"]


def test_failed_acks_retry_then_dead_letter_and_an_admin_retry_redelivers(
    client: ClientRunner, queue_name: str
) -> None:
    retry_limit = 1
    result = story(client, "dlq", queue=queue_name, group="workers", retry_limit=retry_limit)
    poison_deliveries = [data for data in result["handled"] if data == "poison"]
    assert result["handled"][:2] == [{"n": 0}, {"n": 1}]
    assert len(poison_deliveries) == retry_limit + 1, "delivered once, then once per retry"
    assert [nack["dlq"] for nack in result["nacks"]] == [False] * retry_limit + [True]
    assert all(nack["success"] is True for nack in result["nacks"]), result["nacks"]
    assert result["audit"] == [{"n": 0}, {"n": 1}, "poison"], "another group is not affected"

    [dead] = result["dead"]["messages"]
    assert (dead["data"], dead["consumerGroup"]) == ("poison", "workers")
    assert dead["errorMessage"] == f"poison pill, attempt {retry_limit + 1}", "the last nack's text"
    assert dead["retryCount"] == retry_limit
    assert result["audit_dead"]["messages"] == [], "the DLQ is per consumer group"
    assert [m["transactionId"] for m in result["all_groups_dead"]["messages"]] == [
        dead["transactionId"]
    ], "dlq() without a group lists every group's dead letters"

    retried = result["retried"]
    assert retried["success"] is True, retried
    [outcome] = retried["groups"]
    assert (outcome["consumerGroup"], outcome["deadLettersRemoved"]) == ("workers", 1)
    assert result["dead_after_retry"]["messages"] == []
    assert result["redelivered"] == ["poison"], "the retried message is deliverable again"
    assert result["dead_at_end"]["messages"] == [], "acked this time: it stays out of the DLQ"


def test_delayed_processing_hides_a_message_until_it_is_due(
    client: ClientRunner, queue_name: str
) -> None:
    delay_s = 1
    result = story(client, "delayed", queue=queue_name, delay_s=delay_s)
    assert result["immediately"] == [], "invisible right after the push"
    assert result["popped"] == [{"late": True}], "visible once due"
    assert delay_s <= result["visible_after_s"] < delay_s + 5, result["visible_after_s"]


def test_window_buffer_serves_a_partition_once_it_is_quiet(
    client: ClientRunner, queue_name: str
) -> None:
    window_s = 1
    result = story(client, "window", queue=queue_name, window_s=window_s)
    assert result["during"] == [], "the newest message is too young: nothing is served"
    assert result["popped"] == [{"n": 0}, {"n": 1}, {"n": 2}], "then everything, in one pop"
    assert window_s <= result["served_after_s"] < window_s + 5, result["served_after_s"]


def test_priority_orders_queues_in_namespace_and_task_pops(client: ClientRunner) -> None:
    namespace = unique_queue("compat-ns")
    low, urgent, high = (f"{namespace}.{name}" for name in ("low", "urgent", "high"))
    result = story(
        client,
        "priority",
        namespace=namespace,
        task="jobs",
        # pushed in this order: the oldest messages are in the lowest-priority queue
        queues=[[low, "jobs", 1], [urgent, "other", 20], [high, "jobs", 9]],
    )
    assert result["timed_out"] is False, result
    assert result["task_order"] == [high, high, low, low], "task pop: higher priority first"
    assert result["namespace_pop"] == [urgent, urgent], "namespace pop: the highest priority"


def test_traces_recorded_in_consume_are_read_back_by_admin(
    client: ClientRunner, queue_name: str
) -> None:
    name = f"trace-{uuid.uuid4().hex[:10]}"
    orders = ["o1", "o2"]
    result = story(
        client, "traces", queue=queue_name, group="shipping", trace_name=name, orders=orders
    )
    recorded = result["recorded"]
    assert [r["order"] for r in recorded] == orders
    trace_ids = []
    for entry in recorded:
        for outcome in entry["results"]:
            assert outcome["success"] is True and uuid.UUID(outcome["traceId"]), outcome
            trace_ids.append(outcome["traceId"])

    for entry in recorded:
        traces = result["per_message"][entry["order"]]["traces"]
        assert [t["id"] for t in traces] == [r["traceId"] for r in entry["results"]], "oldest first"
        assert [t["data"] for t in traces] == [{"at": "pick"}, {"at": "ship"}]
        assert [t["event_type"] for t in traces] == ["step", "info"]
        assert [t["trace_names"] for t in traces] == [
            sorted([name, f"{name}-{entry['order']}"]),
            [name],
        ]
        assert {t["consumer_group"] for t in traces} == {"shipping"}

    by_name = result["by_name"]
    assert by_name["total"] == 4 and [t["id"] for t in by_name["traces"]] == trace_ids
    assert {t["queue_name"] for t in by_name["traces"]} == {queue_name}
    assert [t["message_payload"]["order"] for t in by_name["traces"]] == ["o1", "o1", "o2", "o2"]
    first_order = result["by_order_name"]
    assert first_order["total"] == 1 and first_order["traces"][0]["id"] == trace_ids[0]

    counts = {
        n["trace_name"]: (n["trace_count"], n["message_count"])
        for n in result["names"]["trace_names"]
    }
    assert counts == {name: (4, 2), f"{name}-o1": (1, 1), f"{name}-o2": (1, 1)}


def test_maintenance_on_and_off_loses_nothing(client: ClientRunner, queue_name: str) -> None:
    partitions, per_partition = 3, 10
    try:
        result = story(
            client,
            "maintenance",
            queue=queue_name,
            partitions=partitions,
            per_partition=per_partition,
        )
    finally:  # the script switches it off itself, unless it was killed: never leave it on
        httpx.post(f"{client.server.url}/api/v1/system/maintenance", json={"enabled": False})
    per_phase = partitions * per_partition
    assert result["statuses"] == {
        "before": ["queued"] * per_phase,
        "during": ["buffered"] * per_phase,
        "after": ["queued"] * per_phase,
    }
    assert result["turned_on"]["maintenanceMode"] is True
    assert result["while_on"]["maintenanceMode"] is True
    assert result["while_on"]["bufferedMessages"] == per_phase, "every push of the window waits"
    assert result["turned_off"]["maintenanceMode"] is False
    assert result["drained"] is True, "bufferedMessages reached 0"
    consumed = result["consumed"]
    assert len(consumed) == len(set(consumed)), "nothing consumed twice"
    assert sorted(consumed) == sorted(result["sent"]), "nothing lost"
