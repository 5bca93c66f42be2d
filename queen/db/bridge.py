"""The trio side of every asyncpg call: trio-asyncio's loop, run one scheduler pass per batch of
callbacks instead of one pass per callback.

trio-asyncio 0.16 runs asyncio's callbacks as a trio task that takes one callback from its queue,
runs it, and yields to trio's scheduler before the next. asyncio itself runs every callback that
is ready at the start of an iteration. One asyncpg call queues six or seven callbacks (the task's
step, its timeout, the waiter's completion, the reader's sync mark, the task's wake-up and done
callback), several of them at once, so each call cost as many scheduler passes, each with its own
epoll wait and cancel scope. Running, per pass, the first callback and then those queued by the
time it has run (nearly as asyncio does; what those queue waits for the next pass, so a pass is
bounded and trio tasks are never starved) cut the CPU of a connection-slot call by 10-25% one at
a time and by about 30% four at once, in paired runs (docs/performance.md, the pop-one/ack-one
section).

This replaces a private method of one pinned release: `install` checks the release and leaves
any other alone, and tests/unit/test_bridge.py fails when the pin moves, so the change is looked
at again rather than silently lost or misapplied.
"""

from __future__ import annotations

from typing import Any

import trio
import trio_asyncio
from trio_asyncio import _loop

PATCHED_RELEASE = "0.16.0"

_one_callback = _loop.TrioEventLoop._main_loop_one


async def _ready_callbacks(loop: Any, no_wait: bool = False) -> None:
    await _one_callback(loop, no_wait)
    for _ in range(loop._q_recv.statistics().current_buffer_used):
        try:
            await _one_callback(loop, True)
        except trio.WouldBlock:
            return


def install() -> bool:
    """Batch trio-asyncio's callbacks per scheduler pass, in this process (idempotent). False
    when the installed trio-asyncio is not the release this was written for."""
    if trio_asyncio.__version__ != PATCHED_RELEASE:
        return False
    _loop.TrioEventLoop._main_loop_one = _ready_callbacks
    return True
