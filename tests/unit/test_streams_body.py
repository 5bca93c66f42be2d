"""The streams routes' bodies as typed requests, without a server: what the SDK sends becomes the
cycle the procedure gets (sink items given server ids in item order and the token's subject,
never the body's), defaults filled as the spec says, and the cycle encoded for one call."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from queen.actors.consumer_groups import QUEUE_MODE
from queen.db import streams
from queen.errors import BadRequest
from queen.http import streams_body

QUERY = "5B0F2C7E-8D1A-4C3E-9F57-2A1D9B8E6C40"
PARTITION = "0e6a41d2-1111-4c3e-9f57-2a1d9b8e6c40"


def sdk_cycle(**changes: Any) -> dict[str, Any]:
    """A cycle as the 0.15 runtime sends it: all seven keys."""
    body: dict[str, Any] = {
        "query_id": QUERY,
        "partition_id": PARTITION,
        "consumer_group": "streams.q",
        "state_ops": [{"type": "upsert", "key": "tumb:60\u001fk", "value": {"acc": 1.0}}],
        "push_items": [
            {"queue": "out", "partition": "p0", "payload": {"n": n}, "messageId": "mine"}
            for n in range(3)
        ],
        "ack": {"transactionId": "t9", "leaseId": PARTITION, "status": "completed", "count": 3},
        "release_lease": True,
    }
    body.update(changes)
    return body


def test_sink_items_get_server_ids_in_item_order_and_the_token_subject() -> None:
    cycle = streams_body.cycle(
        sdk_cycle(push_items=[*sdk_cycle()["push_items"], {"queue": "out", "producerSub": "x"}]),
        100,
        "alice",
    )
    ids = [item.message_id for item in cycle.push_items]
    assert "mine" not in ids and ids == sorted(ids) and len(set(ids)) == 4
    assert {item.producer_sub for item in cycle.push_items} == {"alice"}
    assert bytes(cycle.push_items[3].payload) == b"{}", "a sink item without payload stores {}"
    assert cycle.query_id == QUERY.lower(), "ids in canonical form"


def test_null_lists_and_absent_fields_take_the_spec_defaults() -> None:
    body = {"query_id": QUERY, "partition_id": PARTITION, "state_ops": None, "push_items": None}
    cycle = streams_body.cycle(body, 100, None)
    assert (cycle.state_ops, cycle.push_items, cycle.ack) == ([], [], None)
    assert cycle.consumer_group == QUEUE_MODE and cycle.release_lease is True
    ack = streams_body.cycle(sdk_cycle(ack={"transactionId": "t"}), 100, None).ack
    assert ack is not None and (ack.status, ack.count, ack.lease_id) == ("completed", 1, None)


def test_state_reads_ignore_what_the_spec_says_disables_a_filter() -> None:
    body = {"query_id": QUERY, "partition_id": PARTITION, "keys": "k", "ripe_at_or_before": "9"}
    query = streams_body.state_query(body)
    assert (query.keys, query.key_prefix, query.ripe_at_or_before) == (None, None, None)
    query = streams_body.state_query({**body, "keys": [], "ripe_at_or_before": True})
    assert query.keys is None and query.ripe_at_or_before is None


def test_registration_stores_an_empty_sink_as_none() -> None:
    body = {"name": "n", "source_queue": "s", "config_hash": "h", "sink_queue": ""}
    assert streams_body.registration(body).sink_queue is None
    with pytest.raises(BadRequest, match="reset must be a boolean"):
        streams_body.registration({**body, "reset": 1})


def test_a_cycle_is_one_call_with_its_sink_items_in_the_push_form() -> None:
    cycle = streams_body.cycle(sdk_cycle(), 100, None)
    args, plan = streams.STREAM_CYCLE.encode([cycle])
    head = orjson.loads(args[0])
    assert "push_items" not in head
    assert head["ack"] == {
        "transactionId": "t9",
        "leaseId": PARTITION,
        "status": "completed",
        "count": 3,
        "error": None,
    }
    assert head["state_ops"] == [{"type": "upsert", "key": "tumb:60\u001fk", "value": {"acc": 1.0}}]
    assert args[1:4] == (["out"], ["p0"], [3]) and plan is not None
    answer = {
        "success": True,
        "push": {"partition_ids": ["pid"], "duplicate_positions": None, "duplicate_ids": None},
    }
    (decoded,) = streams.STREAM_CYCLE.decode(answer, [cycle], plan)
    assert [r["status"] for r in decoded["push_results"]] == ["queued"] * 3
    assert "push" not in decoded

    no_sink = streams_body.cycle(sdk_cycle(push_items=[]), 100, None)
    args, plan = streams.STREAM_CYCLE.encode([no_sink])
    assert args[1:] == (None,) * 12 and plan is None
    (decoded,) = streams.STREAM_CYCLE.decode({"success": True, "push": None}, [no_sink], plan)
    assert decoded["push_results"] == []
