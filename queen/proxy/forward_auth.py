"""The Traefik-style ForwardAuth answer (§4.9): 200 with identity headers for an authenticated
caller, a login bounce or 401 otherwise. It shares the gate's validator (D-P2), so an OAuth state
or an upstream token never counts as a session here either.
"""

from __future__ import annotations

from urllib.parse import quote

from quart import Request, Response

from queen.proxy.config import ProxyConfig
from queen.proxy.gate import COOKIE_NAME, Authenticator
from queen.proxy.levels import ROLE_LEVELS
from queen.proxy.redirects import sanitise
from queen.proxy.tokens import Identity, TokenService
from queen.security.tokens import Level

_READ_ONLY_METHODS = ("GET", "HEAD", "OPTIONS")


def _looks_like_browser(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return (
        "x-requested-with" not in request.headers
        and (not accept or "text/html" in accept or "*/*" in accept)
        and "application/json" not in accept
    )


def _method_allowed(identity: Identity, method: str) -> bool:
    held = max((ROLE_LEVELS.get(role, Level.PUBLIC) for role in identity.roles), default=None)
    held = max(held or Level.PUBLIC, ROLE_LEVELS.get(identity.role or "", Level.PUBLIC))
    if held >= Level.READ_WRITE:
        return True
    return held == Level.READ_ONLY and method in _READ_ONLY_METHODS


def _unauthenticated(config: ProxyConfig, request: Request) -> Response:
    if not config.auth_host:
        return Response("", status=401)
    login = f"https://{config.auth_host}/login"
    proto = request.headers.get("x-forwarded-proto", "https" if request.is_secure else "http")
    host = request.headers.get("x-forwarded-host", request.headers.get("host", ""))
    original = f"{proto}://{host}{request.headers.get('x-forwarded-uri', '/')}"
    if sanitise(original, config.allowed_redirect_hosts, config.cookie_domain):
        login += "?redirect_uri=" + quote(original, safe="")
    if _looks_like_browser(request):
        return Response("", status=302, headers={"Location": login})
    return Response("", status=401, headers={"X-Forward-Auth-Location": login})


async def forward_auth_answer(
    config: ProxyConfig, auth: Authenticator, tokens: TokenService, request: Request
) -> Response:
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header.startswith("Bearer ") else ""
    cookie = request.cookies.get(COOKIE_NAME, "")
    identity = await auth.identify(bearer) if bearer else None
    if identity is None and not bearer and cookie:
        identity = await auth.session(cookie)
    if identity is None:
        return _unauthenticated(config, request)
    method = request.headers.get("x-forwarded-method", request.method).upper()
    gated = request.headers.get("x-forward-auth-rbac", "").strip().lower() == "method"
    if gated and not _method_allowed(identity, method):
        return Response("", status=403)
    if bearer and identity.external and not config.forward_auth_always_mint:
        upstream = bearer
    else:
        upstream = tokens.mint_upstream(identity)
    groups = identity.groups or identity.roles
    values = {
        "authorization": f"Bearer {upstream}",
        "x-auth-user": identity.username,
        "x-auth-email": identity.email or "",
        "x-auth-sub": identity.sub,
        "x-auth-role": identity.role or "",
        "x-auth-groups": ",".join(groups),
    }
    wanted = config.forward_auth_emit_headers
    narrowed = request.headers.get("x-forward-auth-headers", "")
    if narrowed:
        subset = {name.strip().lower() for name in narrowed.split(",")}
        wanted = tuple(name for name in wanted if name in subset)
    response = Response("", status=200)
    for name in wanted:
        if values.get(name):
            response.headers[name] = values[name]
    return response
