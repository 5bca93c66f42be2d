"""Wake-ups go only to a sibling worker that listens: one with a pop that may park, or the one
that relays wake-ups to other instances. Two real sibling links of one server, in one process,
each with its socket and its listening count in the shared directory."""

from __future__ import annotations

import random
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from queen.sync.siblings import SiblingWakeups, WakeTarget, wake_directory


@pytest.fixture
def port() -> Iterator[int]:
    port = random.randint(20_000, 60_000)  # names the wake directory only; nothing listens on it
    yield port
    shutil.rmtree(wake_directory(port), ignore_errors=True)


class Worker:
    def __init__(self, port: int, worker_id: int, *, relays: bool = False) -> None:
        self.woken: list[WakeTarget] = []
        self.link = SiblingWakeups(
            port, worker_id, 2, on_wake=lambda q, g: self.woken.append((q, g)), relays=relays
        )


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for worker in workers:
                await nursery.start(worker.link.run)
            yield
            nursery.cancel_scope.cancel()


async def received(worker: Worker, count: int) -> None:
    while worker.link.received < count:
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
    gateway, sibling = Worker(port, 0, relays=True), Worker(port, 1)
    async with running(gateway, sibling):
        sibling.link.notify([("q", None)])
        assert sibling.link.sent == 1
        await received(gateway, 1)
        assert gateway.woken == [("q", None)]


async def test_a_sibling_whose_count_cannot_be_read_yet_is_sent_wake_ups(port: int) -> None:
    pusher = Worker(port, 0)
    async with running(pusher):  # worker 1 has not started: no count, no socket yet
        assert pusher.link.siblings[0].listens()


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
