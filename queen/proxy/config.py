"""Every setting of `queen proxy`, parsed once from the environment into one typed object.

The names and defaults are the original proxy's (spec §4.14), so an existing deployment's
environment keeps working; its weak spots are closed here, at start-up: the well-known default
secret and unparsable durations refuse to start (D-P1, D-P13), and booleans are strict (D-J1).
The proxy has its own object because several names (PORT, JWT_SECRET, JWT_JWKS_URL) mean
something else to the broker.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from queen.config import ConfigError
from queen.proxy.roles import ROLES

log = logging.getLogger("queen.proxy")

OLD_DEFAULT_SECRET = "change-me-in-production"
DEFAULT_CLAIM_MAPPING = "sub:sub,role:role,email:email,preferred_username:username"
_DURATION = re.compile(r"^(\d+)([smhdy]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def parse_duration(name: str, raw: str) -> int | None:
    """Seconds, or None for `never` (D-P13: a bare integer is seconds, not the original's
    milliseconds; anything unparsable refuses to start instead of minting eternal tokens)."""
    text = raw.strip().lower()
    if text == "never":
        return None
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"{name}={raw!r} is not a duration like 15m, 24h, 7d, 1y or never")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("true", "1", "yes", "on"):
        return True
    if raw in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not true or false")


def _list(raw: str, lower: bool = True) -> tuple[str, ...]:
    items = (item.strip() for item in raw.split(","))
    return tuple(item.lower() if lower else item for item in items if item)


def _first(env: Mapping[str, str], *names: str) -> str:
    """The first non-empty of several names (the original's aliases, newest name first)."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def _role(name: str, raw: str, default: str) -> str:
    role = raw.strip().lower() or default
    if role not in ROLES:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy's configuration; see docs/proxy.md for the table of variables."""

    port: int = 3000
    host: str = "0.0.0.0"
    queen_server_url: str = ""
    production: bool = False
    jwt_secret: str = ""
    session_lifetime_s: int | None = 24 * 3600
    cookie_domain: str = ""
    cookie_secure: bool = True
    external_jwks_url: str = ""
    external_issuers: tuple[str, ...] = ()
    external_audiences: tuple[str, ...] = ()
    external_default_role: str | None = "read-only"
    google_client_id: str = ""
    google_client_secret: str = ""
    google_redirect_uri: str = ""
    google_allowed_domains: tuple[str, ...] = ()
    google_auto_provision: bool = False
    google_default_role: str = "read-only"
    google_allowed_emails: tuple[str, ...] = ()
    google_allow_email_domain_without_hd: bool = False
    google_authorization_endpoint: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_endpoint: str = "https://oauth2.googleapis.com/token"
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    forward_auth_enabled: bool = False
    auth_host: str = ""
    allowed_redirect_hosts: tuple[str, ...] = ()
    forward_auth_always_mint: bool = False
    forward_auth_emit_headers: tuple[str, ...] = ("authorization",)
    internal_jwt_issuer: str = "queen-proxy"
    internal_jwt_audience: str = ""
    internal_jwt_lifetime_s: int | None = 15 * 60
    internal_jwt_claim_mapping: tuple[tuple[str, str], ...] = ()
    internal_jwt_private_key_pem: str = ""
    internal_jwt_key_id: str = ""
    internal_jwt_signing_key: str = ""
    internal_jwt_alg: str = "HS256"
    legacy_tokens_until: dt.datetime | None = None
    pg_host: str = "localhost"
    pg_port: int = 5432
    pg_db: str = "postgres"
    pg_user: str = "postgres"
    pg_password: str = "postgres"
    pg_use_ssl: bool = False
    pg_ssl_reject_unauthorized: bool = False

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, need_secret: bool = True
    ) -> ProxyConfig:
        """Parse every variable; raise ConfigError naming the first unusable one. Commands that
        only touch the database (create-user without a token) pass need_secret=False."""
        env = os.environ if environ is None else environ
        secret = env.get("JWT_SECRET", "")
        if need_secret and (not secret or secret == OLD_DEFAULT_SECRET):
            raise ConfigError(
                "JWT_SECRET must be set to a long random value (the old default is refused)"
            )
        production = env.get("NODE_ENV", "").strip() == "production"
        external_role = env.get("EXTERNAL_DEFAULT_ROLE", "").strip().lower()
        config = cls(
            port=_int(env, "PORT", 3000, 1, 65535),
            host=env.get("HOST", "").strip() or "0.0.0.0",
            queen_server_url=env.get("QUEEN_SERVER_URL", "").strip().rstrip("/"),
            production=production,
            jwt_secret=secret,
            session_lifetime_s=parse_duration(
                "JWT_EXPIRES_IN", env.get("JWT_EXPIRES_IN", "").strip() or "24h"
            ),
            cookie_domain=env.get("COOKIE_DOMAIN", "").strip().lstrip(".").lower(),
            cookie_secure=production or _bool(env, "COOKIE_SECURE", True),
            external_jwks_url=_first(env, "EXTERNAL_JWKS_URL", "JWT_JWKS_URL"),
            external_issuers=_list(_first(env, "EXTERNAL_ISSUER", "JWT_ISSUER"), lower=False),
            external_audiences=_list(_first(env, "EXTERNAL_AUDIENCE", "JWT_AUDIENCE"), lower=False),
            external_default_role=None
            if external_role == "none"
            else _role("EXTERNAL_DEFAULT_ROLE", external_role, "read-only"),
            google_client_id=env.get("GOOGLE_CLIENT_ID", "").strip(),
            google_client_secret=env.get("GOOGLE_CLIENT_SECRET", "").strip(),
            google_redirect_uri=env.get("GOOGLE_REDIRECT_URI", "").strip(),
            google_allowed_domains=_list(env.get("GOOGLE_ALLOWED_DOMAINS", "")),
            google_auto_provision=_bool(env, "GOOGLE_AUTO_PROVISION", False),
            google_default_role=_role(
                "GOOGLE_DEFAULT_ROLE", env.get("GOOGLE_DEFAULT_ROLE", ""), "read-only"
            ),
            google_allowed_emails=_list(
                _first(env, "GOOGLE_ALLOWED_EMAILS", "FORWARD_AUTH_ALLOWED_EMAILS"), lower=False
            ),
            google_allow_email_domain_without_hd=_bool(
                env, "GOOGLE_ALLOW_EMAIL_DOMAIN_WITHOUT_HD", False
            ),
            google_authorization_endpoint=_first(env, "GOOGLE_AUTHORIZATION_ENDPOINT")
            or cls.google_authorization_endpoint,
            google_token_endpoint=_first(env, "GOOGLE_TOKEN_ENDPOINT") or cls.google_token_endpoint,
            google_jwks_url=_first(env, "GOOGLE_JWKS_URL") or cls.google_jwks_url,
            forward_auth_enabled=_bool(env, "FORWARD_AUTH_ENABLED", False),
            auth_host=env.get("AUTH_HOST", "").strip(),
            allowed_redirect_hosts=_list(env.get("FORWARD_AUTH_ALLOWED_REDIRECT_HOSTS", "")),
            forward_auth_always_mint=_bool(env, "FORWARD_AUTH_ALWAYS_MINT", False),
            forward_auth_emit_headers=_list(env.get("FORWARD_AUTH_EMIT_HEADERS", ""))
            or ("authorization",),
            internal_jwt_issuer=env.get("INTERNAL_JWT_ISSUER", "").strip() or "queen-proxy",
            internal_jwt_audience=env.get("INTERNAL_JWT_AUDIENCE", "").strip(),
            internal_jwt_lifetime_s=parse_duration(
                "INTERNAL_JWT_EXPIRES_IN", env.get("INTERNAL_JWT_EXPIRES_IN", "").strip() or "15m"
            ),
            internal_jwt_claim_mapping=_claim_mapping(
                env.get("INTERNAL_JWT_CLAIM_MAPPING", "").strip() or DEFAULT_CLAIM_MAPPING
            ),
            internal_jwt_private_key_pem=env.get("INTERNAL_JWT_PRIVATE_KEY_PEM", "").strip(),
            internal_jwt_key_id=env.get("INTERNAL_JWT_KEY_ID", "").strip(),
            internal_jwt_signing_key=env.get("INTERNAL_JWT_SIGNING_KEY", "") or secret,
            internal_jwt_alg=_choice(env, "INTERNAL_JWT_ALG", ("HS256", "HS384", "HS512")),
            legacy_tokens_until=_date(env, "PROXY_LEGACY_TOKENS_UNTIL"),
            pg_host=env.get("PG_HOST", "").strip() or "localhost",
            pg_port=_int(env, "PG_PORT", 5432, 1, 65535),
            pg_db=env.get("PG_DB", "").strip() or "postgres",
            pg_user=env.get("PG_USER", "").strip() or "postgres",
            pg_password=env.get("PG_PASSWORD", "postgres"),
            pg_use_ssl=_bool(env, "PG_USE_SSL", False),
            pg_ssl_reject_unauthorized=_bool(env, "PG_SSL_REJECT_UNAUTHORIZED", False),
        )
        config.warn_weak_settings()
        return config

    def warn_weak_settings(self) -> None:
        if self.jwt_secret and len(self.jwt_secret.encode()) < 32:
            log.warning("JWT_SECRET is shorter than 32 bytes; use a long random value")
        if self.external_jwks_url and not self.external_audiences:
            log.warning(
                "EXTERNAL_AUDIENCE is unset: tokens the IdP issued for any application pass"
            )

    @property
    def google_enabled(self) -> bool:
        return bool(
            self.google_client_id and self.google_client_secret and self.google_redirect_uri
        )

    @property
    def reverse_proxy(self) -> bool:
        return bool(self.queen_server_url)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} must be between {low} and {high}")
    return value


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().upper() or choices[0]
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return raw


def _date(env: Mapping[str, str], name: str) -> dt.datetime | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an ISO date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _claim_mapping(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(raw, lower=False):
        target, _, source = item.partition(":")
        if not target or not source:
            raise ConfigError(f"INTERNAL_JWT_CLAIM_MAPPING entry {item!r} is not <claim>:<source>")
        pairs.append((target.strip(), source.strip()))
    return tuple(pairs)
