"""The proxy's HTTP face (quart-trio): its own routes of §4.2 and, for every other path, the gate,
the CSRF rule, route-aware RBAC and the streaming forward to the broker.

Handlers stay thin: tokens, users, sessions, Google and forwarding each live in their own module;
this one maps their outcomes to the original's status codes and JSON bodies (D-P17).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

import httpx
import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from queen.proxy import levels
from queen.proxy.config import ProxyConfig
from queen.proxy.forward import forward
from queen.proxy.forward_auth import forward_auth_answer
from queen.proxy.gate import COOKIE_NAME, Authenticator, looks_like_api, presented_token
from queen.proxy.google import BINDING_COOKIE, GoogleSignIn, SignInRefused
from queen.proxy.passwords import verify
from queen.proxy.redirects import sanitise
from queen.proxy.store import ProxyStore, User
from queen.proxy.throttle import LoginThrottle
from queen.proxy.tokens import TokenService

log = logging.getLogger("queen.proxy")

READY_TIMEOUT_S = 2.0
_GOOGLE_CALLBACKS = (
    "/api/auth/google/callback",
    "/api/oauth/callback/google",
    "/api/auth/callback/google",
)


@dataclass(frozen=True)
class ProxyServices:
    """Everything the routes use, built once at start-up (queen/proxy/server.py)."""

    config: ProxyConfig
    store: ProxyStore
    tokens: TokenService
    auth: Authenticator
    throttle: LoginThrottle
    client: httpx.AsyncClient
    google: GoogleSignIn


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _login_page() -> str:
    return resources.files("queen.proxy").joinpath("static", "login.html").read_text()


def create_proxy_app(services: ProxyServices) -> QuartTrio:
    config = services.config
    app = QuartTrio("queen.proxy", static_folder=None)
    # Bodies stream to the broker unread: its limits apply, not Quart's (D-P12).
    app.config.update(
        MAX_CONTENT_LENGTH=None,
        BODY_TIMEOUT=None,
        RESPONSE_TIMEOUT=None,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )

    def set_session_cookie(response: Response, token: str, lifetime_s: int | None) -> None:
        response.set_cookie(
            COOKIE_NAME,
            token,
            max_age=lifetime_s,
            path="/",
            domain=config.cookie_domain or None,
            secure=config.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    def clear_cookie(response: Response, name: str) -> None:
        response.delete_cookie(
            name,
            path="/",
            domain=config.cookie_domain or None,
            secure=config.cookie_secure,
            httponly=True,
            samesite="Lax",
        )

    async def start_session(user: User) -> tuple[str, int | None]:
        issued = services.tokens.issue_session(
            user.id, user.username, user.role, user.email, lifetime_s=config.session_lifetime_s
        )
        await services.store.record_session(user.id, issued.jti, issued.expires_at)
        return issued.token, config.session_lifetime_s

    def unauthenticated(message: str) -> Response:
        if looks_like_api(request.path, request.headers):
            return _json({"error": message}, 401)
        return Response("", status=302, headers={"Location": "/login"})

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        """JSON bodies only, never a traceback (D-P12)."""
        if isinstance(error, HTTPException):
            return _json({"error": error.name}, error.code or 500)
        log.exception("proxy request failed", extra={"path": request.path})
        return _json({"error": "Internal server error"}, 500)

    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/health/ready")
    async def ready() -> Response:
        with trio.move_on_after(READY_TIMEOUT_S):
            try:
                await services.store.ping()
                return _json({"status": "ok"})
            except Exception as error:
                log.warning("proxy database unavailable", extra={"error": str(error)})
        return _json({"status": "unavailable"}, 503)

    @app.get("/login")
    @app.get("/login.html")
    async def login_page() -> Response:
        # Framing the page that takes passwords is refused (clickjacking).
        headers = {
            "Content-Security-Policy": "frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
        return Response(_login_page(), content_type="text/html; charset=utf-8", headers=headers)

    @app.post("/api/login")
    async def login() -> Response:
        body = await request.get_json(force=True, silent=True) or {}
        body = body if isinstance(body, dict) else {}
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return _json({"error": "Username and password required"}, 400)
        if not username or not password:
            return _json({"error": "Username and password required"}, 400)
        user_key = "user:" + username.lower()
        address_key = "addr:" + (request.remote_addr or "")
        wait = services.throttle.retry_after(user_key, address_key)
        if wait is not None:
            log.warning(
                "login throttled", extra={"username": username, "address": request.remote_addr}
            )
            response = _json({"error": "Too many login attempts"}, 429)
            response.headers["Retry-After"] = str(wait)
            return response
        user = await services.store.user_by_username(username)
        if not await verify(password, user.password_hash if user else None) or user is None:
            services.throttle.failed(user_key, address_key)
            log.warning(
                "login failed", extra={"username": username, "address": request.remote_addr}
            )
            return _json({"error": "Invalid credentials"}, 401)
        services.throttle.succeeded(user_key)
        log.info("login", extra={"username": username, "address": request.remote_addr})
        token, lifetime = await start_session(user)
        raw_redirect = body.get("redirect_uri") or request.args.get("redirect_uri")
        redirect = sanitise(
            raw_redirect if isinstance(raw_redirect, str) else None,
            config.allowed_redirect_hosts,
            config.cookie_domain,
        )
        response = _json(
            {
                "success": True,
                "user": {"username": user.username, "role": user.role},
                "redirect_uri": redirect,
            }
        )
        set_session_cookie(response, token, lifetime)
        return response

    @app.post("/api/logout")
    async def logout() -> Response:
        presented = presented_token(request.headers, request.cookies)
        if presented is not None:
            identity = services.tokens.verify_session(presented.token)
            if identity is not None and identity.jti is not None:
                await services.store.revoke_session(identity.jti)
        response = _json({"success": True})
        clear_cookie(response, COOKIE_NAME)
        return response

    @app.get("/api/me")
    async def me() -> Response:
        presented = presented_token(request.headers, request.cookies)
        identity = await services.auth.session(presented.token) if presented else None
        if identity is None:
            return _json({"error": "Authentication required"}, 401)
        return _json({"username": identity.username, "role": identity.role})

    @app.get("/.well-known/jwks.json")
    @app.get("/api/auth/jwks")
    async def jwks() -> Response:
        response = _json(services.tokens.jwks())
        response.headers["Content-Type"] = "application/jwk-set+json"
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    @app.get("/api/auth/config")
    async def auth_config() -> Response:
        return _json(
            {
                "google": {
                    "enabled": config.google_enabled,
                    "hasEmailAllowlist": bool(config.google_allowed_emails),
                },
                "forwardAuth": {
                    "enabled": config.forward_auth_enabled,
                    "allowedRedirectHosts": list(config.allowed_redirect_hosts),
                    "cookieDomain": config.cookie_domain or None,
                },
            }
        )

    @app.get("/api/auth/google")
    async def google_start() -> Response:
        if not config.google_enabled:
            return _json({"error": "Google auth is not configured"}, 503)
        started = services.google.start(request.args.get("next"))
        response = Response("", status=302, headers={"Location": started.location})
        response.set_cookie(
            BINDING_COOKIE,
            started.binding,
            max_age=300,
            path="/",
            secure=config.cookie_secure,
            httponly=True,
            samesite="Lax",
        )
        return response

    async def google_callback() -> Response:
        if not config.google_enabled:
            return Response("Google auth is not configured", status=503)
        if request.args.get("error"):
            return _to_login(request.args["error"])
        try:
            signed_in = await services.google.finish(
                request.args.get("code"),
                request.args.get("state"),
                request.cookies.get(BINDING_COOKIE),
            )
        except SignInRefused as refused:
            log.warning("Google sign-in refused", extra={"reason": refused.code})
            return _to_login(refused.code)
        except Exception:
            log.exception("Google sign-in failed")
            return _to_login("google_failed")
        token, lifetime = await start_session(signed_in.user)
        response = Response("", status=302, headers={"Location": signed_in.next_url})
        set_session_cookie(response, token, lifetime)
        clear_cookie(response, BINDING_COOKIE)
        return response

    for path in _GOOGLE_CALLBACKS:
        app.add_url_rule(path, f"google_callback_{path}", google_callback, methods=["GET"])

    if config.forward_auth_enabled:

        @app.get("/api/auth/forward-auth")
        async def forward_auth() -> Response:
            return await forward_auth_answer(config, services.auth, services.tokens, request)

    @app.websocket("/", defaults={"path": ""})
    @app.websocket("/<path:path>")
    async def no_websockets(path: str) -> Response:
        """The broker has no WebSocket routes, and the original let upgrades skip the gate."""
        return _json({"error": "WebSocket upgrades are not proxied"}, 400)

    @app.route("/", defaults={"path": ""}, methods=_ALL_METHODS)
    @app.route("/<path:path>", methods=_ALL_METHODS)
    async def gated(path: str) -> Response:
        presented = presented_token(request.headers, request.cookies)
        if presented is None:
            return unauthenticated("Authentication required")
        identity = await services.auth.identify(presented.token)
        if identity is None:
            return unauthenticated("Invalid or expired token")
        if presented.from_cookie and services.auth.cross_site(request.path, request.headers):
            return _json({"error": "Cross-site request refused"}, 403)
        if identity.role is None:
            return _json({"error": "Authentication required"}, 401)
        if not config.reverse_proxy:
            return _forward_auth_only(request.path)
        refusal = levels.refusal(identity.role, request.method, request.path)
        if refusal is not None:
            return _json({"error": "Insufficient permissions", "detail": refusal}, 403)
        if identity.external and not config.forward_auth_always_mint:
            bearer = presented.token
        else:
            bearer = services.tokens.mint_upstream(identity)
        return await forward(
            services.client,
            config.queen_server_url,
            request,
            identity,
            bearer,
            from_cookie=presented.from_cookie,
        )

    def _forward_auth_only(path: str) -> Response:
        if path == "/":
            if "text/html" in request.headers.get("accept", ""):
                return Response("", status=302, headers={"Location": "/login"})
            return _json(
                {
                    "service": "queen-proxy",
                    "mode": "forward-auth-only",
                    "forwardAuth": "/api/auth/forward-auth"
                    if config.forward_auth_enabled
                    else None,
                    "jwks": "/.well-known/jwks.json",
                    "login": "/login",
                }
            )
        return _json({"error": "not_found", "mode": "forward-auth-only"}, 404)

    return app


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _to_login(code: str) -> Response:
    return Response("", status=302, headers={"Location": "/login?error=" + quote(code, safe="")})
