"""What one instance tells the others besides "messages may be available": a queue's settings
changed, or a cluster switch was flipped. Receivers treat both as hints to re-read PostgreSQL
(D-U4); the queue's settings travel along only because original peers apply them as sent.

Events cross three links - sibling workers (unix datagrams), UDP peers, PostgreSQL NOTIFY - so
they have one JSON form, read back strictly: anything else reads as nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SWITCHES = ("maintenance_mode", "pop_maintenance_mode")

# The original's cache entry names for the configure route's options (spec §3.7).
_ORIGINAL_CONFIG_KEYS = {
    "leaseTime": "lease_time",
    "retryLimit": "retry_limit",
    "retryDelay": "retry_delay",
    "delayedProcessing": "delayed_processing",
    "windowBuffer": "window_buffer",
    "encryptionEnabled": "encryption_enabled",
    "deadLetterQueue": "dlq_enabled",
    "dlqAfterMaxRetries": "dlq_after_max_retries",
    "maxSize": "max_size",
    "ttl": "ttl",
    "priority": "priority",
    "retentionSeconds": "retention_seconds",
    "completedRetentionSeconds": "completed_retention_seconds",
    "retentionEnabled": "retention_enabled",
    "maxWaitTimeSeconds": "max_wait_time_seconds",
}


@dataclass(frozen=True)
class QueueChanged:
    """`queue` was configured (`config`: its settings as the original caches them) or, with
    `deleted`, removed."""

    queue: str
    deleted: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchChanged:
    key: str  # one of SWITCHES
    enabled: bool


Event = QueueChanged | SwitchChanged


def original_config(namespace: str, task: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The configure route's options as the original's QUEUE_CONFIG_SET `config` map."""
    config: dict[str, Any] = {"id": "", "namespace_name": namespace, "task": task}
    for option, key in _ORIGINAL_CONFIG_KEYS.items():
        if option in options:
            config[key] = options[option]
    return config


def to_json(event: Event) -> dict[str, Any]:
    if isinstance(event, QueueChanged):
        return {"queue": event.queue, "deleted": event.deleted, "config": dict(event.config)}
    return {"switch": event.key, "enabled": event.enabled}


def from_json(value: Any) -> Event | None:
    if not isinstance(value, dict):
        return None
    queue, switch = value.get("queue"), value.get("switch")
    if isinstance(queue, str) and queue:
        config = value.get("config", {})
        return QueueChanged(
            queue, value.get("deleted") is True, config if isinstance(config, dict) else {}
        )
    if switch in SWITCHES and isinstance(value.get("enabled"), bool):
        return SwitchChanged(switch, value["enabled"])
    return None
