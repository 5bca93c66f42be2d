"""Signing keys a token may be verified with: the configured PEM public key and the members of
a JWKS document, each tagged with the algorithms it can verify (spec D-J3, D-J4). What a key
is lives here; turning PEM and JWK text into one needs PyJWT and cryptography and lives in
queen/security/key_loading.py, which only a worker with JWT on imports (issue 20).

Families are kept strictly apart: an RSA key verifies RS* only, an EC key the ES algorithm of
its curve, an Ed25519 key EdDSA, and no asymmetric key ever verifies an HMAC algorithm (so an
RSA public key can never be used as an HMAC secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})
EC_ALGORITHMS = frozenset({"ES256", "ES384"})
EDDSA_ALGORITHMS = frozenset({"EdDSA"})
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS | EC_ALGORITHMS | EDDSA_ALGORITHMS


class UnusableKey(ValueError):
    """A key that cannot be loaded; the message never holds key material."""


@dataclass(frozen=True)
class VerifyingKey:
    kid: str | None
    algorithms: frozenset[str]
    key: Any  # a cryptography public key object


@dataclass(frozen=True)
class KeySet:
    """One fetched JWKS, immutable: a refresh replaces the whole object, so a reader never sees
    half of two sets."""

    keys: tuple[VerifyingKey, ...]

    def by_kid(self, kid: str) -> VerifyingKey | None:
        return next((key for key in self.keys if key.kid == kid), None)
