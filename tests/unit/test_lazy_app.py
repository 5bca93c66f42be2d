"""The lazily built app (queen/http/lazy_app.py) driven through the worker's lifespan driver
(queen/http/lifespan.py): built once however many requests arrive together, started before it
answers any, stopped with the server, and built even when the request that started it leaves."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from queen.actors.root import Services
from queen.config import Config
from queen.http.asgi import build_asgi
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


async def _status_and_body(app: LazyApp, path: str) -> tuple[int, bytes]:
    answer: dict[str, Any] = {}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] = message["body"]

    await app({"type": "http", "path": path}, None, send)
    return answer.get("status", 200), answer["body"]


async def test_a_failed_build_is_logged_answered_503_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = _Recorded()
    attempts: list[int] = []

    def build() -> _Recorded:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("quart_trio is broken")
        return inner

    app = LazyApp(build)
    outer = Lifespan(app, {})
    async with trio.open_nursery() as nursery:
        await nursery.start(outer.run)
        status, body = await _status_and_body(app, "/first")
        assert status == 503 and json.loads(body) == {
            "error": "The API's administrative routes could not be loaded"
        }
        assert "quart_trio is broken" in caplog.text  # the cause, not only that it failed
        assert await _status_and_body(app, "/second") == (200, b"/second")
        await outer.shutdown()
    assert attempts == [1, 1]
    assert inner.events == ["lifespan.startup", "lifespan.shutdown"]


async def test_shutdown_does_not_wait_for_a_build_still_running() -> None:
    building, never = trio.Event(), threading.Event()

    def build() -> _Recorded:
        trio.from_thread.run_sync(building.set)
        never.wait(5)  # an import stuck far longer than any graceful timeout
        return _Recorded()

    app = LazyApp(build)
    outer = Lifespan(app, {})
    answers: list[tuple[int, bytes]] = []

    async def waiting_request() -> None:
        answers.append(await _status_and_body(app, "/waiting"))

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            nursery.start_soon(waiting_request)
            await building.wait()
            with trio.fail_after(2):
                await outer.shutdown()
    finally:
        never.set()
    assert [status for status, _ in answers] == [503]
    assert await _status_and_body(app, "/after") == (
        503,
        b'{"error":"The API\'s administrative routes could not be loaded"}',
    )


def test_a_dashboard_root_that_cannot_be_resolved_stops_the_worker_at_start(
    tmp_path: Path,
) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    services = Services(Config.from_env({"PG_HOST": "unused", "WEBAPP_ROOT": str(loop)}), 0)
    with pytest.raises((RuntimeError, OSError)):  # a symlink loop, by Python version
        build_asgi(services)
