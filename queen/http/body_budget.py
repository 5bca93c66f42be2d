"""What request bodies may cost one worker: a budget of bytes for the bodies it holds at once.

quart keeps a request's body in memory as it arrives, whatever the handler is doing, and a push
then costs a few times its body until it is answered; without a bound, a few large pushes at
once take the worker's memory with them. So every body is counted against the worker's budget
before it is kept: one that announces its Content-Length is taken whole or not at all when its
headers arrive (first come, first served: bodies arriving together never each get a part and
all starve), a chunked one is counted as it arrives. A body alone in the worker is always taken,
so none the size limit allows is refused for good.

A refused body is read and dropped, never kept, and its request answers 503 with Retry-After
once the body is in: answering while a body still arrives leaves responses unsent on this stack
(app._drain_body), and the client sees the 503 rather than a connection torn mid-upload.

The budget is shared by both paths and imports no quart; quart's bodies count against it through
queen/http/quart_body.py.
"""

from __future__ import annotations

from queen import memory
from queen.errors import TryAgainLater

# A body still arriving after this long is answered 408, by quart and the lean path alike.
BODY_TIMEOUT_S = 120.0


class BodyBudget:
    """The bytes of request bodies this worker holds; only `BodyShare` changes it."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held_bytes = 0
        self.refused = 0

    def take(self, size: int) -> bool:
        if self.held_bytes and self.held_bytes + size > self.limit_bytes:
            self.refused += 1
            return False
        self.held_bytes += size
        return True

    def give_back(self, size: int) -> None:
        self.held_bytes -= size


class BodyRefused(TryAgainLater):
    def __init__(self) -> None:
        super().__init__("Server busy: too many request bodies in flight, retry later")


class BodyShare:
    """What one body took from the budget, given back exactly once: when its request ends, or,
    should that never be said (a cancelled request), when the body is collected."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> bool:
        if not self.budget.take(size):
            return False
        self.size += size
        return True

    def give_back(self) -> None:
        size, self.size = self.size, 0
        self.budget.give_back(size)
        memory.after_large_body(size)
