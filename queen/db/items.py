"""What the batch procedures take, as types: validation (queen/http/validate.py) builds these, the
actors pass them on untouched, and queen/db encodes them for PostgreSQL. A field renamed or
missing is a type error here, not a NULL in a stored procedure.

msgspec Structs rather than dataclasses: a 1000-message push builds a thousand of them, and a
Struct is built and encoded to the procedures' JSON (camelCase keys, payloads embedded as sent)
several times faster.
"""

from __future__ import annotations

import msgspec


class PushItem(msgspec.Struct, frozen=True, rename="camel"):
    """One message to store. `payload` is its JSON as it will be stored; `skip_capacity` is set
    on replays from the disk buffer, which were accepted before a queue's maxSize could refuse
    them. `producer_sub` and `is_encrypted` are the server's to set (the verified token's
    subject; the encryption step, queen/actors/encryption.py), never read from a client."""

    queue: str
    partition: str
    transaction_id: str
    message_id: str
    payload: msgspec.Raw
    trace_id: str | None = None
    producer_sub: str | None = None
    skip_capacity: bool = False
    is_encrypted: bool = False


class AckItem(msgspec.Struct, frozen=True, rename="camel"):
    transaction_id: str
    partition_id: str
    consumer_group: str
    lease_id: str | None
    status: str
    error: str | None


class PopRequest(msgspec.Struct, frozen=True, rename="camel"):
    """One pop attempt; a fresh `lease_id` per attempt. The target is a queue (and maybe one
    partition of it) or a namespace and/or task across queues."""

    group: str
    batch: int
    partitions: int
    auto_ack: bool
    subscription_mode: str
    subscription_from: str
    lease_id: str
    queue: str | None = None
    partition: str | None = None
    namespace: str | None = None
    task: str | None = None
    lease_owner: str | None = None  # the worker incarnation taking the lease (set by the lane)


class RenewItem(msgspec.Struct, frozen=True, rename="camel"):
    lease_id: str
    seconds: int


class TransactionPush(msgspec.Struct, frozen=True, tag="push", tag_field="type"):
    item: PushItem


class TransactionAck(AckItem, frozen=True, tag="ack", tag_field="type"):
    """An ack inside a transaction: the ack's own fields beside `"type": "ack"`."""


TransactionOp = TransactionPush | TransactionAck
Transaction = list[TransactionOp]
