"""How the lean path reads a request body: taken at once when the connection already has it,
read as it comes otherwise, and answered 408 when it stops coming (trio's mock clock runs the
120 s body timeout; no route is reached, so no database is needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import orjson
import trio
import trio.testing

from queen.actors.root import Services
from queen.http.answers import Answer
from queen.http.body_budget import BODY_TIMEOUT_S, BodyBudget
from queen.http.h1_connection import BUFFERED_BODY
from queen.http.lean import LeanRoutes

Message = dict[str, Any]


class Recorder:
    """The route's stand-in: what body it was handed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, svc: Services, raw: bytes, scope: dict[str, Any]) -> Answer:
        self.bodies.append(raw)
        return Answer(200, b"{}")


def routes() -> LeanRoutes:
    services = SimpleNamespace(
        config=SimpleNamespace(max_body_bytes=1 << 20), counters=SimpleNamespace(requests=0)
    )

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the lean path serves these")

    return LeanRoutes(cast(Services, services), BodyBudget(1 << 20), fallback)


def push_scope(size: int, extensions: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/push",
        "headers": [(b"content-length", str(size).encode())],
        "extensions": extensions,
    }


async def answered(lean: LeanRoutes, route: Recorder, scope: dict[str, Any], receive: Any) -> Any:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await lean._body_route(route, scope, receive, send, int(scope["headers"][0][1]))
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def test_a_body_the_connection_has_is_taken_without_receiving() -> None:
    async def receive() -> Message:
        raise AssertionError("nothing is waited for")

    route = Recorder()
    scope = push_scope(5, {BUFFERED_BODY: lambda: b"12345"})
    assert await answered(routes(), route, scope, receive) == (200, {})
    assert route.bodies == [b"12345"]


async def test_a_body_still_arriving_is_read_as_it_comes() -> None:
    pieces = iter([b"12", b"345"])

    async def receive() -> Message:
        body = next(pieces)
        return {"type": "http.request", "body": body, "more_body": body == b"12"}

    route = Recorder()
    scope = push_scope(5, {BUFFERED_BODY: lambda: None})
    assert await answered(routes(), route, scope, receive) == (200, {})
    assert route.bodies == [b"12345"]


async def test_a_body_that_stops_coming_is_answered_408(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    async def receive() -> Message:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"12", "more_body": True}
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    route, lean = Recorder(), routes()
    started = trio.current_time()
    status, body = await answered(lean, route, push_scope(5, {}), receive)
    assert (status, body) == (408, {"error": "Request Timeout"})
    assert trio.current_time() - started == BODY_TIMEOUT_S
    assert route.bodies == [] and lean.budget.held_bytes == 0
