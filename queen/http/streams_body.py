"""Validation of the `/streams/v1/*` bodies (streams-api.md §4.1, §5.1, §6.1; decisions S2, S3):
pure functions from the parsed JSON to typed requests. Every malformed field is a 400 naming it,
raised before anything reaches the database, so a refused request writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from queen.actors.consumer_groups import QUEUE_MODE
from queen.db.items import PushItem
from queen.db.streams import Cycle, CycleAck, StateOp
from queen.errors import BadRequest
from queen.http import validate
from queen.ids import uuid7_strs

STATE_OP_TYPES = ("upsert", "delete")
ACK_STATUSES = ("completed", "success", "failed", "dlq")
MAX_ACK_COUNT = 2**31 - 1  # the consumption log counts in integer columns
# A query name and hash are unique-index keys: far beyond any real name or SHA-256 hex, and far
# below what a btree entry can hold (a longer one would fail in the database, not here).
MAX_QUERY_TEXT = 1024


@dataclass(frozen=True)
class Registration:
    name: str
    source_queue: str
    sink_queue: str | None
    config_hash: str
    reset: bool


@dataclass(frozen=True)
class StateQuery:
    query_id: str
    partition_id: str
    keys: list[str] | None
    key_prefix: str | None
    ripe_at_or_before: int | float | None


def body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def registration(body: dict[str, Any]) -> Registration:
    name = _required_text(body, "name", MAX_QUERY_TEXT)
    source_queue = _required_text(body, "source_queue", validate.MAX_NAME)
    config_hash = _required_text(body, "config_hash", MAX_QUERY_TEXT)
    sink_queue = body.get("sink_queue")
    if sink_queue is not None and not isinstance(sink_queue, str):
        raise BadRequest("sink_queue must be a string")
    if sink_queue and len(sink_queue) > validate.MAX_NAME:
        raise BadRequest(f"sink_queue must be at most {validate.MAX_NAME} characters")
    return Registration(
        name=name,
        source_queue=source_queue,
        sink_queue=validate.text(sink_queue, "sink_queue") if sink_queue else None,
        config_hash=config_hash,
        reset=_boolean(body, "reset", default=False),
    )


def state_query(body: dict[str, Any]) -> StateQuery:
    keys = body.get("keys")
    if isinstance(keys, list) and keys:
        for key in keys:
            if not isinstance(key, str):
                raise BadRequest("keys must be an array of strings")
            validate.text(key, "keys")
    prefix = body.get("key_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise BadRequest("key_prefix must be a string")
    ripe = body.get("ripe_at_or_before")
    return StateQuery(
        query_id=_uuid(body, "query_id"),
        partition_id=_uuid(body, "partition_id"),
        keys=keys if isinstance(keys, list) and keys else None,
        key_prefix=validate.text(prefix, "key_prefix") if prefix else None,
        # Any JSON number filters; anything else disables the filter (§5.1).
        ripe_at_or_before=ripe if _is_number(ripe) else None,
    )


def cycle(body: dict[str, Any], max_items: int, producer_sub: str | None) -> Cycle:
    """The cycle, its sink items given server ids ascending in item order and `producer_sub`
    (the verified token's subject; a body's own messageId or producerSub is never used)."""
    query_id = _uuid(body, "query_id")
    partition_id = _uuid(body, "partition_id")
    group = body.get("consumer_group")
    if group is not None and not isinstance(group, str):
        raise BadRequest("consumer_group must be a string")
    if group and len(group) > validate.MAX_NAME:
        raise BadRequest(f"consumer_group must be at most {validate.MAX_NAME} characters")
    raw_ops = _array(body, "state_ops")
    raw_items = _array(body, "push_items")
    validate.within_limit(len(raw_ops) + len(raw_items), max_items, "state_ops and push_items")
    return Cycle(
        query_id=query_id,
        partition_id=partition_id,
        consumer_group=validate.text(group, "consumer_group") if group else QUEUE_MODE,
        state_ops=[_state_op(index, op) for index, op in enumerate(raw_ops)],
        ack=_ack(body.get("ack")),
        release_lease=_boolean(body, "release_lease", default=True),
        push_items=_sink_items(raw_items, producer_sub),
    )


def _state_op(index: int, op: Any) -> StateOp:
    if not isinstance(op, dict):
        raise BadRequest(f"state_ops[{index}] must be an object")
    kind = op.get("type")
    if not isinstance(kind, str):
        raise BadRequest(f"state_ops[{index}].type must be a string")
    if kind not in STATE_OP_TYPES:
        validate.text(kind, f"state_ops[{index}].type")
        raise BadRequest(f"Unknown state_op type: {kind}")
    key = op.get("key")
    if not isinstance(key, str):
        raise BadRequest(f"state_ops[{index}].key must be a string")
    validate.text(key, f"state_ops[{index}].key")
    if kind == "delete" or "value" not in op:
        return StateOp(kind, key)
    value = validate.payload(op["value"], f"state_ops[{index}].value")
    return StateOp(kind, key, msgspec.Raw(msgspec.json.encode(value)))


def _sink_items(raw_items: list[Any], producer_sub: str | None) -> list[PushItem]:
    items = []
    for raw, message_id in zip(raw_items, uuid7_strs(len(raw_items)), strict=True):
        item = validate.push_item(raw, message_id)
        changes: dict[str, Any] = {"producer_sub": producer_sub}
        if "payload" not in raw:  # a sink item without a payload stores {} (§6.1)
            changes["payload"] = msgspec.Raw(b"{}")
        items.append(msgspec.structs.replace(item, **changes))
    return items


def _ack(ack: Any) -> CycleAck | None:
    if ack is None:
        return None
    if not isinstance(ack, dict):
        raise BadRequest("ack must be an object or null")
    transaction_id = ack.get("transactionId")
    if not isinstance(transaction_id, str) or not transaction_id:
        raise BadRequest("ack.transactionId is required")
    lease_id = ack.get("leaseId")
    if lease_id is not None and not isinstance(lease_id, str):
        raise BadRequest("ack.leaseId must be a string")
    status = ack.get("status")
    if status is None:
        status = "completed"
    if not isinstance(status, str):
        raise BadRequest("ack.status must be a string")
    if status.lower() not in ACK_STATUSES:
        validate.text(status, "ack.status")
        raise BadRequest(f"Unknown ack.status: {status}")
    count = ack.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_ACK_COUNT:
        raise BadRequest("ack.count must be a non-negative integer")
    error = ack.get("error")
    if error is not None and not isinstance(error, str):
        raise BadRequest("ack.error must be a string")
    return CycleAck(
        transaction_id=validate.text(transaction_id, "ack.transactionId"),
        lease_id=validate.uuid_text(lease_id, "ack.leaseId must be a UUID") if lease_id else None,
        status=status.lower(),
        count=count,
        error=validate.text(error, "ack.error") if error else None,
    )


def _required_text(body: dict[str, Any], field: str, max_chars: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{field} is required")
    if len(value) > max_chars:
        raise BadRequest(f"{field} must be at most {max_chars} characters")
    return validate.text(value, field)


def _uuid(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise BadRequest(f"{field} is required")
    return validate.uuid_text(value, f"{field} must be a UUID")


def _boolean(body: dict[str, Any], field: str, *, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{field} must be a boolean")
    return value


def _array(body: dict[str, Any], field: str) -> list[Any]:
    """Absent or null is empty (S3)."""
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{field} must be an array")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
