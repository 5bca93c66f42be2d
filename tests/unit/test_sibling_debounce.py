"""One wake-up datagram in flight per target and sibling: a burst of push batches into a sibling
that has not read the last datagram yet sends nothing more for the same queue (that datagram,
read after those pushes committed, wakes its pops anyway), a new queue goes out at once together
with what is in flight, and once the sibling has read everything the next push sends again.

The sibling here is a real socket at the sibling's path that the test reads when it chooses. It
shares no count of waiting pops, so it is sent every wake-up (tests/unit/test_sibling_listeners.py
covers the count)."""

from __future__ import annotations

import random
import shutil
import socket
from collections.abc import Iterator

import pytest
import trio

from queen.sync.siblings import MAX_DATAGRAM, SiblingWakeups, _unpack, wake_directory

BURST = 200


@pytest.fixture
def port() -> Iterator[int]:
    port = random.randint(20_000, 60_000)  # names the wake directory only; nothing listens on it
    yield port
    shutil.rmtree(wake_directory(port), ignore_errors=True)


def read_all(sibling: socket.socket) -> list[list[tuple[str | None, str | None]]]:
    datagrams = []
    while True:
        try:
            targets, _events = _unpack(sibling.recv(MAX_DATAGRAM))
            datagrams.append(targets)
        except BlockingIOError:
            return datagrams


async def test_a_burst_into_a_sibling_that_has_not_read_sends_one_datagram(port: int) -> None:
    wakeups = SiblingWakeups(port, 0, 2, on_wake=lambda queue, group: None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(wakeups.run)
            sibling = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sibling.bind(str(wake_directory(port) / "w1.sock"))
            sibling.setblocking(False)
            try:
                for _ in range(BURST):
                    wakeups.notify([("q", None)])
                assert wakeups.sent == 1
                wakeups.notify([("other", None)])  # not in flight: goes at once
                assert wakeups.sent == 2
                datagrams = [set(d) for d in read_all(sibling)]
                assert datagrams == [{("q", None)}, {("q", None), ("other", None)}]

                wakeups.notify([("q", None)])  # all read: the next push is a new wake-up
                assert wakeups.sent == 3
                assert read_all(sibling) == [[("q", None)]]
            finally:
                sibling.close()
            nursery.cancel_scope.cancel()
