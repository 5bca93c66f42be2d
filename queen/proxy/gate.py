"""Who is calling, and may a cookie-carried call change state: the authentication gate (§4.6),
the single token validator shared by the gate, ForwardAuth and /api/me (D-P2), and the CSRF rule
for cookie-authenticated calls (D-P10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from werkzeug.datastructures import Headers

from queen.proxy.config import ProxyConfig
from queen.proxy.external import JwksVerifier
from queen.proxy.levels import ROLE_LEVELS
from queen.proxy.redirects import host_allowed
from queen.proxy.store import ProxyStore
from queen.proxy.tokens import Identity, TokenService

COOKIE_NAME = "token"
_CSRF_PREFIXES = ("/api/", "/streams/", "/internal/")


@dataclass(frozen=True)
class Presented:
    """The token a request carries and where it came from (the cookie wins, as in the original)."""

    token: str
    from_cookie: bool


def presented_token(headers: Headers, cookies: Mapping[str, str]) -> Presented | None:
    cookie = cookies.get(COOKIE_NAME)
    if cookie:
        return Presented(cookie, True)
    header = headers.get("authorization", "").strip()
    if header[:7].lower() == "bearer ":
        header = header[7:].strip()
    return Presented(header, False) if header else None


def looks_like_api(path: str, headers: Headers) -> bool:
    """API callers get JSON 401s; browsers are sent to /login."""
    return (
        path.startswith("/api/")
        or headers.get("x-requested-with", "").lower() == "xmlhttprequest"
        or "application/json" in headers.get("accept", "").lower()
    )


class Authenticator:
    def __init__(
        self,
        config: ProxyConfig,
        tokens: TokenService,
        store: ProxyStore,
        external: JwksVerifier | None,
    ) -> None:
        self._config = config
        self._tokens = tokens
        self._store = store
        self._external = external

    async def session(self, token: str) -> Identity | None:
        """A proxy session still on record (legacy tokens without jti are not recorded)."""
        identity = self._tokens.verify_session(token)
        if identity is None:
            return None
        if identity.jti is not None and not await self._store.session_active(identity.jti):
            return None
        return identity

    async def identify(self, token: str) -> Identity | None:
        """External SSO tokens first (when configured), then proxy sessions (§4.6 steps 3-4)."""
        if self._external is not None:
            claims = await self._external.verify(token)
            if claims is not None:
                return self._external_identity(claims, token)
        return await self.session(token)

    def _external_identity(self, claims: dict[str, Any], token: str) -> Identity:
        sub = str(claims.get("sub") or claims.get("id") or "")
        username = next(
            (
                claims[name]
                for name in ("preferred_username", "username", "name")
                if isinstance(claims.get(name), str) and claims[name]
            ),
            sub,
        )
        listed = claims.get("roles")
        roles = tuple(r for r in listed if isinstance(r, str)) if isinstance(listed, list) else ()
        single = claims.get("role")
        held = ([single] if isinstance(single, str) and single else []) + list(roles)
        # The broker reads `role` and `roles` as a union; the highest recognised one decides here.
        recognised = [r for r in held if r in ROLE_LEVELS]
        role = max(recognised, key=ROLE_LEVELS.__getitem__) if recognised else None
        role = role or (held[0] if held else self._config.external_default_role)
        groups = claims.get("groups")
        return Identity(
            sub=sub,
            username=username,
            role=role,
            roles=roles or ((role,) if role else ()),
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
            groups=tuple(g for g in groups if isinstance(g, str))
            if isinstance(groups, list)
            else (),
            external_token=token,
        )

    def cross_site(self, path: str, headers: Headers) -> bool:
        """True when a cookie-authenticated call to a broker API path did not come from a page of
        this proxy (D-P10). Bearer callers are never asked."""
        if not path.startswith(_CSRF_PREFIXES):
            return False
        fetch_site = headers.get("sec-fetch-site", "").strip().lower()
        if fetch_site:
            allowed = {"same-origin", "none"} | (
                {"same-site"} if self._config.cookie_domain else set()
            )
            return fetch_site not in allowed
        source = headers.get("origin") or headers.get("referer") or ""
        if not source or source == "null":
            return True
        try:
            source_host = urlsplit(source).netloc.lower()
        except ValueError:
            return True
        own_host = headers.get("host", "").lower()
        if source_host and source_host == own_host:
            return False
        hostname = source_host.rsplit(":", 1)[0]
        return not host_allowed(
            hostname, self._config.allowed_redirect_hosts, self._config.cookie_domain
        )
