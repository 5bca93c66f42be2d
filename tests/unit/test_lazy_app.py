"""The lazily built app (queen/http/lazy_app.py) driven through the worker's lifespan driver
(queen/http/lifespan.py): built once however many requests arrive together, started before it
answers any, stopped with the server, and built even when the request that started it leaves."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from queen.http.lazy_app import LazyApp
from queen.http.lifespan import Lifespan

pytestmark = pytest.mark.timeout(10)


class _Recorded:
    """An ASGI app that records its lifespan and answers each request with its path."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                self.events.append(kind)
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        assert self.events == ["lifespan.startup"], "started before any request"
        await send({"type": "http.response.body", "body": scope["path"].encode()})


async def _request(app: LazyApp, path: str, answers: list[bytes]) -> None:
    async def send(message: dict[str, Any]) -> None:
        answers.append(message["body"])

    await app({"type": "http", "path": path}, None, send)


async def test_built_once_started_first_and_stopped_with_the_server() -> None:
    inner = _Recorded()
    builds: list[int] = []

    def build() -> _Recorded:
        builds.append(1)
        return inner

    app = LazyApp(build)
    outer = Lifespan(app, {})
    answers: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        assert builds == [] and inner.events == []  # nothing built before it is needed
        async with trio.open_nursery() as requests:
            for index in range(20):
                requests.start_soon(_request, app, f"/{index}", answers)
        await outer.shutdown()
    assert builds == [1]
    assert sorted(answers) == sorted(f"/{index}".encode() for index in range(20))
    assert inner.events == ["lifespan.startup", "lifespan.shutdown"]


async def test_the_first_request_leaving_does_not_leave_the_others_waiting() -> None:
    inner = _Recorded()
    building, release = trio.Event(), trio.Event()

    def build() -> _Recorded:
        trio.from_thread.run_sync(building.set)
        trio.from_thread.run(release.wait)  # still building when the first request leaves
        return inner

    app = LazyApp(build)
    outer = Lifespan(app, {})
    answers: list[bytes] = []
    first = trio.CancelScope()

    async def first_request() -> None:
        with first:
            await _request(app, "/first", answers)

    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        async with trio.open_nursery() as requests:
            requests.start_soon(first_request)
            await building.wait()
            requests.start_soon(_request, app, "/second", answers)
            first.cancel()
            release.set()
        await outer.shutdown()
    assert answers == [b"/second"]
    assert inner.events == ["lifespan.startup", "lifespan.shutdown"]
