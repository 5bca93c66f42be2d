"""The streaming SDK's server calls (sql/functions/16_streams.sql): registering a query, reading a
state shard, and the cycle procedure of the batcher's `stream_cycle` lane.

A cycle's sink items travel as `queen.push_batch`'s own arguments, encoded by the push path's
encoder (queen/db/push_batch.py), so sink messages are stored exactly as /api/v1/push stores
them; the rest of the cycle goes as one JSONB document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from queen.db import push_batch
from queen.db.batches import Procedure, Results
from queen.db.items import PushItem
from queen.db.runner import Pools, procedure_value

# A cycle's own database call is cut off here: with the wait for a connection and the answer's
# way back, the whole cycle stays inside the route's budget and the clients' 30 s timeout (S18).
CYCLE_CALL_TIMEOUT_S = 20.0


class StateOp(msgspec.Struct, frozen=True):
    """Upsert or delete one key of the cycle's shard; `value` is the upsert's JSON as sent."""

    type: str
    key: str
    value: msgspec.Raw = msgspec.Raw(b"{}")


class CycleAck(msgspec.Struct, frozen=True, rename="camel"):
    """The source acknowledgement a cycle commits: the last message it covers."""

    transaction_id: str
    lease_id: str | None
    status: str
    count: int
    error: str | None


class Cycle(msgspec.Struct, frozen=True):
    """One `/streams/v1/cycle` request, validated (queen/http/streams_body.py)."""

    query_id: str
    partition_id: str
    consumer_group: str
    state_ops: list[StateOp]
    ack: CycleAck | None
    release_lease: bool
    push_items: list[PushItem] = msgspec.field(default_factory=list)


class _CycleDocument(msgspec.Struct, frozen=True):
    """What the procedure reads from JSON: the cycle less its sink items."""

    query_id: str
    partition_id: str
    consumer_group: str
    state_ops: list[StateOp]
    ack: CycleAck | None
    release_lease: bool


_CYCLE_SQL = (
    "SELECT queen.streams_cycle($1::jsonb, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
_NO_PUSH: tuple[None, ...] = (None,) * 12


def _encode_cycle(items: Sequence[Cycle]) -> tuple[tuple[Any, ...], push_batch.Plan | None]:
    (cycle,) = items  # the lane never fuses cycles: each is all or nothing on its own
    document = _CycleDocument(
        cycle.query_id,
        cycle.partition_id,
        cycle.consumer_group,
        cycle.state_ops,
        cycle.ack,
        cycle.release_lease,
    )
    head = msgspec.json.encode(document).decode()
    if not cycle.push_items:
        return (head, *_NO_PUSH), None
    args, plan = push_batch.encode(cycle.push_items)
    return (head, *args), plan


def _decode_cycle(raw: Any, items: Sequence[Cycle], plan: push_batch.Plan | None) -> Results:
    """The cycle's answer with `push_results` in the push response's per-item shape."""
    (cycle,) = items
    outcome: dict[str, Any] = dict(raw)
    pushed = outcome.pop("push", None)
    outcome["push_results"] = (
        push_batch.decode(pushed, cycle.push_items, plan) if pushed and plan else []
    )
    return [outcome]


STREAM_CYCLE = Procedure(
    _CYCLE_SQL, _encode_cycle, _decode_cycle, "fetchval", timeout_s=CYCLE_CALL_TIMEOUT_S
)


async def register_query(
    db: Pools,
    name: str,
    *,
    source_queue: str,
    sink_queue: str | None,
    config_hash: str,
    reset: bool,
) -> dict[str, Any]:
    """The §4.3 answer, or `{success: false, conflict: true, error, ...}` on a hash mismatch."""
    result: dict[str, Any] = await procedure_value(
        db.hot,
        "SELECT queen.streams_register($1, $2, $3, $4, $5)",
        name,
        source_queue,
        sink_queue,
        config_hash,
        reset,
    )
    return result


async def read_state(
    db: Pools,
    query_id: str,
    partition_id: str,
    *,
    keys: list[str] | None,
    key_prefix: str | None,
    ripe_at_or_before: float | int | None,
) -> list[dict[str, Any]]:
    """Every row of the shard that passes the given filters (None: no such filter)."""
    rows: list[dict[str, Any]] = await procedure_value(
        db.hot,
        "SELECT queen.streams_state_get($1::uuid, $2::uuid, $3, $4, $5::text::numeric)",
        query_id,
        partition_id,
        keys,
        key_prefix,
        None if ripe_at_or_before is None else repr(ripe_at_or_before),
    )
    return rows
