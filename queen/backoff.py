"""Pacing of retry loops. A leaf on purpose: the worker's actors and the `queen serve` parent,
which must not load trio, pace their retries by the same rule."""

from __future__ import annotations

import math
from collections.abc import Callable


def backoff_delays(initial_s: float, maximum_s: float) -> Callable[[int], float]:
    """Delay before attempt n (0-based) of a reconnect loop: exponential, capped."""

    def delay(attempt: int) -> float:
        return min(maximum_s, initial_s * math.pow(2, min(attempt, 30)))

    return delay
