"""The ASGI layer around everything a worker serves (queen/worker.py wraps the whole callable, so
the lean hot-route path and the quart app pass through it alike): a request id for each request,
echoed in `X-Request-Id` and attached to every log line written while it is served; its latency
in `queen_http_request_duration_seconds`; and the access log (QUEEN_ACCESS_LOG).

The request id is the client's own `X-Request-Id` when it is a plausible id (at most 64 of
`A-Za-z0-9._-`), so a caller can follow its request through queen's logs; otherwise a new one.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from queen.logs import current_request_id
from queen.metrics.families import Families
from queen.metrics.pending import Pending, PendingObservations

# ASGI's own names; Any, since each server and framework types these its own way.
Scope = Any
Message = MutableMapping[str, Any]
Receive = Any
Send = Any
App = Callable[[Any, Any, Any], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
SCOPE_KEY = "queen.request_id"
_PLAUSIBLE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
# Route label of the latency histogram: the API family a path belongs to (a bounded set, so a
# client requesting random paths cannot grow the label space).
_FAMILIES = frozenset(
    (
        "push", "pop", "ack", "transaction", "lease", "configure", "queues", "resources",
        "status", "analytics", "messages", "dlq", "consumer-groups", "traces", "system", "stats",
    )
)  # fmt: skip

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))

access_log = logging.getLogger("queen.access")


def route_of(path: str) -> str:
    if path.startswith("/api/v1/"):
        family = path[8:].split("/", 1)[0]
        return family if family in _FAMILIES else "api-other"
    if path == "/health":
        return "health"
    if path.startswith("/metrics"):
        return "metrics"
    return "other"


class Observed:
    def __init__(
        self,
        app: App,
        families: Families,
        pending: Pending,
        access_level: str,
        in_flight: Callable[[int], None],
    ) -> None:
        """`access_level`: debug, info or off. `in_flight(+1/-1)` counts requests being served."""
        self.app = app
        self.families = families
        self.pending = pending
        self.access_level = {"debug": logging.DEBUG, "info": logging.INFO}.get(access_level)
        self.in_flight = in_flight
        self._latency: dict[tuple[str, str, int], PendingObservations] = {}
        # Ids unique per process without a random draw per request: a random prefix drawn at
        # start and a counter (32 hex digits, like a uuid4's).
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or f"{self._id_prefix}{next(self._id_counter):016x}"
        scope[SCOPE_KEY] = request_id
        encoded_id = request_id.encode()
        started = time.perf_counter()
        answered = {"status": 500, "bytes": 0}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (REQUEST_ID_HEADER, encoded_id)],
                }
            elif message["type"] == "http.response.body":
                answered["bytes"] += len(message.get("body", b""))
            await send(message)

        token = current_request_id.set(request_id)
        self.in_flight(1)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.in_flight(-1)
            current_request_id.reset(token)
            self._finished(scope, request_id, answered, time.perf_counter() - started)

    def _finished(
        self, scope: Scope, request_id: str, answered: dict[str, int], seconds: float
    ) -> None:
        path, status = scope["path"], answered["status"]
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        key = (route_of(path), method, status)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.pending.observations(
                self.families.request_seconds, key[0], method, str(status)
            )
        child.observe(seconds)
        if self.access_level is not None and access_log.isEnabledFor(self.access_level):
            access_log.log(
                self.access_level,
                "request",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "bytes": answered["bytes"],
                    "request_id": request_id,
                },
            )


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _PLAUSIBLE_ID.match(value):
            return str(value.decode())
    return None
