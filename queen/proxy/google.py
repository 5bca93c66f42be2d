"""Google sign-in, the OAuth authorization-code flow of §4.11 with D-P3 and D-P15.

The state is a short-lived token signed with a key of its own and bound, by hash, to a random
cookie set on the browser that started the flow, so a code and state captured elsewhere cannot be
completed in a victim's browser (login CSRF). The email and domain allowlists are applied before
any user is linked or provisioned, and only a verified email signs in.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from queen.proxy.config import ProxyConfig
from queen.proxy.external import JwksVerifier
from queen.proxy.redirects import sanitise
from queen.proxy.store import ProxyStore, User
from queen.proxy.tokens import TokenService

log = logging.getLogger("queen.proxy")

BINDING_COOKIE = "g_bind"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")


class SignInRefused(Exception):
    """The flow ends at /login?error=<code> (a code the login page knows)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Started:
    location: str
    binding: str


@dataclass(frozen=True)
class SignedIn:
    user: User
    next_url: str


class GoogleSignIn:
    def __init__(
        self,
        config: ProxyConfig,
        tokens: TokenService,
        store: ProxyStore,
        client: httpx.AsyncClient,
    ) -> None:
        self._config = config
        self._tokens = tokens
        self._store = store
        self._client = client
        self._verifier = JwksVerifier(
            config.google_jwks_url, GOOGLE_ISSUERS, (config.google_client_id,), client
        )

    def start(self, next_raw: str | None) -> Started:
        config = self._config
        next_url = sanitise(next_raw, config.allowed_redirect_hosts, config.cookie_domain) or "/"
        nonce = secrets.token_hex(32)
        binding = secrets.token_urlsafe(32)
        query = {
            "client_id": config.google_client_id,
            "redirect_uri": config.google_redirect_uri,
            "response_type": "code",
            "scope": "openid email profile",
            "access_type": "online",
            "include_granted_scopes": "true",
            "prompt": "select_account",
            "state": self._tokens.issue_state(nonce, next_url, binding),
            "nonce": nonce,
        }
        if len(config.google_allowed_domains) == 1:
            query["hd"] = config.google_allowed_domains[0]
        return Started(f"{config.google_authorization_endpoint}?{urlencode(query)}", binding)

    async def finish(self, code: str | None, state: str | None, binding: str | None) -> SignedIn:
        if not code or not state or not binding:
            raise SignInRefused("invalid_state")
        expected = self._tokens.verify_state(state, binding)
        if expected is None:
            raise SignInRefused("invalid_state")
        claims = await self._identity_claims(code, str(expected.get("nonce", "")))
        email = str(claims["email"]).lower()
        self._check_allowed(email, claims.get("hd"))
        user = await self._resolve_user(str(claims["sub"]), email)
        return SignedIn(user, str(expected.get("next") or "/"))

    async def _identity_claims(self, code: str, nonce: str) -> dict[str, object]:
        config = self._config
        try:
            answer = await self._client.post(
                config.google_token_endpoint,
                data={
                    "code": code,
                    "client_id": config.google_client_id,
                    "client_secret": config.google_client_secret,
                    "redirect_uri": config.google_redirect_uri,
                    "grant_type": "authorization_code",
                },
                timeout=10.0,
            )
            id_token = answer.json().get("id_token") if answer.is_success else None
        except (httpx.HTTPError, ValueError) as error:
            log.warning("Google code exchange failed", extra={"error": str(error)})
            raise SignInRefused("google_failed") from None
        if not isinstance(id_token, str):
            raise SignInRefused("google_failed")
        claims = await self._verifier.verify(id_token)
        if claims is None or not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInRefused("google_failed")
        if not claims.get("sub") or not isinstance(claims.get("email"), str):
            raise SignInRefused("google_failed")
        if claims.get("email_verified") is not True:
            raise SignInRefused("google_failed")
        return claims

    def _check_allowed(self, email: str, hd: object) -> None:
        config = self._config
        if config.google_allowed_domains:
            domains = config.google_allowed_domains
            hosted = isinstance(hd, str) and hd.lower() in domains
            by_email = (
                config.google_allow_email_domain_without_hd and email.rsplit("@", 1)[-1] in domains
            )
            if not (hosted or by_email):
                raise SignInRefused("not_allowed")
        if config.google_allowed_emails and not any(
            _email_matches(entry, email) for entry in config.google_allowed_emails
        ):
            raise SignInRefused("not_allowed")

    async def _resolve_user(self, google_sub: str, email: str) -> User:
        user = await self._store.user_by_google_sub(google_sub)
        if user is not None:
            return user
        user = await self._store.user_by_email(email)
        if user is not None:
            await self._store.link_google(user.id, google_sub, email)
            return user
        if self._config.google_auto_provision:
            return await self._store.provision_google_user(
                email, google_sub, self._config.google_default_role
            )
        raise SignInRefused("not_provisioned")


def _email_matches(entry: str, email: str) -> bool:
    if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
        try:
            return re.search(entry[1:-1], email, re.IGNORECASE) is not None
        except re.error:
            return False
    return entry.lower() == email
