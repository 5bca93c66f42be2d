"""The push batch's call form: targets listed once, positions per target, per-item integers and
payloads as text, repeats within the batch left out, and results back in item order."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from queen.db import push_batch
from queen.db.items import PushItem


def _item(queue: str, partition: str, n: int, **extra: Any) -> PushItem:
    return PushItem(
        queue=queue,
        partition=partition,
        transaction_id=f"t{n}",
        message_id=f"m{n}",
        payload=msgspec.Raw(orjson.dumps({"n": n})),
        **extra,
    )


def _row(partition_ids: list[str], duplicates: dict[int, str] | None = None) -> dict[str, Any]:
    duplicates = duplicates or {}
    return {
        "partition_ids": partition_ids,
        "duplicate_positions": list(duplicates) or None,
        "duplicate_ids": list(duplicates.values()) or None,
    }


def test_targets_and_offsets_follow_item_order() -> None:
    items = [_item("q", "a", 1), _item("q", "b", 2), _item("q", "a", 3), _item("r", "a", 4)]
    args, _ = push_batch.encode(items)
    assert args[0:5] == (["q", "q", "r"], ["a", "b", "a"], [2, 1, 1], "1,2,1,3", "1,1,2,1")
    assert args[5] == ["t1", "t2", "t3", "t4"] and args[6] == ["m1", "m2", "m3", "m4"]
    assert args[8].split(push_batch.PAYLOAD_SEPARATOR.decode()) == [
        '{"n":1}',
        '{"n":2}',
        '{"n":3}',
        '{"n":4}',
    ]
    assert args[7] is None and args[9] is None and args[10] is None and args[11] is None


def test_optional_columns_go_when_any_item_sets_them() -> None:
    items = [_item("q", "a", 1), _item("q", "a", 2, trace_id="x", skip_capacity=True)]
    args, _ = push_batch.encode(items)
    assert args[7] == [None, "x"] and args[11] == [False, True]


def test_results_map_targets_and_duplicates_back_to_items() -> None:
    items = [_item("q", "a", 1), _item("q", "b", 2), _item("q", "a", 3)]
    _, plan = push_batch.encode(items)
    results = push_batch.decode(_row(["pa", "pb"], {3: "m0"}), items, plan)
    assert [(r["index"], r["status"], r["message_id"], r.get("partition_id")) for r in results] == [
        (0, "queued", "m1", "pa"),
        (1, "queued", "m2", "pb"),
        (2, "duplicate", "m0", None),  # the response names a partition only for stored messages
    ]
    assert all(r["status"] == "queued" for r in push_batch.decode(_row(["pa", "pb"]), items, plan))


def test_a_repeat_within_the_batch_is_not_sent_and_follows_its_first() -> None:
    first = _item("q", "a", 1)
    repeat = msgspec.structs.replace(_item("q", "a", 9), transaction_id="t1")
    elsewhere = msgspec.structs.replace(_item("q", "b", 8), transaction_id="t1")  # other partition
    items = [first, _item("q", "a", 2), repeat, elsewhere]
    args, plan = push_batch.encode(items)
    assert args[2] == [2, 1] and args[3] == "1,1,2" and args[4] == "1,2,1"
    assert args[6] == ["m1", "m2", "m8"]

    fresh = push_batch.decode(_row(["pa", "pb"]), items, plan)
    assert [(r["status"], r["message_id"]) for r in fresh] == [
        ("queued", "m1"),
        ("queued", "m2"),
        ("duplicate", "m1"),
        ("queued", "m8"),
    ]
    # When the first was itself stored before, the repeat reports the stored message too.
    stored = push_batch.decode(_row(["pa", "pb"], {1: "old"}), items, plan)
    assert [(r["status"], r["message_id"]) for r in stored[:3]] == [
        ("duplicate", "old"),
        ("queued", "m2"),
        ("duplicate", "old"),
    ]
