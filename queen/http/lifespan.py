"""An ASGI app's lifespan, driven from trio: `lifespan.startup` when it starts, `lifespan.shutdown`
when asked to stop, each waited for until the app says it is done.

The worker's server drives its whole stack through it at start-up and shutdown (what hypercorn's
lifespan did, without loading hypercorn), and the lazily built quart app's own lifespan goes
through it when that app is built (queen/http/lazy_app.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Message = dict[str, Any]
App = Callable[[Any, Any, Any], Awaitable[None]]


class LifespanFailed(Exception):
    """The app said its startup or shutdown failed."""


class Lifespan:
    def __init__(self, app: App, state: dict[str, Any]) -> None:
        """`state` is the lifespan scope's state, which every request's scope gets a copy of."""
        self.app = app
        self.state = state
        self._to_app, self._inbox = trio.open_memory_channel[Message](2)
        self._started = trio.Event()
        self._stopped = trio.Event()
        self._failure: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The app's lifespan task, started once the app's startup is complete; it lasts until
        `shutdown` has been answered."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._to_app.send_nowait({"type": "lifespan.startup"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_app, scope)
            await self._started.wait()
            if self._failure is not None:
                raise LifespanFailed(self._failure)
            task_status.started()

    async def shutdown(self) -> None:
        self._to_app.send_nowait({"type": "lifespan.shutdown"})
        await self._stopped.wait()
        if self._failure is not None:
            raise LifespanFailed(self._failure)

    async def _run_app(self, scope: Message) -> None:
        try:
            await self.app(scope, self._inbox.receive, self._send)
        finally:  # an app that returned early never blocks the server
            self._started.set()
            self._stopped.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind.endswith(".failed"):
            self._failure = str(message.get("message", kind))
        if kind.startswith("lifespan.startup."):
            self._started.set()
        elif kind.startswith("lifespan.shutdown."):
            self._stopped.set()
