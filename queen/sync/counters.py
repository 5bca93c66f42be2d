"""The numbers cluster sync keeps about itself, as one plain object: the shared-state route and
the Prometheus exporter read it, the sync actors only ever add to it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SyncCounters:
    packets_sent: int = 0
    packets_received: int = 0
    send_errors: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # by reason
    heartbeats_received: int = 0
    restarts_detected: int = 0
    wakes_received: int = 0
    wakes_applied: int = 0
    hints_received: int = 0  # queue settings changed, a switch flipped
    notifies_sent: int = 0
    notifies_received: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def snapshot(self) -> dict[str, object]:
        return {
            "packets_sent": self.packets_sent,
            "packets_received": self.packets_received,
            "send_errors": self.send_errors,
            "dropped": dict(sorted(self.dropped.items())),
            "heartbeats_received": self.heartbeats_received,
            "restarts_detected": self.restarts_detected,
            "wakes_received": self.wakes_received,
            "wakes_applied": self.wakes_applied,
            "hints_received": self.hints_received,
            "notifies_sent": self.notifies_sent,
            "notifies_received": self.notifies_received,
        }
