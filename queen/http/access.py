"""The access gate: one ASGI middleware around everything a worker serves (the lean hot-route
path and the quart application alike), so no request reaches a handler without passing here.

In order, for every HTTP request:
1. CORS (spec §5.1, D-O1): a preflight (OPTIONS, any path) is answered here, 204; every answer
   gets the CORS headers for the request's Origin: `*` by default (the original's), or the
   Origin itself when QUEEN_CORS_ORIGINS lists it.
2. Access (spec §1.8, D-J9…D-J14): the route's level comes from queen/http/route_levels.py. With
   JWT on, a non-public route needs a verified bearer token whose role reaches that level
   (queen/security/tokens.py); the identity then travels in `scope["queen.identity"]`. With JWT
   off, an ADMIN route refuses a browser call from a foreign origin (D-O1).
3. Bodies (issue 14): a state-changing method may only carry an `application/json` body, so a
   cross-site "simple request" (text/plain, a form, an untyped blob) cannot change anything.

A refusal is answered here as `{"error": ...}` after the request body is read and dropped
(hypercorn leaves an answer unsent while a body is still arriving), and nothing else happens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from queen.config import Config, comma_list
from queen.http.route_levels import METRICS_PATHS, level_of, normalise
from queen.security.tokens import Identity, Level, Rejected, Verifier

log = logging.getLogger("queen.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IDENTITY_KEY = "queen.identity"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_MEDIA_TYPE = b"application/json"
ALLOW_METHODS = (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS")
ALLOW_HEADERS = (b"access-control-allow-headers", b"Content-Type, Authorization")
PREFLIGHT_MAX_AGE = (b"access-control-max-age", b"86400")
ANY_ORIGIN = [(b"access-control-allow-origin", b"*"), ALLOW_METHODS, ALLOW_HEADERS]


def identity_of(scope: Mapping[str, Any]) -> Identity | None:
    """The verified identity of a request (None with JWT off or on a public route)."""
    return scope.get(IDENTITY_KEY)


class AccessGate:
    def __init__(self, app: Any, config: Config, verifier: Verifier | None) -> None:
        """`app` is any ASGI callable (typed loosely: hypercorn and quart each name the ASGI
        types their own way)."""
        self.app = app
        self.verifier = verifier
        origins = comma_list(config.cors_origins)
        self.any_origin = "*" in origins
        self.listed_origins = {origin.rstrip("/").lower().encode() for origin in origins}
        skip = comma_list(config.jwt_skip_paths)
        self.skip_exact = frozenset(skip)
        self.skip_prefixes = tuple(entry for entry in skip if len(entry) > 1 and entry[-1] == "/")
        self.metrics_require_auth = config.metrics_require_auth
        self.max_drain = config.max_body_bytes
        if verifier is not None:
            self._warn_about_skips(skip)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        authorization = origin = content_type = host = None
        has_body = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = authorization or value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                content_type = value
            elif name == b"host":
                host = value
            elif name == b"content-length":
                has_body = value.strip() != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        cors = self._cors(origin)
        if method == "OPTIONS":
            await _answer(send, 204, b"", [*cors, PREFLIGHT_MAX_AGE] if cors else [])
            return
        try:
            self._admit(scope, method, authorization, origin, host)
            if method in STATE_CHANGING and not _json_body(content_type, has_body):
                raise Rejected(415, "Content-Type must be application/json")
        except Rejected as refusal:
            if has_body:
                await self._drain(receive)
            await _answer(
                send,
                refusal.status,
                orjson.dumps({"error": refusal.message}),
                [*cors, *_refusal_headers(refusal)],
            )
            return
        if not cors:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _admit(
        self,
        scope: Scope,
        method: str,
        authorization: bytes | None,
        origin: bytes | None,
        host: bytes | None,
    ) -> None:
        level = level_of(method, scope["path"])
        if self._metrics_guarded(scope["path"]):
            level = Level.READ_ONLY
        if self.verifier is None:
            if level is Level.ADMIN and origin is not None and not self._same_origin(origin, host):
                raise Rejected(403, "Cross-origin admin request refused")
            return
        if level is Level.PUBLIC or self._skipped(scope["path"]):
            return
        identity = self.verifier.identity(
            authorization.decode("latin-1") if authorization is not None else None
        )
        if identity.level < level:
            raise Rejected(403, "Insufficient permissions")
        scope[IDENTITY_KEY] = identity

    def _skipped(self, path: str) -> bool:
        """Spec §1.11: an exact entry, or an entry ending in `/` that prefixes the path.
        Metrics behind QUEEN_METRICS_REQUIRE_AUTH are never skipped."""
        if self._metrics_guarded(path):
            return False
        return path in self.skip_exact or path.startswith(self.skip_prefixes)

    def _metrics_guarded(self, path: str) -> bool:
        return self.metrics_require_auth and normalise(path) in METRICS_PATHS

    def _cors(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        if self.any_origin:
            return ANY_ORIGIN
        if origin is None or origin.rstrip(b"/").lower() not in self.listed_origins:
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"vary", b"Origin"),
            ALLOW_METHODS,
            ALLOW_HEADERS,
        ]

    def _same_origin(self, origin: bytes, host: bytes | None) -> bool:
        """D-O1: the page calling is served by this host and port, or is a listed origin (a
        literal `*` does not count)."""
        if origin.rstrip(b"/").lower() in self.listed_origins:
            return True
        try:
            origin_host = urlsplit(origin.decode("latin-1")).netloc.lower()
        except ValueError:
            return False
        return host is not None and origin_host == host.decode("latin-1").lower()

    async def _drain(self, receive: Receive) -> None:
        """Read the refused request's body and drop it, up to the body limit."""
        read = 0
        while read <= self.max_drain:
            message = await receive()
            if message["type"] != "http.request":
                return
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _warn_about_skips(self, entries: list[str]) -> None:
        """D-J14: an entry exempting a route that is not public is worth an operator's look."""
        for entry in entries:
            if (entry.endswith("/") and len(entry) > 1) or level_of("GET", entry) > Level.PUBLIC:
                log.warning(
                    "JWT_SKIP_PATHS exempts protected routes from authentication",
                    extra={"entry": entry},
                )


def _json_body(content_type: bytes | None, has_body: bool) -> bool:
    if content_type is None:
        return not has_body
    return content_type.split(b";", 1)[0].strip().lower() == JSON_MEDIA_TYPE


def _refusal_headers(refusal: Rejected) -> list[tuple[bytes, bytes]]:
    if refusal.status != 401:
        return []
    challenge = b'Bearer realm="queen"'
    if refusal.token_presented:
        challenge += b', error="invalid_token"'
    return [(b"www-authenticate", challenge)]


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    response_headers = [(b"content-length", str(len(body)).encode()), *headers]
    if body:
        response_headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
