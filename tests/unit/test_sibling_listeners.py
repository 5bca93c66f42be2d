"""Wake-ups go only to a sibling worker that listens: one with a pop that may park, or the one
that relays wake-ups to other instances. Two real sibling links of one server, in one process,
each with its socket and its listening count in the shared directory."""

from __future__ import annotations

import random
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from queen.actors.consumer_groups import QUEUE_MODE
from queen.errors import TryAgainLater
from queen.http.messaging import pop_answer, queue_target
from queen.http.validate import PopParams
from queen.sync import siblings
from queen.sync.events import QueueChanged
from queen.sync.siblings import SiblingWakeups, WakeTarget, wake_directory
from tests.unit.test_sibling_debounce import read_all


@pytest.fixture
def port() -> Iterator[int]:
    port = random.randint(20_000, 60_000)  # names the wake directory only; nothing listens on it
    yield port
    shutil.rmtree(wake_directory(port), ignore_errors=True)


class Worker:
    def __init__(self, port: int, worker_id: int, *, relaying: bool = False) -> None:
        self.woken: list[WakeTarget] = []
        self.link = SiblingWakeups(
            port, worker_id, 2, on_wake=lambda q, g: self.woken.append((q, g)), relaying=relaying
        )


@asynccontextmanager
async def running(*workers: Worker | SiblingWakeups) -> AsyncIterator[None]:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for worker in workers:
                link = worker.link if isinstance(worker, Worker) else worker
                await nursery.start(link.run)
            yield
            nursery.cancel_scope.cancel()


async def received(worker: Worker, count: int) -> None:
    while worker.link.received < count:  # noqa: ASYNC110 (the link counts; it sets no event)
        await trio.sleep(0.001)


async def test_a_sibling_without_a_pop_that_may_park_is_not_sent_wake_ups(port: int) -> None:
    pusher, consumer = Worker(port, 0), Worker(port, 1)
    async with running(pusher, consumer):
        pusher.link.notify([("q", None)])
        assert pusher.link.sent == 0

        with consumer.link.listening():
            pusher.link.notify([("q", None)])
            assert pusher.link.sent == 1
            await received(consumer, 1)
            assert consumer.woken == [("q", None)]

        pusher.link.notify([("other", None)])
        assert pusher.link.sent == 1


async def test_listening_counts_every_pop_until_the_last_one_ends(port: int) -> None:
    pusher, consumer = Worker(port, 0), Worker(port, 1)
    async with running(pusher, consumer):
        with consumer.link.listening():
            with consumer.link.listening():
                pass
            pusher.link.notify([("q", None)])
            assert pusher.link.sent == 1
        pusher.link.notify([("q2", None)])
        assert pusher.link.sent == 1


async def test_a_pop_counted_before_the_link_started_is_published_when_it_starts(
    port: int,
) -> None:
    pusher, consumer = Worker(port, 0), Worker(port, 1)
    with consumer.link.listening():
        async with running(pusher, consumer):
            pusher.link.notify([("q", None)])
            assert pusher.link.sent == 1


async def test_the_relaying_worker_always_listens(port: int) -> None:
    gateway, sibling = Worker(port, 0, relaying=True), Worker(port, 1)
    async with running(gateway, sibling):
        sibling.link.notify([("q", None)])
        assert sibling.link.sent == 1
        await received(gateway, 1)
        assert gateway.woken == [("q", None)]


async def test_a_restarted_link_keeps_its_count_in_the_same_file(port: int) -> None:
    pusher, consumer = Worker(port, 0), Worker(port, 1)
    async with running(pusher):
        async with running(consumer):
            pusher.link.notify([("q", None)])
            assert pusher.link.sent == 0  # the pusher has mapped worker 1's count
        with consumer.link.listening():
            async with running(consumer):
                pusher.link.notify([("q", None)])
                assert pusher.link.sent == 1


async def test_the_gateway_listens_only_while_it_relays(port: int) -> None:
    gateway, sibling = Worker(port, 0), Worker(port, 1)
    async with running(gateway, sibling):
        sibling.link.notify([("q", None)])
        assert sibling.link.sent == 0  # no other instance heard: nothing to pass on
        gateway.link.relay(True)
        gateway.link.relay(True)  # told twice, counted once
        with gateway.link.listening():
            pass
        sibling.link.notify([("q", None)])
        assert sibling.link.sent == 1
        await received(gateway, 1)
        gateway.link.relay(False)
        sibling.link.notify([("q2", None)])
        assert sibling.link.sent == 1


async def test_an_announcement_reaches_a_sibling_that_does_not_listen(port: int) -> None:
    got: list[object] = []
    sender = Worker(port, 0)
    receiver = SiblingWakeups(port, 1, 2, on_wake=lambda q, g: None, on_event=got.append)
    async with running(sender, receiver):
        sender.link.announce(QueueChanged("q"))
        while not got:  # noqa: ASYNC110 (the link calls back; it sets no event)
            await trio.sleep(0.001)
    assert got == [QueueChanged("q")]


async def test_a_sibling_that_shares_no_count_yet_is_sent_wake_ups(port: int) -> None:
    pusher = Worker(port, 0)
    async with running(pusher):
        sibling = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sibling.bind(str(wake_directory(port) / "w1.sock"))
        sibling.setblocking(False)
        try:
            pusher.link.notify([("q", None)])  # no count file at all
            assert pusher.link.sent == 1
            short = wake_directory(port) / "w1.listeners"
            short.write_bytes(b"\0\0\0")  # a count not written whole
            pusher.link.notify([("q2", None)])
            assert pusher.link.sent == 2
            assert [set(targets) for targets in read_all(sibling)] == [
                {("q", None)},
                {("q", None), ("q2", None)},
            ]
        finally:
            sibling.close()


async def test_a_count_left_by_an_earlier_run_is_overwritten_at_start(port: int) -> None:
    pusher, consumer = Worker(port, 0), Worker(port, 1)
    stale = wake_directory(port) / "w1.listeners"
    stale.parent.mkdir(mode=0o700)
    stale.write_bytes((5).to_bytes(8, "little"))
    async with running(pusher, consumer):
        pusher.link.notify([("q", None)])
        assert pusher.link.sent == 0


async def test_a_count_file_created_anew_from_outside_is_mapped_again(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A map of a deleted file reads its last count for good: the reader notices the new file
    (here at once; at most a second later in service)."""
    monkeypatch.setattr(siblings, "REPLACED_CHECK_S", 0.0)
    pusher, consumer = Worker(port, 0), Worker(port, 1)
    async with running(pusher):
        async with running(consumer):
            pusher.link.notify([("q", None)])
            assert pusher.link.sent == 0  # worker 1's count, mapped, reads 0
            (wake_directory(port) / "w1.listeners").unlink()  # a temp cleaner
        with consumer.link.listening():
            async with running(consumer):  # restarted: a new file, counting 1
                pusher.link.notify([("q", None)])
                assert pusher.link.sent == 1


def pop_params(*, wait: bool) -> PopParams:
    return PopParams(
        batch=1,
        wait=wait,
        timeout_ms=5000,
        group=QUEUE_MODE,
        auto_ack=False,
        subscription_mode="",
        subscription_from="",
        partitions=1,
    )


class Services:
    """What `pop_answer` uses of a worker: a real sibling link, a pop lane and a park that
    record what the worker's count said while they ran."""

    def __init__(self, port: int, park: Callable[[], Awaitable[dict[str, Any] | None]]) -> None:
        self.siblings = SiblingWakeups(port, 1, 2, on_wake=lambda q, g: None)
        self.reader = siblings._SharedCount(wake_directory(port) / "w1.listeners")
        self.flags = SimpleNamespace(pop_maintenance=False)
        self.seen: dict[str, int | None] = {}
        self.batcher = SimpleNamespace(pop=SimpleNamespace(submit=self._first_look))
        self.consumer_groups = SimpleNamespace(wakes=0, park=self._park)
        self._parked = park

    async def _first_look(self, _items: list[Any]) -> list[dict[str, Any]]:
        self.seen["first look"] = self.reader.read()
        return [{"messages": []}]

    async def _park(self, *_args: Any) -> dict[str, Any] | None:
        self.seen["parked"] = self.reader.read()
        return await self._parked()


async def found() -> dict[str, Any] | None:
    return {"messages": [{"transactionId": "t"}]}


async def busy() -> dict[str, Any] | None:
    raise TryAgainLater("too many waiting pops")


async def never() -> dict[str, Any] | None:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def pop(svc: Services, *, wait: bool) -> Any:
    return await pop_answer(svc, queue_target("q"), pop_params(wait=wait))  # type: ignore[arg-type]


async def test_a_pop_that_may_park_is_counted_from_before_its_first_look(port: int) -> None:
    svc = Services(port, found)
    async with running(svc.siblings):
        answer = await pop(svc, wait=True)
        assert answer.status == 200
        assert svc.seen == {"first look": 1, "parked": 1}
        assert svc.reader.read() == 0


async def test_a_pop_that_cannot_park_is_not_counted(port: int) -> None:
    svc = Services(port, found)
    async with running(svc.siblings):
        answer = await pop(svc, wait=False)
        assert answer.status == 204
        assert svc.seen == {"first look": 0}


async def test_a_pop_refused_or_cancelled_while_parked_is_no_longer_counted(port: int) -> None:
    svc = Services(port, busy)
    async with running(svc.siblings):
        with pytest.raises(TryAgainLater):
            await pop(svc, wait=True)
        assert svc.reader.read() == 0

        svc._parked = never
        with trio.move_on_after(0.05):
            await pop(svc, wait=True)
        assert svc.seen["parked"] == 1
        assert svc.reader.read() == 0
