"""What each cluster-sync packet type says, as typed messages, and their payload maps.

The payload keys are the original's (spec security-cluster §3.7), so an original instance acts on
what queen sends; PARTITION_FREE, which the original never sends and ignores, carries the queue,
partition and consumer group whose lease ended. Reading is lenient about extra keys and strict
about the ones used: a packet whose fields have the wrong types reads as nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from queen.sync.packet import MessageType, Packet


@dataclass(frozen=True)
class MessageAvailable:
    queue: str
    partition: str
    ts: int


@dataclass(frozen=True)
class PartitionFree:
    queue: str
    partition: str
    group: str
    ts: int


@dataclass(frozen=True)
class Heartbeat:
    session_id: str
    sequence: int
    ts: int


@dataclass(frozen=True)
class QueueConfigSet:
    queue: str
    config: Mapping[str, Any] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True)
class QueueConfigDelete:
    queue: str


@dataclass(frozen=True)
class MaintenanceSet:
    """Push maintenance (type 40) or, with `pop`, pop maintenance (type 41)."""

    enabled: bool
    ts: int
    pop: bool = False


Message = (
    MessageAvailable
    | PartitionFree
    | Heartbeat
    | QueueConfigSet
    | QueueConfigDelete
    | MaintenanceSet
)


def to_payload(message: Message) -> tuple[MessageType, dict[str, Any]]:
    """The type code and payload map `message` travels as."""
    match message:
        case MessageAvailable(queue, partition, ts):
            return MessageType.MESSAGE_AVAILABLE, {"queue": queue, "partition": partition, "ts": ts}
        case PartitionFree(queue, partition, group, ts):
            payload = {"queue": queue, "partition": partition, "consumerGroup": group, "ts": ts}
            return MessageType.PARTITION_FREE, payload
        case Heartbeat(session_id, sequence, ts):
            payload = {"session_id": session_id, "sequence": sequence, "ts": ts}
            return MessageType.HEARTBEAT, payload
        case QueueConfigSet(queue, config, version):
            payload = {"queue": queue, "config": dict(config), "version": version}
            return MessageType.QUEUE_CONFIG_SET, payload
        case QueueConfigDelete(queue):
            return MessageType.QUEUE_CONFIG_DELETE, {"queue": queue}
        case MaintenanceSet(enabled, ts, pop):
            code = MessageType.POP_MAINTENANCE_MODE_SET if pop else MessageType.MAINTENANCE_MODE_SET
            return code, {"enabled": enabled, "ts": ts}
    raise TypeError(f"not a sync message: {message!r}")


def from_packet(packet: Packet) -> Message | None:
    """The message `packet` carries, or None for a type nothing acts on or unusable fields."""
    payload = packet.payload
    try:
        match packet.type:
            case MessageType.MESSAGE_AVAILABLE:
                return MessageAvailable(
                    _str(payload, "queue"), _str(payload, "partition", ""), _int(payload, "ts")
                )
            case MessageType.PARTITION_FREE:
                return PartitionFree(
                    _str(payload, "queue"),
                    _str(payload, "partition", ""),
                    _str(payload, "consumerGroup", ""),
                    _int(payload, "ts"),
                )
            case MessageType.HEARTBEAT:
                return Heartbeat(
                    _str(payload, "session_id", ""),
                    _int(payload, "sequence", 0),
                    _int(payload, "ts"),
                )
            case MessageType.QUEUE_CONFIG_SET:
                config = payload.get("config", {})
                if not isinstance(config, dict):
                    return None
                return QueueConfigSet(_str(payload, "queue"), config, _int(payload, "version", 0))
            case MessageType.QUEUE_CONFIG_DELETE:
                return QueueConfigDelete(_str(payload, "queue"))
            case MessageType.MAINTENANCE_MODE_SET | MessageType.POP_MAINTENANCE_MODE_SET:
                enabled = payload.get("enabled")
                if not isinstance(enabled, bool):
                    return None
                pop = packet.type == MessageType.POP_MAINTENANCE_MODE_SET
                return MaintenanceSet(enabled, _int(payload, "ts"), pop)
    except (KeyError, TypeError):
        return None
    return None


def payload_ts(payload: Mapping[str, Any]) -> int | None:
    """The payload's `ts` (ms since the epoch), where its type has one."""
    ts = payload.get("ts")
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else None


_MISSING: Any = object()


def _str(payload: Mapping[str, Any], key: str, default: str = _MISSING) -> str:
    value = payload.get(key, default)
    if value is _MISSING:
        raise KeyError(key)
    if not isinstance(value, str):
        raise TypeError(key)
    return value


def _int(payload: Mapping[str, Any], key: str, default: int = _MISSING) -> int:
    value = payload.get(key, default)
    if value is _MISSING:
        raise KeyError(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(key)
    return value
