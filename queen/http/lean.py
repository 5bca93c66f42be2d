"""The lean path: the hot routes (push, pop, ack, ack batch) and what clients and probes call in
steady state (configure, lease extension, /health, /metrics/prometheus) answered straight over
ASGI, every other request handed to quart untouched (quart is loaded for the first such request
only: queen/http/lazy_app.py).

A single-message push through quart-trio cost some 1 ms of worker CPU, most of it the framework:
a request object with parsed headers, routing, app and request contexts, hooks, a response object,
and two extra tasks per request. Here a request is one dictionary lookup (or one split of the
path), its body is read in the task hypercorn already runs for it, and the reply goes out as two
ASGI messages encoded once. The handler cores are quart's own (queen/http/messaging.py), and so
are the error table, the body budget and size limit and the body timeout, so the wire cannot
tell the two paths apart (CORS, access checks, request ids and the access log wrap both paths).

What this path does not serve goes to quart before anything of the request is read: other
methods (405 with Allow, OPTIONS preflights, HEAD), other spellings of the paths (a trailing
slash), GET requests that carry a body, and bodies announced larger than the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import trio

from queen.actors.root import Services
from queen.http import messaging, probes, push_body, validate
from queen.http.answers import Answer, error_answer
from queen.http.body_budget import BODY_TIMEOUT_S, BodyBudget, BodyRefused, BodyShare
from queen.http.failures import TOO_LARGE, failure_answer
from queen.http.h1_connection import BUFFERED_BODY, CLIENT_LEFT
from queen.http.undecodable import QUOTE_UNDECODABLE

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_POP_QUEUE = "/api/v1/pop/queue/"
_LEASE = "/api/v1/lease/"
_EXTEND = "/extend"


class _Disconnected(Exception):
    """The client left before its request was answered: nothing is sent."""


class _BodyTooLarge(Exception):
    """A body without a Content-Length grew past the limit while it arrived."""


BodyRoute = Callable[[Services, bytes, Scope], Awaitable[Answer]]
ProbeRoute = Callable[[Services], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class _Pop:
    """A pop route matched with its path parameters (queue, partition), or none for /pop."""

    queue: str | None = None
    partition: str | None = None

    def where(self, args: Mapping[str, str]) -> messaging.PopWhere:
        if self.queue is None:
            return messaging.namespace_task_target(args)
        return messaging.queue_target(self.queue, self.partition)


async def _push(svc: Services, raw: bytes, scope: Scope) -> Answer:
    return await messaging.push_answer(svc, raw, push_body.producer_sub_of(scope))


async def _configure(svc: Services, raw: bytes, _: Scope) -> Answer:
    return await messaging.configure_answer(svc, raw)


async def _extend_lease(svc: Services, raw: bytes, scope: Scope) -> Answer:
    lease_id = _lease_id(scope["path"])
    assert lease_id is not None, "routed here by _body_route"
    return await messaging.extend_answer(svc, lease_id, raw)


async def _ack(svc: Services, raw: bytes, _: Scope) -> Answer:
    return await messaging.ack_answer(svc, raw)


async def _ack_batch(svc: Services, raw: bytes, _: Scope) -> Answer:
    return await messaging.ack_batch_answer(svc, raw)


_BODY_ROUTES: dict[str, BodyRoute] = {
    "/api/v1/configure": _configure,
    "/api/v1/push": _push,
    "/api/v1/ack": _ack,
    "/api/v1/ack/batch": _ack_batch,
}


_PROBE_ROUTES: dict[str, ProbeRoute] = {
    "/health": probes.health_answer,
    "/metrics/prometheus": probes.scrape_answer,
}


def _body_route(path: str) -> BodyRoute | None:
    route = _BODY_ROUTES.get(path)
    if route is None and _lease_id(path) is not None:
        return _extend_lease
    return route


def _lease_id(path: str) -> str | None:
    """The lease id of quart's `/lease/<lease_id>/extend`: one non-empty path segment."""
    if not (path.startswith(_LEASE) and path.endswith(_EXTEND)):
        return None
    lease_id = path[len(_LEASE) : -len(_EXTEND)]
    return lease_id if lease_id and "/" not in lease_id else None


def _pop_route(path: str) -> _Pop | None:
    """The pop routes quart would match for `path`: werkzeug's default converter takes one
    non-empty path segment."""
    if path == "/api/v1/pop":
        return _Pop()
    if not path.startswith(_POP_QUEUE):
        return None
    parts = path[len(_POP_QUEUE) :].split("/")
    if len(parts) == 1 and parts[0]:
        return _Pop(parts[0])
    if len(parts) == 3 and parts[0] and parts[1] == "partition" and parts[2]:
        return _Pop(parts[0], parts[2])
    return None


def _extension(scope: Scope, name: str) -> Any:
    """The server's extension `name` (queen/http/h1_connection.py), or None (hypercorn)."""
    extensions = scope.get("extensions")
    return extensions.get(name) if extensions else None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class LeanRoutes:
    """The ASGI callable a worker serves: hot routes here, the rest to `fallback` (quart)."""

    def __init__(self, services: Services, budget: BodyBudget, fallback: ASGIApp) -> None:
        self.services = services
        self.budget = budget
        self.max_body_bytes = services.config.max_body_bytes
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST":
                route = _body_route(path)
                if route is not None:
                    length = _header(scope, b"content-length")
                    size = None if length is None else int(length)
                    if size is None or size <= self.max_body_bytes:
                        await self._body_route(route, scope, receive, send, size)
                        return
            elif (
                method == "GET"
                and _header(scope, b"content-length") in (None, b"0")
                and _header(scope, b"transfer-encoding") is None
            ):
                pop = _pop_route(path)
                if pop is not None:
                    await self._pop_route(pop, scope, receive, send)
                    return
                probe = _PROBE_ROUTES.get(path)
                if probe is not None:
                    await self._probe_route(probe, scope, send)
                    return
        await self.fallback(scope, receive, send)

    async def _body_route(
        self, route: BodyRoute, scope: Scope, receive: Receive, send: Send, size: int | None
    ) -> None:
        self.services.counters.requests += 1
        share = BodyShare(self.budget)
        try:
            try:
                answer = await self._answer_body(route, scope, receive, share, size)
            except _Disconnected:
                return
            await _send(send, answer)
        finally:
            share.give_back()

    async def _answer_body(
        self, route: BodyRoute, scope: Scope, receive: Receive, share: BodyShare, size: int | None
    ) -> Answer:
        # An announced body is taken from the budget whole or not at all before it is read
        # (queen.http.body_budget); a refused one is read and dropped, then answered 503. One
        # the connection has read already is taken as it is: no waiting, so no timeout.
        refused = bool(size) and not share.take(size or 0)
        buffered = _extension(scope, BUFFERED_BODY) if size is not None else None
        raw = buffered() if buffered is not None else None
        if raw is None:
            read = await self._read_in_time(receive, share, refused, size is None)
            if isinstance(read, Answer):
                return read
            raw, refused = read
        try:
            if refused:
                raise BodyRefused()
            return await route(self.services, raw, scope)
        except Exception as error:
            return failure_answer(error, scope["path"])

    async def _read_in_time(
        self, receive: Receive, share: BodyShare, refused: bool, counted: bool
    ) -> tuple[bytes, bool] | Answer:
        """`_read_body` within the body timeout; the error answer when it cannot be."""
        with trio.move_on_after(BODY_TIMEOUT_S):
            try:
                return await self._read_body(receive, share, refused, counted)
            except _BodyTooLarge:
                return TOO_LARGE
        return error_answer("Request Timeout", 408)

    async def _read_body(
        self, receive: Receive, share: BodyShare, refused: bool, counted: bool
    ) -> tuple[bytes, bool]:
        """The whole body, and whether the budget refused it (then nothing of it is kept). A
        body of unknown length is counted against the budget as it arrives."""
        chunks: list[bytes] = []
        held = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            data: bytes = message.get("body", b"")
            if data and not refused:
                if counted and not share.take(len(data)):
                    refused, chunks = True, []
                else:
                    chunks.append(data)
                    held += len(data)
                    if held > self.max_body_bytes:
                        raise _BodyTooLarge()
            if not message.get("more_body", False):
                break
        if len(chunks) == 1:
            return chunks[0], refused
        return b"".join(chunks), refused

    async def _pop_route(self, pop: _Pop, scope: Scope, receive: Receive, send: Send) -> None:
        """A pop whose client leaves keeps no lease for nobody, and a parked one does not hold
        its place: a pop that may park is cancelled as soon as its client leaves (the lane then
        gives undelivered messages back); one that answers at once asks the connection
        whether its client is still there before its messages go out, and gives them back if
        not, which spares it the watcher's task and nursery (~60 us of a worker's CPU per pop
        here). An autoAck pop has nothing to give back: its messages count as delivered once
        popped, whether or not the answer reaches anyone."""
        self.services.counters.requests += 1
        args = dict(
            reversed(
                parse_qsl(
                    scope["query_string"].decode(),
                    keep_blank_values=True,
                    errors=QUOTE_UNDECODABLE,  # how quart reads the query (request.args)
                )
            )
        )
        answer = await self._pop_answer(pop, args, scope, receive)
        if answer is not None:
            await _send(send, answer)

    async def _pop_answer(
        self, pop: _Pop, args: Mapping[str, str], scope: Scope, receive: Receive
    ) -> Answer | None:
        """The answer, or None once the client has left."""
        client_left = _extension(scope, CLIENT_LEFT)
        try:
            where = pop.where(args)
            params = validate.pop_params(args, self.services.config)
            if client_left is not None and not params.may_park:
                return await messaging.pop_answer(self.services, where, params, client_left)
        except messaging.ClientLeft:
            return None
        except Exception as error:
            return failure_answer(error, scope["path"])
        answer: Answer | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            try:
                answer = await messaging.pop_answer(self.services, where, params)
            except Exception as error:
                answer = failure_answer(error, scope["path"])
            nursery.cancel_scope.cancel()
        return answer

    async def _probe_route(self, probe: ProbeRoute, scope: Scope, send: Send) -> None:
        self.services.counters.requests += 1
        try:
            answer = await probe(self.services)
        except Exception as error:
            answer = failure_answer(error, scope["path"])
        await _send(send, answer)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _send(send: Send, answer: Answer) -> None:
    headers = [
        (b"content-type", answer.content_type.encode()),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    headers.extend((name.lower().encode(), value.encode()) for name, value in answer.headers)
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
