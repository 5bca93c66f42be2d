"""The trio side of every asyncpg call: trio-asyncio's loop, run one scheduler pass per batch of
callbacks instead of one pass per callback, and without work asyncio itself skips.

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

Three more costs of every call, gone since (docs/performance.md, "What a small request costs"):
every asyncpg call sets a timer for its deadline (statement timeout + 5 s) and cancels it when
it returns, and trio-asyncio keeps a cancelled timer in its heap until it would have fired, so a
worker held some 35 s of calls' timers (3,200 after 3,000 calls with a 5 s deadline, in the
measurement below); they now leave the heap once they reach its top, which in a stream of calls
with one deadline is as soon as every earlier one was cancelled too. trio-asyncio also waits for
its next callback inside a cancel scope with the nearest timer's deadline even when no live timer
is left (a scope entered and left for a deadline that cannot come: a timer can only be added
through the same queue the loop waits on), and it checks every scheduled callback for being a
coroutine, which asyncio does only in debug mode (2-4 us a check, several a call). Together:
0.90x the worker CPU of an asyncpg round trip from trio, in paired runs. Outside debug
mode a callback that is not one (queen schedules none; asyncpg's are its own) now fails when it
runs rather than when it is scheduled: as in asyncio, except that trio-asyncio's exception
handler then stops the loop instead of logging.

This replaces private methods of one pinned release: `install` checks the release and leaves
any other alone, and tests/unit/test_bridge.py fails when the pin moves, so the change is looked
at again rather than silently lost or misapplied.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

import sniffio
import trio
import trio_asyncio
from trio_asyncio import _loop
from trio_asyncio._handles import AsyncHandle

PATCHED_RELEASE = "0.16.0"

_one_callback = _loop.TrioEventLoop._main_loop_one
_checked_callback = _loop.TrioEventLoop._check_callback


async def _ready_callbacks(loop: Any, no_wait: bool = False) -> None:
    timers = loop._timers
    while timers and timers[0]._cancelled:
        heapq.heappop(timers)
    if no_wait or timers:
        await _one_callback(loop, no_wait)
    else:
        await _run(loop, await loop._q_recv.receive())
    for _ in range(loop._q_recv.statistics().current_buffer_used):
        try:
            await _one_callback(loop, True)
        except trio.WouldBlock:
            return


async def _run(loop: Any, handle: asyncio.Handle) -> None:
    """What trio-asyncio does with a callback it took from its queue: a timer joins the heap, a
    trio function starts in the loop's nursery, anything else runs in asyncio's name."""
    if isinstance(handle, asyncio.TimerHandle):
        heapq.heappush(loop._timers, handle)
    elif isinstance(handle, AsyncHandle):
        handle._context.run(loop._nursery.start_soon, handle._run, name=handle._callback)
        await handle._started.wait()
    elif not handle._cancelled:
        library = sniffio.thread_local.name
        sniffio.thread_local.name = "asyncio"
        try:
            handle._run()
        finally:
            sniffio.thread_local.name = library


def _check_callback_when_debugging(loop: Any, callback: Any, method: str) -> None:
    if loop._debug:
        _checked_callback(loop, callback, method)


def install() -> bool:
    """Batch trio-asyncio's callbacks per scheduler pass, in this process (idempotent). False
    when the installed trio-asyncio is not the release this was written for."""
    if trio_asyncio.__version__ != PATCHED_RELEASE:
        return False
    _loop.TrioEventLoop._main_loop_one = _ready_callbacks
    _loop.TrioEventLoop._check_callback = _check_callback_when_debugging
    return True
