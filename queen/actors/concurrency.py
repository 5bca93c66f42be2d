"""Adaptive limit on concurrent database calls of one operation type (TCP-Vegas style, as the
original's `QUEEN_CONCURRENCY_MODE=vegas`): the limit grows while round trips stay near their
minimum and shrinks when they stretch, which is the database saying it is queueing work. Requests
over the limit wait in the batcher, where they fuse into bigger batches instead of piling onto
PostgreSQL."""

from __future__ import annotations

from collections import deque

import trio

ALPHA = 3.0
BETA = 12.0
RTT_SAMPLES = 50
RTT_MIN_WINDOW_S = 30.0
UPDATE_INTERVAL_S = 1.0


class AdaptiveLimit:
    """Pure bookkeeping (no I/O) so the rule is testable; `limiter` enforces the current value."""

    def __init__(self, minimum: int, maximum: int, initial: int | None = None) -> None:
        self.minimum = max(1, minimum)
        self.maximum = max(self.minimum, maximum)
        start = self.maximum if initial is None else initial
        self.limiter = trio.CapacityLimiter(min(self.maximum, max(self.minimum, start)))
        self._rtt_recent: float | None = None
        self._rtt_min: deque[tuple[float, float]] = deque()
        self._last_update = 0.0

    @property
    def limit(self) -> int:
        return int(self.limiter.total_tokens)

    def record(self, rtt_s: float, now: float) -> None:
        """One successful call took `rtt_s`; maybe move the limit (at most once per interval)."""
        rtt = max(rtt_s, 0.001)
        weight = 2 / (RTT_SAMPLES + 1)
        self._rtt_recent = (
            rtt if self._rtt_recent is None else (weight * rtt + (1 - weight) * self._rtt_recent)
        )
        while self._rtt_min and self._rtt_min[-1][1] >= rtt:
            self._rtt_min.pop()
        self._rtt_min.append((now, rtt))
        while self._rtt_min and now - self._rtt_min[0][0] > RTT_MIN_WINDOW_S:
            self._rtt_min.popleft()
        if now - self._last_update < UPDATE_INTERVAL_S:
            return
        self._last_update = now
        rtt_min = self._rtt_min[0][1]
        in_flight = self.limiter.borrowed_tokens
        queue_load = in_flight * (1 - min(1.0, rtt_min / self._rtt_recent))
        if queue_load < ALPHA and in_flight >= self.limit - 1:
            self._set(self.limit + 1)
        elif queue_load > BETA:
            self._set(self.limit - 1)

    def _set(self, value: int) -> None:
        self.limiter.total_tokens = min(self.maximum, max(self.minimum, value))
