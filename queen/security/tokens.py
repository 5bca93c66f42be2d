"""Bearer-token verification for the access gate (spec §1.3-§1.9, decisions D-J3…D-J10).

`Verifier.identity` turns an Authorization header into an `Identity` or raises `Rejected` with
the status and the fixed error text of D-J9 (library texts are logged, never returned, and none
holds a word that makes the official clients retry for ever). A token is checked
cryptographically once: the verified identity is cached until the token expires, in a bounded
table that forgets everything whenever the JWKS changes, so a key removed by the issuer stops
verifying at its next refresh.

Nothing here does I/O: the JWKS comes in as a snapshot function, and an unknown `kid` only asks
the JWKS actor (queen/actors/jwks.py) to refetch in the background.

PyJWT and cryptography (some 12 MB per worker) are not imported at the top: the gate's types
are needed by every worker, a Verifier only by one with JWT on (issue 20). Building a Verifier
loads them, at start-up rather than at the first token; the methods that call PyJWT then only
bind the loaded module, once per token (identities are cached), nothing next to a signature.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from queen.config import Config, comma_list
from queen.security.keys import (
    ASYMMETRIC_ALGORITHMS,
    EC_ALGORITHMS,
    EDDSA_ALGORITHMS,
    HMAC_ALGORITHMS,
    RSA_ALGORITHMS,
    KeySet,
    VerifyingKey,
)

log = logging.getLogger("queen.auth")

MAX_TOKEN_CHARS = 8192
CACHE_ENTRIES = 10_000
# A token without `exp` is re-verified this often, so it still meets a rotated key set.
UNEXPIRING_CACHE_S = 300.0
KEYS_WITHOUT_KID = 5


class Level(enum.IntEnum):
    """Access levels of spec §1.8, cumulative: a level passes every route of a lower one."""

    PUBLIC = 0
    READ_ONLY = 1
    READ_WRITE = 2
    ADMIN = 3


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for: `sub` stamps producerSub, `level` opens routes."""

    sub: str | None
    role: str | None
    level: Level


class Rejected(Exception):
    """A request the gate refuses: `status` and `message` are the response (D-J9)."""

    def __init__(self, status: int, message: str, *, token_presented: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.token_presented = token_presented


AUTHENTICATION_REQUIRED = "Authentication required"
INVALID_TOKEN = "Invalid token"
KEYS_UNAVAILABLE = "Authentication keys unavailable"


def _invalid(message: str = INVALID_TOKEN) -> Rejected:
    return Rejected(401, message, token_presented=True)


def allowed_algorithms(config: Config) -> frozenset[str]:
    """D-J3: the algorithms this configuration verifies; never `none`."""
    mode = config.jwt_algorithm.lower()
    asymmetric = bool(config.jwt_public_key or config.jwt_jwks_url)
    if mode == "hs256":
        return HMAC_ALGORITHMS
    if mode == "rs256":
        return RSA_ALGORITHMS | EC_ALGORITHMS
    if mode == "eddsa":
        return EDDSA_ALGORITHMS
    return (HMAC_ALGORITHMS if config.jwt_secret else frozenset()) | (
        ASYMMETRIC_ALGORITHMS if asymmetric else frozenset()
    )


def token_of(header: str | None) -> str | None:
    """D-J10: the Authorization header's token, `Bearer` in any case or a bare token."""
    if header is None:
        return None
    value = header.strip()
    if len(value) > 7 and value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


class Verifier:
    def __init__(
        self,
        config: Config,
        jwks: Callable[[], KeySet | None] = lambda: None,
        on_unknown_kid: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.algorithms = allowed_algorithms(config)
        self.secret = config.jwt_secret.encode()
        from queen.security import key_loading  # noqa: PLC0415 -- see the module doc

        self.public_key = (
            key_loading.load_public_key(config.jwt_public_key) if config.jwt_public_key else None
        )
        self.uses_jwks = bool(config.jwt_jwks_url)
        self.jwks = jwks
        self.on_unknown_kid = on_unknown_kid
        self.issuers = comma_list(config.jwt_issuer)
        self.audiences = comma_list(config.jwt_audience)
        self.leeway = config.jwt_clock_skew
        self.roles = {
            config.jwt_role_admin: Level.ADMIN,
            config.jwt_role_read_write: Level.READ_WRITE,
            config.jwt_role_read_only: Level.READ_ONLY,
        }
        self._cache: dict[str, tuple[Identity, float, KeySet | None]] = {}

    def identity(self, authorization: str | None) -> Identity:
        token = token_of(authorization)
        if token is None:
            raise Rejected(401, AUTHENTICATION_REQUIRED)
        keys = self.jwks()
        cached = self._cache.get(token)
        if cached is not None:
            identity, valid_until, verified_with = cached
            if time.time() < valid_until and verified_with is keys:
                return identity
            del self._cache[token]
        identity, valid_until = self._verify(token, keys)
        if len(self._cache) >= CACHE_ENTRIES:
            del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[token] = (identity, valid_until, keys)
        return identity

    def _verify(self, token: str, keys: KeySet | None) -> tuple[Identity, float]:
        import jwt  # noqa: PLC0415 -- see the module doc

        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            log.info("token refused: undecodable header", extra={"reason": str(error)})
            raise _invalid() from None
        algorithm = header.get("alg")
        if "crit" in header or not isinstance(algorithm, str) or algorithm not in self.algorithms:
            log.info("token refused: algorithm or crit header", extra={"alg": str(algorithm)})
            raise _invalid()
        claims = self._claims(token, algorithm, header.get("kid"), keys)
        exp = claims.get("exp")
        valid_until = (
            float(exp) + self.leeway
            if isinstance(exp, int | float)
            else time.time() + UNEXPIRING_CACHE_S
        )
        level, role = self._level(claims)
        return Identity(_subject(claims.get("sub")), role, level), valid_until

    def _claims(self, token: str, algorithm: str, kid: Any, keys: KeySet | None) -> dict[str, Any]:
        if algorithm in HMAC_ALGORITHMS:
            return self._decode(token, algorithm, self.secret)
        candidates = self._candidates(algorithm, kid if isinstance(kid, str) else None, keys)
        last: Rejected | None = None
        for key in candidates:
            try:
                return self._decode(token, algorithm, key.key)
            except Rejected as rejection:
                if rejection.message != INVALID_TOKEN:
                    raise  # the signature held: the claims are what failed
                last = rejection
        raise last or _invalid()

    def _candidates(
        self, algorithm: str, kid: str | None, keys: KeySet | None
    ) -> list[VerifyingKey]:
        """D-J4: the public key first, then the JWKS by kid, or without a kid its first few
        keys of the right type. An unknown kid asks for a refetch (rate-limited elsewhere)."""
        found = []
        if self.public_key is not None and algorithm in self.public_key.algorithms:
            found.append(self.public_key)
        if not self.uses_jwks:
            return found
        if keys is None:
            if not found:
                self.on_unknown_kid()
                raise Rejected(503, KEYS_UNAVAILABLE)
            return found
        if kid is not None:
            key = keys.by_kid(kid)
            if key is None:
                self.on_unknown_kid()
            elif algorithm in key.algorithms:
                found.append(key)
            return found
        matching = [key for key in keys.keys if algorithm in key.algorithms]
        return found + matching[:KEYS_WITHOUT_KID]

    def _decode(self, token: str, algorithm: str, key: Any) -> dict[str, Any]:
        import jwt  # noqa: PLC0415 -- see the module doc

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audiences or None,
                issuer=self.issuers or None,
                leeway=self.leeway,
                options={
                    "require": ["exp"] if self.config.jwt_require_exp else [],
                    "verify_aud": bool(self.audiences),
                    "verify_iss": bool(self.issuers),
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("Token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("Token not yet valid") from None
        except jwt.InvalidIssuerError:
            raise _invalid("Invalid token issuer") from None
        except jwt.InvalidAudienceError:
            raise _invalid("Invalid token audience") from None
        except jwt.MissingRequiredClaimError as error:
            message = {"iss": "Invalid token issuer", "aud": "Invalid token audience"}
            raise _invalid(message.get(error.claim, INVALID_TOKEN)) from None
        except jwt.InvalidTokenError as error:
            log.info("token refused", extra={"reason": str(error), "alg": algorithm})
            raise _invalid() from None
        return claims

    def _level(self, claims: dict[str, Any]) -> tuple[Level, str | None]:
        """D-J8: the union of the single-role and the role-array claims; the highest level any
        recognised role grants (none: no level, so every protected route answers 403)."""
        single = _claim(claims, self.config.jwt_roles_claim)
        many = _claim(claims, self.config.jwt_roles_array_claim)
        held = [single] if isinstance(single, str) else []
        if isinstance(many, list):
            held += [role for role in many if isinstance(role, str)]
        best, best_role = Level.PUBLIC, None
        for role in held:
            level = self.roles.get(role, Level.PUBLIC)
            if level > best:
                best, best_role = level, role
        return best, best_role


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _subject(sub: Any) -> str | None:
    """D-J7: a string or an integer `sub` (as decimal text); anything else stamps nothing."""
    if isinstance(sub, bool):
        return None
    if isinstance(sub, int):
        return str(sub)
    return sub if isinstance(sub, str) and sub else None
