"""What one worker process runs, gathered so HTTP handlers can reach the actors by name.

Handlers only send messages to these actors and await replies; they never touch actor state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio

from queen.actors.slots import SlotPool
from queen.config import Config


@dataclass
class Counters:
    """Monotonic totals for /metrics; written by the request path of this process only."""

    requests: int = 0
    messages_pushed: int = 0
    request_marks: list[tuple[float, int]] = field(default_factory=list)
    message_marks: list[tuple[float, int]] = field(default_factory=list)

    def sample(self) -> None:
        """Keep one mark per second over the last minute, for the per-second rates."""
        now = time.monotonic()
        for marks, total in (
            (self.request_marks, self.requests),
            (self.message_marks, self.messages_pushed),
        ):
            if not marks or now - marks[-1][0] >= 1.0:
                marks.append((now, total))
            while marks and now - marks[0][0] > 60.0:
                marks.pop(0)

    @staticmethod
    def rate(marks: list[tuple[float, int]], total: int) -> float:
        if not marks:
            return 0.0
        elapsed = time.monotonic() - marks[0][0]
        return round((total - marks[0][1]) / elapsed, 3) if elapsed > 0 else 0.0


@dataclass
class Services:
    config: Config
    worker_id: int
    admin: SlotPool
    hot: SlotPool
    shutting_down: trio.Event = field(default_factory=trio.Event)
    started_at: float = field(default_factory=time.monotonic)
    counters: Counters = field(default_factory=Counters)
