"""Turning key text into `VerifyingKey`s: the PEM of JWT_PUBLIC_KEY and the members of a JWKS
document, each tagged with the algorithms its family verifies (queen/security/keys.py).

Apart from keys.py because PyJWT and cryptography cost a worker some 12 MB; only the verifier
and the JWKS actor of a worker with JWT on import this module (issue 20).
"""

from __future__ import annotations

from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from queen.security.keys import (
    EDDSA_ALGORITHMS,
    RSA_ALGORITHMS,
    KeySet,
    UnusableKey,
    VerifyingKey,
)

_EC_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384"}


def algorithms_of(key: Any) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_CURVES.get(key.curve.name)
        return frozenset({algorithm}) if algorithm else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return EDDSA_ALGORITHMS
    return frozenset()


def load_public_key(pem: str) -> VerifyingKey:
    """JWT_PUBLIC_KEY: a PEM public key of a supported type."""
    try:
        key = load_pem_public_key(pem.replace("\\n", "\n").encode())
    except (ValueError, TypeError):
        raise UnusableKey("JWT_PUBLIC_KEY is not a PEM public key") from None
    algorithms = algorithms_of(key)
    if not algorithms:
        raise UnusableKey("JWT_PUBLIC_KEY is not an RSA, P-256, P-384 or Ed25519 key")
    return VerifyingKey(None, algorithms, key)


def parse_jwks(document: Any) -> KeySet:
    """The usable signing keys of a JWKS document; members that are not signing keys of a
    supported type are skipped. Raises ValueError when none is usable, so a broken document
    never replaces a good set."""
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list):
        raise ValueError("JWKS document has no keys array")
    keys = []
    for member in members:
        key = _jwk(member)
        if key is not None:
            keys.append(key)
    if not keys:
        raise ValueError("JWKS document holds no usable signing key")
    return KeySet(tuple(keys))


def _jwk(member: Any) -> VerifyingKey | None:
    if not isinstance(member, dict) or member.get("use", "sig") != "sig":
        return None
    if member.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    try:
        key = jwt.PyJWK(member).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    algorithms = algorithms_of(key)
    declared = member.get("alg")
    if isinstance(declared, str):
        algorithms = algorithms & {declared}
    kid = member.get("kid")
    return (
        VerifyingKey(kid if isinstance(kid, str) else None, algorithms, key) if algorithms else None
    )
