"""Which packets of one sender to believe: its session, a sliding window of the sequence numbers
seen in it, and the payload clock (spec security-cluster §3.6, D-U5).

The original keeps only the highest sequence, so a packet the network reordered is dropped, and
accepts any packet of another session as a restart, so any captured packet of an earlier session
replays. Here a window of 64 sequence numbers admits late packets once each; a session once left
is refused for good; and a payload `ts` more than a minute from local time, or, in a new session,
older than the last one seen, is refused. Pure logic, no clock of its own: tests drive it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW = 64
MAX_CLOCK_SKEW_MS = 60_000
RETIRED_SESSIONS_KEPT = 16


@dataclass
class SenderWindow:
    session: str | None = None
    highest: int = 0
    seen: int = 0  # bit i: sequence `highest - i` was accepted
    last_ts: int | None = None
    restarts: int = 0
    retired: deque[str] = field(default_factory=lambda: deque(maxlen=RETIRED_SESSIONS_KEPT))

    def admit(self, session: str, sequence: int, ts: int | None, now_ms: int) -> str | None:
        """None when the packet is new and believable (state updated), else the drop reason."""
        if ts is not None and abs(ts - now_ms) > MAX_CLOCK_SKEW_MS:
            return "stale"
        if session != self.session:
            if session in self.retired:
                return "replay"
            if self.session is not None:
                if ts is not None and self.last_ts is not None and ts < self.last_ts:
                    return "replay"
                self.retired.append(self.session)
                self.restarts += 1
            self.session, self.highest, self.seen = session, sequence, 1
        elif sequence > self.highest:
            shift = sequence - self.highest
            self.seen = ((self.seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.highest = sequence
        else:
            offset = self.highest - sequence
            if offset >= WINDOW or self.seen >> offset & 1:
                return "replay"
            self.seen |= 1 << offset
        if ts is not None:
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        return None
