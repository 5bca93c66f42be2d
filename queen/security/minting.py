"""Minting a signed token for `queen token` (operators and tests): HS256 with JWT_SECRET, or
EdDSA with an Ed25519 private key; claims `sub`, `role`, `iat`, and `exp` unless it never
expires, plus `iss`/`aud` when given."""

from __future__ import annotations

import re
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key

_DURATION = re.compile(r"(\d+)([smhdy]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def duration_s(text: str) -> int | None:
    """`never`, or an integer with s/m/h/d/y (bare: seconds); None means no expiry."""
    text = text.strip().lower()
    if text == "never":
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 12h, 7d or never)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def mint(
    *,
    sub: str,
    role: str,
    expires_in_s: int | None,
    algorithm: str,
    secret: str = "",
    private_key_pem: bytes = b"",
    issuer: str = "",
    audience: str = "",
    kid: str = "",
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now}
    if expires_in_s is not None:
        claims["exp"] = now + expires_in_s
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    headers = {"kid": kid} if kid else None
    if algorithm == "HS256":
        if not secret:
            raise ValueError("HS256 needs JWT_SECRET")
        return jwt.encode(claims, secret, algorithm="HS256", headers=headers)
    if algorithm == "EdDSA":
        key = load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("EdDSA needs an Ed25519 private key (PEM)")
        return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)
    raise ValueError(f"unsupported algorithm {algorithm!r}: HS256 or EdDSA")
