"""The quart app of a worker, built when the first request the lean path leaves to it arrives.

quart with flask, werkzeug, jinja2 and click, the routes and their modules cost a worker some
9 MB of RSS; a worker whose clients only configure, push, pop, ack and probe (the lean path,
queen/http/lean.py) never loads them.

The build (imports and routes) is synchronous: the worker's loop stands still for it once (about
0.2 s measured), and no other task runs meanwhile, so it happens exactly once however many
requests arrive together. The app's own ASGI lifespan (quart-trio's: the nursery for background
tasks, before/after-serving hooks) then starts inside this layer's lifespan, which the server holds
open until it stops; requests arriving while it starts wait for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from queen.http.lifespan import App, Lifespan, LifespanFailed

log = logging.getLogger("queen.http")


class LazyApp:
    def __init__(self, build: Callable[[], App]) -> None:
        self.build = build
        self.app: App | None = None
        self._ready = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._state: dict[str, Any] = {}
        self._lifespan: Lifespan | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(scope, receive, send)
            return
        await (await self._loaded())(scope, receive, send)

    async def _loaded(self) -> App:
        if self.app is None:
            assert self._nursery is not None, "the server starts the lifespan before serving"
            started = time.perf_counter()
            self.app = self.build()
            self._lifespan = Lifespan(self.app, self._state)
            try:
                # Shielded: the request that happened to come first may be cancelled (its client
                # left), the others waiting here still need the app started.
                with trio.CancelScope(shield=True):
                    await self._nursery.start(self._lifespan.run)
            finally:
                self._ready.set()
            log.info(
                "quart app loaded",
                extra={"duration_ms": round((time.perf_counter() - started) * 1000, 1)},
            )
        await self._ready.wait()
        return self.app

    async def _serve_lifespan(self, scope: Any, receive: Any, send: Any) -> None:
        async with trio.open_nursery() as nursery:
            await receive()  # lifespan.startup: nothing to start until the app is built
            self._nursery = nursery
            self._state = scope.get("state", {})
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            if self._lifespan is not None:
                try:
                    await self._lifespan.shutdown()
                except LifespanFailed as failure:
                    await send({"type": "lifespan.shutdown.failed", "message": str(failure)})
                    return
            await send({"type": "lifespan.shutdown.complete"})
