"""The quart app of a worker, built when the first request the lean path leaves to it arrives.

quart with flask, werkzeug, jinja2 and click, hypercorn (which quart-trio imports), the routes and
their modules cost a worker some 14 MB of RSS; a worker whose clients only configure, push, pop,
ack, renew leases and get probed and scraped (the lean path, queen/http/lean.py) never loads them.

The build (imports and routes, 0.15-0.5 s measured) runs in a worker thread, so the loop goes on
serving the lean path meanwhile rather than standing still. It is a task of this layer's
lifespan, not of the request that asked first: every request arriving before it is done waits for
the same build (it happens once), a request whose client leaves just stops waiting, and the
server's shutdown cancels a build still running (its thread is abandoned) instead of waiting for
it. A build that fails is logged with its cause, the requests waiting for it are answered 503,
and the next request tries again: what the configuration can break (the dashboard's root) is
checked at start-up (queen/http/web_root.py), so a failure here is an import or a bug, and a
worker that answers the API's other routes 503 while /health says 200 must say why in its log
each time. The app's own ASGI lifespan (quart-trio's: the nursery for background tasks,
before/after-serving hooks) starts inside this layer's lifespan, which the server holds open
until it stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import trio

from queen.http.lifespan import App, Lifespan, LifespanFailed

log = logging.getLogger("queen.http")

UNAVAILABLE = orjson.dumps({"error": "The API's administrative routes could not be loaded"})


class _Build:
    """One attempt: done when it ends, with the app or without; cancelled if the server stops
    first (its own scope: the app's lifespan, once started, stops through `lifespan.shutdown`)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.scope = trio.CancelScope()
        self.app: App | None = None


class LazyApp:
    def __init__(self, build: Callable[[], App]) -> None:
        self.build = build
        self.app: App | None = None
        self._attempt: _Build | None = None
        self._nursery: trio.Nursery | None = None
        self._state: dict[str, Any] = {}
        self._lifespan: Lifespan | None = None
        self._stopping = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(scope, receive, send)
            return
        app = self.app or await self._loaded()
        if app is None:
            await _unavailable(send)
            return
        await app(scope, receive, send)

    async def _loaded(self) -> App | None:
        assert self._nursery is not None, "the server starts the lifespan before serving"
        if self._stopping:
            return None
        if self._attempt is None:
            self._attempt = _Build()
            self._nursery.start_soon(self._load, self._attempt)
        attempt = self._attempt
        await attempt.done.wait()
        return attempt.app

    async def _load(self, attempt: _Build) -> None:
        assert self._nursery is not None
        started = time.perf_counter()
        try:
            with attempt.scope:
                app = await trio.to_thread.run_sync(self.build, abandon_on_cancel=True)
                lifespan = Lifespan(app, self._state)
                await self._nursery.start(lifespan.run)
                self.app, self._lifespan, attempt.app = app, lifespan, app
        except Exception:
            log.exception("the quart app could not be built; the next request tries again")
            self._attempt = None
            return
        finally:
            attempt.done.set()
        if attempt.app is not None:
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
            self._stopping = True
            if self._attempt is not None:
                self._attempt.scope.cancel()  # a build still running is not waited for
            if self._lifespan is not None:
                try:
                    await self._lifespan.shutdown()
                except LifespanFailed as failure:
                    await send({"type": "lifespan.shutdown.failed", "message": str(failure)})
                    return
            await send({"type": "lifespan.shutdown.complete"})


async def _unavailable(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": UNAVAILABLE})
