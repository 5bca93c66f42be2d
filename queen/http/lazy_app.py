"""The quart app of a worker, built when the first request the lean path leaves to it arrives.

quart with flask, werkzeug, jinja2 and click, hypercorn (which quart-trio imports), the routes and
their modules cost a worker some 14 MB of RSS; a worker whose clients only configure, push, pop,
ack, renew leases and get probed and scraped (the lean path, queen/http/lean.py) never loads them.

The build (imports and routes, 0.15-0.5 s measured) runs in a worker thread, so the loop
goes on serving the lean path meanwhile rather than standing still; the first request starts it,
and every request arriving before it is done waits for the same build, so it happens once. The
app's own ASGI lifespan (quart-trio's: the nursery for background tasks, before/after-serving
hooks) then starts inside this layer's lifespan, which the server holds open until it stops.
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
        self._loading = False
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
        if not self._loading:
            self._loading = True
            # Shielded: the request that happened to come first may be cancelled (its client
            # left); the others waiting for the app still need it built and started.
            with trio.CancelScope(shield=True):
                try:
                    await self._load()
                finally:
                    self._ready.set()
        await self._ready.wait()
        if self.app is None:
            raise RuntimeError("the quart app could not be built")
        return self.app

    async def _load(self) -> None:
        assert self._nursery is not None, "the server starts the lifespan before serving"
        started = time.perf_counter()
        app = await trio.to_thread.run_sync(self.build)
        lifespan = Lifespan(app, self._state)
        await self._nursery.start(lifespan.run)
        self.app, self._lifespan = app, lifespan
        log.info(
            "quart app loaded",
            extra={"duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )

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
