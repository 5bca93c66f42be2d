"""Which namespace/task waiters a push to a queue wakes (queen/actors/consumer_groups.py
`in_scope`, queen/actors/queue_scopes.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from queen.actors.consumer_groups import in_scope
from queen.actors.queue_scopes import QueueScopes


@pytest.mark.parametrize(
    ("scope", "covered"),
    [
        (("task", "ns", ""), True),
        (("task", "", "t"), True),
        (("task", "ns", "t"), True),
        (("task", "other", ""), False),
        (("task", "", "other"), False),
        (("task", "ns", "other"), False),
    ],
)
def test_an_empty_namespace_or_task_means_any(scope: tuple[str, str, str], covered: bool) -> None:
    assert in_scope(scope, ("ns", "t")) is covered


async def test_an_unknown_queue_is_looked_up_in_one_batch_and_then_known() -> None:
    asked: list[list[str]] = []

    async def lookup(names: list[str]) -> dict[str, tuple[str, str]]:
        asked.append(names)
        return {name: ("ns", "") for name in names if name != "gone"}

    scopes = QueueScopes(lookup)
    scopes.learn("configured", "mine", "t")
    async with trio.open_nursery() as nursery:
        await nursery.start(scopes.run)
        assert scopes.scope_of("configured") == ("mine", "t")
        assert [scopes.scope_of(q) for q in ("a", "b", "gone")] == [None, None, None]
        await trio.testing.wait_all_tasks_blocked()
        assert asked == [["a", "b", "gone"]]
        assert (scopes.scope_of("a"), scopes.scope_of("gone")) == (("ns", ""), None)
        nursery.cancel_scope.cancel()
