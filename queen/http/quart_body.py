"""quart-trio's request body, counted against the worker's body budget (queen/http/body_budget.py)
before it is kept; a refused one is dropped as it arrives and fails only once it is in."""

from __future__ import annotations

from functools import partial
from typing import Any

from quart_trio.wrappers.request import TrioBody, TrioRequest

from queen.http.body_budget import BodyBudget, BodyRefused, BodyShare


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
