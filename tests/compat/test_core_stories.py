"""Core messaging user stories, each run with queen-mq 0.15.0 and with 2.6.0 in its default mode.

Every story is a script under scripts/ run by the client's own interpreter; the assertions are here.
Where the two clients differ by design (client-2x.md §2-§3: 2.6 hands consume() handlers lists,
reads ack and renew answers strictly, sends the handler's error text on a nack), the expectation
depends on `client.label`.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.compat.harness import ClientRunner, script, unique_queue

pytestmark = [pytest.mark.compat, pytest.mark.timeout(90)]

QUEUE_OPTIONS: dict[str, Any] = {
    "lease_time": 120,
    "retry_limit": 5,
    "retry_delay": 2500,
    "priority": 7,
    "max_size": 1000,
    "ttl": 7200,
    "delayed_processing": 2,
    "window_buffer": 3,
    "retention_enabled": True,
    "retention_seconds": 86400,
    "completed_retention_seconds": 3600,
    "max_wait_time_seconds": 600,
    "encryption_enabled": False,
    "dead_letter_queue": True,
    "dlq_after_max_retries": True,
}


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word.capitalize() for word in rest)


def test_create_queue_with_options(client: ClientRunner, queue_name: str) -> None:
    answer = client.run(
        script("create_queue"),
        {"queue": queue_name, "namespace": "compat", "task": "stories", "options": QUEUE_OPTIONS},
    )
    assert answer["configured"] is True, answer
    assert answer["queue"] == queue_name
    assert (answer["namespace"], answer["task"]) == ("compat", "stories")
    assert uuid.UUID(answer["queueId"]) and uuid.UUID(answer["partitionId"])
    echoed = {camel(k): answer["options"].get(camel(k)) for k in QUEUE_OPTIONS}
    assert echoed == {camel(k): v for k, v in QUEUE_OPTIONS.items()}


def test_push_pop_ack(client: ClientRunner, queue_name: str) -> None:
    payloads = [{"n": 1, "text": "héllo"}, None, {"nested": {"list": [1, 2, 3]}}]
    result = client.run(script("push_pop_ack"), {"queue": queue_name, "payloads": payloads})

    pushed = result["pushed"]
    assert [p["status"] for p in pushed] == ["queued"] * 3, pushed
    popped = result["popped"]
    assert [m["data"] for m in popped] == payloads, "pop returns the pushed data, in order"
    assert [m["transactionId"] for m in popped] == [p["transaction_id"] for p in pushed]
    for message in popped:
        assert message["partitionId"] and message["leaseId"], message

    assert result["single_ack"]["success"] is True, result["single_ack"]
    batch_ack = result["batch_ack"]
    assert batch_ack["success"] is True, batch_ack
    assert [r["success"] for r in batch_ack["results"]] == [True, True], batch_ack
    assert result["second_pop"] == [], "everything was acked: a second pop gets nothing"


def test_consume_with_a_group_handles_each_message_once(
    client: ClientRunner, queue_name: str
) -> None:
    count = 12
    result = client.run(
        script("consume_group"),
        {
            "queue": queue_name,
            "group": "workers",
            "other_group": "auditors",
            "count": count,
        },
    )
    assert result["timed_out"] is False, "consume() did not reach its limit"
    handled = [m["i"] for call in result["calls"] for m in call["messages"]]
    assert sorted(handled) == list(range(count)), f"each message handled exactly once: {handled}"
    assert handled == list(range(count)), "one partition: handled in push order"
    shapes = {call["shape"] for call in result["calls"]}
    # 0.15 defaults batch to 1 and passes a dict; 2.6 passes a list unless batch(1)/each().
    assert shapes == ({"dict"} if client.label == "0.15" else {"list"}), shapes
    assert result["leftover"] == [], "auto-ack completed every message for the group"
    assert result["other_group"] == list(range(count)), "another group still sees everything"


def test_transaction_acks_and_pushes_atomically(client: ClientRunner) -> None:
    source, target, ghost = unique_queue("compat-src"), unique_queue("compat-dst"), unique_queue()
    result = client.run(script("transaction"), {"source": source, "target": target, "ghost": ghost})
    assert len(result["popped"]) == 1, result
    message = result["popped"][0]
    committed = result["committed"]
    assert committed["success"] is True, committed
    assert result["source_after"] == [], "the transaction acked the source message"
    assert [m["data"] for m in result["target_after"]] == [
        {"step": 2, "after": message["transactionId"]}
    ], "the transaction pushed to the target queue"

    failed = result["failed"]
    assert failed.get("exception"), f"a transaction with a failing ack must raise: {failed}"
    assert "not found" in failed["message"].lower(), failed
    assert result["ghost_after"] == [], "a failed transaction pushes nothing"


def test_renew_extends_the_lease(client: ClientRunner, queue_name: str) -> None:
    lease_seconds = 1
    result = client.run(script("renew"), {"queue": queue_name, "lease_seconds": lease_seconds})
    assert len(result["popped"]) == 1, result
    renewed = result["renewed"]
    assert renewed["success"] is True, renewed
    assert renewed["leaseId"] == result["popped"][0]["leaseId"]
    new_expiry = result["new_expiry_epoch"]
    assert new_expiry is not None, f"renew returned no new expiry: {renewed}"
    assert new_expiry > result["popped_at"] + lease_seconds, "the lease now ends later than before"
    assert new_expiry > result["renewed_at"], "the new expiry is in the future"
    assert result["pop_after_original_expiry"] == [], "the renewed lease still holds the partition"
    assert result["ack"]["success"] is True, "an ack with the renewed lease is accepted"

    after_ack = result["renewed_after_ack"]
    if client.label == "0.15":
        # 0.15 reports success for any 2xx (client.py renew); only the expiry tells.
        assert not after_ack.get("newExpiresAt"), after_ack
    else:
        assert after_ack["success"] is False, "the ack released the lease: nothing to renew"


def test_failed_ack_redelivers_then_dead_letters(client: ClientRunner, queue_name: str) -> None:
    retry_limit = 2
    transaction_id = f"tx-{uuid.uuid4()}"
    data = {"job": "fragile"}
    result = client.run(
        script("failed_ack_dlq"),
        {
            "queue": queue_name,
            "retry_limit": retry_limit,
            "transaction_id": transaction_id,
            "data": data,
        },
    )
    deliveries = result["deliveries"]
    assert len(deliveries) == retry_limit + 1, "delivered once, then once per retry"
    assert {d["message"]["transactionId"] for d in deliveries} == {transaction_id}
    assert all(d["nack"]["success"] is True for d in deliveries), deliveries
    assert result["after"] == [], "past retryLimit the message is no longer delivered"

    dead = result["dlq"]["messages"]
    assert len(dead) == 1, result["dlq"]
    assert dead[0]["transactionId"] == transaction_id
    assert dead[0]["data"] == data
    assert dead[0]["errorMessage"] == f"boom {retry_limit}", "the last nack's error text"
    assert dead[0]["retryCount"] == retry_limit


def test_consume_handler_failures_end_in_the_dlq(client: ClientRunner, queue_name: str) -> None:
    retry_limit = 1
    error = "handler exploded"
    result = client.run(
        script("consume_failing_dlq"),
        {"queue": queue_name, "retry_limit": retry_limit, "error": error},
    )
    assert result["timed_out"] is False, result
    assert len(result["calls"]) == retry_limit + 1, result["calls"]
    assert len({tx for call in result["calls"] for tx in call}) == 1
    assert result["after"] == []
    dead = result["dlq"]["messages"]
    assert len(dead) == 1, result["dlq"]
    # 0.15's consume nacks with error null (the server records its default text); 2.6 sends the
    # handler's exception text (client-2x.md §2.2, "nack").
    expected = "Retries exhausted" if client.label == "0.15" else error
    assert dead[0]["errorMessage"] == expected


def test_duplicate_transaction_id_is_reported(client: ClientRunner, queue_name: str) -> None:
    first_id, second_id = f"dup-{uuid.uuid4()}", f"dup-{uuid.uuid4()}"
    result = client.run(
        script("duplicate_push"),
        {"queue": queue_name, "first_id": first_id, "second_id": second_id},
    )
    (first,) = result["first"]
    (again,) = result["again"]
    assert first["status"] == "queued", first
    assert again["status"] == "duplicate", again
    assert again["message_id"] == first["message_id"], "a duplicate names the stored message"
    assert result["duplicates_seen"] == [[first_id]], "the client's on_duplicate callback fired"
    assert [r["status"] for r in result["same_request"]] == ["queued", "duplicate"]
    assert result["stored"] == [{"v": 1}, {"v": 3}], "duplicates are not stored"
