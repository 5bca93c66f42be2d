"""The streaming reverse proxy to the broker (§4.8 with D-P8, D-P12).

Bodies pass through unparsed in both directions, chunk by chunk, so a push of several MB costs the
proxy no more memory than a chunk and the broker's own limits are the only ones. The caller's
identity reaches the broker only as a freshly minted short-lived token (or an SSO user's own
token); headers a client could use to pose as the proxy (`X-Proxy-*`, `X-Auth-*`) are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
from quart import Request, Response
from werkzeug.datastructures import Headers

from queen.proxy.tokens import Identity

log = logging.getLogger("queen.proxy")

_HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)
_DROPPED_FROM_CLIENT = _HOP_BY_HOP | {"host", "cookie", "referer", "authorization"}
# hypercorn sets these on every answer itself: the broker's would be duplicates on the wire.
_DROPPED_FROM_BROKER = _HOP_BY_HOP | {"date", "server"}
_STRIPPED_PREFIXES = ("x-proxy-", "x-auth-", "x-forwarded-")


def open_client() -> httpx.AsyncClient:
    """One client for the proxy's lifetime; no read timeout, as long-poll pops wait for minutes."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=None, write=None, pool=30.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        follow_redirects=False,
    )
    for name in list(client.headers):
        del client.headers[name]  # forward the client's own Accept, User-Agent and encoding only
    return client


def upstream_headers(
    request_headers: Headers,
    *,
    identity: Identity,
    bearer: str,
    client_address: str,
    scheme: str,
    from_cookie: bool,
) -> list[tuple[str, str]]:
    """The headers the broker gets. A cookie session's `Origin` has passed the proxy's own CSRF
    check and names the proxy, not the broker, whose browser guard would take it for a foreign
    page; so it is dropped like `Cookie` and `Referer`. A bearer caller's stays for CORS."""
    dropped = _DROPPED_FROM_CLIENT | ({"origin"} if from_cookie else set())
    headers = [
        (name, value)
        for name, value in request_headers.items()
        if name.lower() not in dropped and not name.lower().startswith(_STRIPPED_PREFIXES)
    ]
    headers.append(("authorization", f"Bearer {bearer}"))
    headers.append(("x-proxy-user", identity.username or identity.sub or "unknown"))
    headers.append(("x-proxy-role", identity.role or "read-only"))
    if identity.external:
        headers.append(("x-proxy-external", "true"))
    prior = request_headers.get("x-forwarded-for")
    headers.append(("x-forwarded-for", f"{prior}, {client_address}" if prior else client_address))
    headers.append(("x-forwarded-proto", scheme))
    if "host" in request_headers:
        headers.append(("x-forwarded-host", request_headers["host"]))
    return headers


async def _request_body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.body:
        yield chunk


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(length and length != "0") or "transfer-encoding" in request.headers


async def forward(
    client: httpx.AsyncClient,
    base_url: str,
    request: Request,
    identity: Identity,
    bearer: str,
    *,
    from_cookie: bool,
) -> Response:
    """Send `request` on to the broker and stream its answer back."""
    raw_path = request.scope.get("raw_path") or request.path.encode()
    query = b"?" + request.query_string if request.query_string else b""
    target = base_url + (raw_path + query).decode("latin-1")
    outgoing = client.build_request(
        request.method,
        target,
        headers=upstream_headers(
            request.headers,
            identity=identity,
            bearer=bearer,
            client_address=(request.remote_addr or ""),
            scheme=request.scheme,
            from_cookie=from_cookie,
        ),
        content=_request_body(request) if _has_body(request) else None,
    )
    try:
        answer = await client.send(outgoing, stream=True)
    except httpx.HTTPError as error:
        log.warning("broker unreachable", extra={"error": str(error), "path": request.path})
        return Response(
            '{"error":"Bad gateway - Queen server unreachable"}',
            status=502,
            content_type="application/json",
        )

    headers = [
        (name, value)
        for name, value in answer.headers.multi_items()
        if name.lower() not in _DROPPED_FROM_BROKER
    ]
    if request.method == "HEAD" or answer.status_code in (204, 304):
        # No body will be sent, so none is read: the upstream connection goes back at once
        # instead of waiting on a body iterator the server never starts.
        await answer.aclose()
        return _response(b"", answer.status_code, headers)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        finally:
            await answer.aclose()

    return _response(relay(), answer.status_code, headers)


def _response(
    body: bytes | AsyncIterator[bytes], status: int, headers: list[tuple[str, str]]
) -> Response:
    """The broker's answer with exactly the broker's end-to-end headers."""
    response = Response(body, status=status)
    response.headers.clear()
    for name, value in headers:
        response.headers.add(name, value)
    return response
