"""Login throttling (D-P6): at most 10 failed logins per username and per client address within
15 minutes; the 11th attempt gets 429 with Retry-After until the oldest failure ages out.

State lives in the proxy process: one `queen proxy` is one process, and a restart forgetting the
counts costs an attacker's budget at most once per restart.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW_S = 15 * 60
_MAX_KEYS = 100_000


class LoginThrottle:
    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        horizon = self._clock() - self._window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until a login for these keys may be tried again, or None when it may now."""
        waits = []
        for key in keys:
            failures = self._recent(key)
            if len(failures) >= self._max:
                waits.append(failures[-self._max] + self._window - self._clock())
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, *keys: str) -> None:
        if len(self._failures) >= _MAX_KEYS:
            for key in list(self._failures):
                self._recent(key)
        now = self._clock()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
            while len(self._failures[key]) > self._max:
                self._failures[key].popleft()

    def succeeded(self, username_key: str) -> None:
        self._failures.pop(username_key, None)
