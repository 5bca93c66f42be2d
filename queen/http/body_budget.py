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
"""

from __future__ import annotations

from functools import partial
from typing import Any

from quart_trio.wrappers.request import TrioBody, TrioRequest

from queen import memory
from queen.errors import TryAgainLater

# A body still arriving after this long is answered 408, by quart and the lean path alike.
BODY_TIMEOUT_S = 120.0


class BodyBudget:
    """The bytes of request bodies this worker holds; only the bodies below change it."""

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


class BudgetedBody(TrioBody):
    def __init__(
        self,
        budget: BodyBudget,
        expected_content_length: int | None,
        max_content_length: int | None,
    ) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.refused = False
        self._expected = expected_content_length
        self._share = BodyShare(budget)
        self._settled = False
        if expected_content_length and self._must_raise is None:
            self.refused = not self._share.take(expected_content_length)

    def append(self, data: bytes) -> None:
        if self.refused or self._settled:
            return
        if self._expected is None and data and not self._share.take(len(data)):
            self.refused = True
            self._data = bytearray()  # what was kept goes now: the request will be refused
            return
        super().append(data)

    def __await__(self) -> Any:
        if self._must_raise is not None:  # too large: answered at once, as quart does
            raise self._must_raise
        yield from self._complete.wait().__await__()
        if self.refused:
            raise BodyRefused()
        return (yield from super().__await__())

    def settle(self) -> None:
        """The request is over: what its body took goes back to the budget."""
        self._settled = True
        self._share.give_back()

    def __del__(self) -> None:
        # A request nobody settled (cancelled before its teardown) gives its share back when
        # its body is collected; `__del__` rather than weakref.finalize, which cost every
        # single-message push a registry entry (about 1% of a worker's samples under push@1).
        self._share.give_back()


def budgeted_request_class(budget: BodyBudget) -> type[TrioRequest]:
    """quart-trio's request, its body counted against `budget`."""

    class BudgetedRequest(TrioRequest):
        body_class = partial(BudgetedBody, budget)  # type: ignore[assignment]

    return BudgetedRequest
