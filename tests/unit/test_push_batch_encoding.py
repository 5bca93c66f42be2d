"""The push batch's array form: targets listed once, positions per target, results in order."""

from __future__ import annotations

from typing import Any

from queen.actors import push_batch


def _item(queue: str, partition: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "queue": queue,
        "partition": partition,
        "payload": {"n": n},
        "transactionId": f"t{n}",
        "messageId": f"m{n}",
        **extra,
    }


def test_targets_and_offsets_follow_item_order() -> None:
    items = [_item("q", "a", 1), _item("q", "b", 2), _item("q", "a", 3), _item("r", "a", 4)]
    args = push_batch.encode(items)
    assert args[0:4] == (["q", "q", "r"], ["a", "b", "a"], [1, 2, 1, 3], [1, 1, 2, 1])
    assert args[7] == ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']
    assert args[6] is None and args[8] is None and args[9] is None and args[10] is None


def test_optional_columns_go_when_any_item_sets_them() -> None:
    items = [_item("q", "a", 1), _item("q", "a", 2, traceId="x", skipCapacity=True)]
    args = push_batch.encode(items)
    assert args[6] == [None, "x"] and args[10] == [None, True]


def test_results_map_targets_and_duplicates_back_to_items() -> None:
    items = [_item("q", "a", 1), _item("q", "b", 2), _item("q", "a", 3)]
    row = {"partition_ids": ["pa", "pb"], "duplicate_positions": [3], "duplicate_ids": ["m0"]}
    results = push_batch.decode(row, items)
    assert [(r["status"], r["message_id"], r["partition_id"]) for r in results] == [
        ("queued", "m1", "pa"),
        ("queued", "m2", "pb"),
        ("duplicate", "m0", "pa"),
    ]
    none = {"partition_ids": ["pa", "pb"], "duplicate_positions": None, "duplicate_ids": None}
    assert all(r["status"] == "queued" for r in push_batch.decode(none, items))
