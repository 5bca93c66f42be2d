"""Request and message totals of one worker process, with per-second rates over the last minute,
for /metrics. Written only by this process's request path; sampled by its own small actor."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio

SAMPLE_INTERVAL_S = 1.0
WINDOW_S = 60.0


@dataclass
class Counters:
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
            if not marks or now - marks[-1][0] >= SAMPLE_INTERVAL_S:
                marks.append((now, total))
            while marks and now - marks[0][0] > WINDOW_S:
                marks.pop(0)

    @staticmethod
    def rate(marks: list[tuple[float, int]], total: int) -> float:
        if not marks:
            return 0.0
        elapsed = time.monotonic() - marks[0][0]
        return round((total - marks[0][1]) / elapsed, 3) if elapsed > 0 else 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.sample()
            await trio.sleep(SAMPLE_INTERVAL_S)
