"""The request-body budget (queen/http/body_budget.py): bodies are counted before they are kept,
a refused one is dropped as it arrives and fails only once it is in, and whatever a body took
goes back exactly once."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from queen.http.body_budget import BodyBudget, BodyRefused
from queen.http.quart_body import BudgetedBody


def test_a_body_is_taken_when_it_fits_or_when_it_is_alone() -> None:
    budget = BodyBudget(100)
    assert budget.take(150)  # alone: never refused for good
    assert not budget.take(1)
    budget.give_back(150)
    assert budget.take(60) and budget.take(40)
    assert not budget.take(1)
    assert (budget.held_bytes, budget.refused) == (100, 2)


async def test_a_refused_body_keeps_nothing_and_fails_once_it_is_in() -> None:
    budget = BodyBudget(100)
    held = BudgetedBody(budget, 80, None)
    refused = BudgetedBody(budget, 50, None)
    assert refused.refused and not held.refused
    refused.append(b"x" * 50)
    assert len(refused._data) == 0
    async with trio.open_nursery() as nursery:
        failed = trio.Event()

        async def read() -> None:
            with pytest.raises(BodyRefused):
                await refused
            failed.set()

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert not failed.is_set()  # still arriving: the answer waits for the whole body
        refused.set_complete()
    held.settle()
    held.settle()
    assert budget.held_bytes == 0


async def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    budget = BodyBudget(100)
    other = BudgetedBody(budget, 40, None)
    chunked = BudgetedBody(budget, None, None)
    chunked.append(b"x" * 50)
    assert budget.held_bytes == 90 and not chunked.refused
    chunked.append(b"x" * 20)
    assert chunked.refused and len(chunked._data) == 0
    chunked.set_complete()
    with pytest.raises(BodyRefused):
        await chunked
    chunked.settle()
    other.settle()
    assert budget.held_bytes == 0


async def test_an_accepted_body_reads_whole() -> None:
    body = BudgetedBody(BodyBudget(100), 5, None)
    body.append(b"ab")
    body.append(b"cde")
    body.set_complete()
    assert await body == b"abcde"
