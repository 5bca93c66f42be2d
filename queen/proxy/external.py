"""Tokens of an identity provider, verified against its JWKS: SSO passthrough (§4.6 step 3, D-P11)
and Google's id_token (§4.11).

The key set is fetched over HTTP without blocking request handling for others (one fetch at a time,
the rest wait for it), refreshed hourly, refetched on an unknown `kid` at most once per 30 s, and
the last good set is kept when a refresh fails. A key's type decides the algorithms it verifies;
a JWK with `alg` verifies only that one, and `none` or HMAC never pass here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import trio

log = logging.getLogger("queen.proxy")

REFRESH_S = 3600.0
UNKNOWN_KID_COOLDOWN_S = 30.0
FETCH_TIMEOUT_S = 5.0
_ALGORITHMS = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}


class JwksVerifier:
    """Verifies tokens signed by one IdP; `issuers`/`audiences` empty means not checked."""

    def __init__(
        self,
        url: str,
        issuers: Sequence[str] = (),
        audiences: Sequence[str] = (),
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._issuers = tuple(issuers)
        self._audiences = tuple(audiences)
        self._client = client
        self._keys: dict[str, _Key] = {}
        self._fetched_at: float | None = None
        self._lock = trio.Lock()

    async def _fetch(self) -> None:
        async with self._lock:
            now = trio.current_time()
            if self._fetched_at is not None and now - self._fetched_at < UNKNOWN_KID_COOLDOWN_S:
                return
            self._fetched_at = now
            try:
                if self._client is not None:
                    answer = await self._client.get(self._url, timeout=FETCH_TIMEOUT_S)
                else:
                    async with httpx.AsyncClient() as client:
                        answer = await client.get(self._url, timeout=FETCH_TIMEOUT_S)
                answer.raise_for_status()
                keys = _usable_keys(answer.json())
            except (httpx.HTTPError, ValueError) as error:
                log.warning("JWKS fetch failed", extra={"url": self._url, "error": str(error)})
                return
            if keys:
                self._keys = keys
            else:
                log.warning("JWKS has no usable signing key", extra={"url": self._url})

    async def _candidates(self, kid: str | None) -> list[_Key]:
        stale = self._fetched_at is None or trio.current_time() - self._fetched_at > REFRESH_S
        if stale or (kid is not None and kid not in self._keys):
            await self._fetch()
        if kid is not None:
            return [self._keys[kid]] if kid in self._keys else []
        return list(self._keys.values())[:5]

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this IdP signed for us, else None."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            return None
        for key in await self._candidates(kid):
            if alg not in key.algorithms:
                continue
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.jwk.key,
                    algorithms=[alg],
                    audience=list(self._audiences) or None,
                    issuer=list(self._issuers) or None,
                    options={"verify_aud": bool(self._audiences), "require": ["exp"]},
                )
            except jwt.PyJWTError:
                continue
            return claims
        return None


@dataclass(frozen=True)
class _Key:
    jwk: jwt.PyJWK
    algorithms: tuple[str, ...]


def _usable_keys(document: Any) -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    for entry in document.get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in _ALGORITHMS:
            continue
        declared = entry.get("alg")
        algorithms = _ALGORITHMS[entry["kty"]]
        if declared is not None:
            algorithms = (declared,) if declared in algorithms else ()
        try:
            key = _Key(jwt.PyJWK.from_dict(entry), algorithms)
        except (jwt.PyJWTError, ValueError, KeyError):
            continue
        keys[str(entry.get("kid", ""))] = key
    return keys
