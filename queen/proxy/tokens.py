"""The three kinds of token the proxy signs, kept apart by purpose (D-P2):

* session tokens (cookie `token`, CLI and service tokens): HS256 with JWT_SECRET, payload as the
  original's plus `sub`, `jti` and `purpose: session`; the original's tokens (no purpose) pass;
* upstream tokens minted for the broker or a ForwardAuth upstream (§4.10): short-lived, `sub` and
  `role` present, `purpose: upstream`, never accepted as a session;
* OAuth state tokens: signed with a key derived by HKDF (D-P1), `purpose: oauth-state`, bound to a
  browser cookie by hash (D-P3).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from queen.config import ConfigError
from queen.proxy.config import ProxyConfig
from queen.proxy.roles import ROLES

SESSION_ALGORITHMS = ["HS256", "HS384", "HS512"]
STATE_LIFETIME_S = 300
NEVER = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Identity:
    """Who a request is: a proxy user (session token) or an external SSO subject."""

    sub: str
    username: str
    role: str | None
    roles: tuple[str, ...]
    email: str | None = None
    groups: tuple[str, ...] = ()
    user_id: int | None = None
    jti: str | None = None
    external_token: str | None = None

    @property
    def external(self) -> bool:
        return self.external_token is not None


@dataclass(frozen=True)
class IssuedSession:
    token: str
    jti: str
    expires_at: dt.datetime


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Signs and checks the proxy's own tokens with the keys of one ProxyConfig."""

    def __init__(self, config: ProxyConfig) -> None:
        self._config = config
        self._secret = config.jwt_secret.encode()
        self._state_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"queen-proxy oauth-state"
        ).derive(self._secret)
        self._private_key: Any = None
        self._public_jwk: dict[str, Any] | None = None
        self._mint_alg = config.internal_jwt_alg
        if config.internal_jwt_private_key_pem:
            self._load_private_key(config.internal_jwt_private_key_pem, config.internal_jwt_key_id)

    def _load_private_key(self, pem: str, key_id: str) -> None:
        try:
            key = serialization.load_pem_private_key(pem.replace("\\n", "\n").encode(), None)
        except ValueError as error:
            raise ConfigError(
                f"INTERNAL_JWT_PRIVATE_KEY_PEM is not a usable key: {error}"
            ) from None
        if isinstance(key, rsa.RSAPrivateKey):
            alg = "RS256"
        elif isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
            alg = "EdDSA"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1",):
            alg = "ES256"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp384r1",):
            alg = "ES384"
        else:
            raise ConfigError("INTERNAL_JWT_PRIVATE_KEY_PEM: use an RSA, Ed25519 or P-256/384 key")
        public = _public_jwk(key)
        members = {
            "RSA": ("e", "kty", "n"),
            "EC": ("crv", "kty", "x", "y"),
            "OKP": ("crv", "kty", "x"),
        }
        canonical = json.dumps(
            {name: public[name] for name in members[public["kty"]]}, separators=(",", ":")
        )
        thumbprint = _b64url(hashlib.sha256(canonical.encode()).digest())
        self._private_key = key
        self._mint_alg = alg
        self._public_jwk = {**public, "alg": alg, "use": "sig", "kid": key_id or thumbprint}

    # Sessions -------------------------------------------------------------------------------

    def issue_session(
        self,
        user_id: int,
        username: str,
        role: str,
        email: str | None = None,
        *,
        lifetime_s: int | None,
    ) -> IssuedSession:
        """A new session token living `lifetime_s` seconds (None: never expires)."""
        now = int(time.time())
        jti = str(uuid.uuid4())
        payload: dict[str, Any] = {
            "id": user_id,
            "sub": str(user_id),
            "username": username,
            "role": role,
            "iat": now,
            "jti": jti,
            "purpose": "session",
        }
        if email:
            payload["email"] = email
        expires_at = NEVER
        if lifetime_s is not None:
            payload["exp"] = now + lifetime_s
            expires_at = dt.datetime.fromtimestamp(payload["exp"], dt.UTC)
        return IssuedSession(jwt.encode(payload, self._secret, "HS256"), jti, expires_at)

    def verify_session(self, token: str) -> Identity | None:
        """The identity of a valid session token (D-P2), else None. Revocation is the caller's
        check (the jti against the sessions table)."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=SESSION_ALGORITHMS, options={"verify_aud": False}
            )
        except jwt.PyJWTError:
            return None
        role = claims.get("role")
        if role not in ROLES or "nonce" in claims or claims.get("purpose", "session") != "session":
            return None
        jti = claims.get("jti")
        if jti is None and not self._legacy_allowed():
            return None
        user_id = claims.get("id")
        username = claims.get("username")
        if not isinstance(username, str):
            username = str(user_id) if user_id is not None else ""
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        return Identity(
            sub=str(user_id) if user_id is not None else username,
            username=username,
            role=role,
            roles=(role,),
            email=email,
            user_id=user_id if isinstance(user_id, int) else None,
            jti=jti if isinstance(jti, str) else None,
        )

    def _legacy_allowed(self) -> bool:
        until = self._config.legacy_tokens_until
        return until is None or dt.datetime.now(dt.UTC) < until

    # Upstream tokens ------------------------------------------------------------------------

    def mint_upstream(self, identity: Identity) -> str:
        """A short-lived token for the broker or a ForwardAuth upstream (§4.10, D-P8)."""
        bag: dict[str, Any] = {
            "sub": identity.sub,
            "role": identity.role,
            "email": identity.email,
            "username": identity.username,
            "roles": list(identity.roles),
        }
        payload: dict[str, Any] = {}
        for target, source in self._config.internal_jwt_claim_mapping:
            value = bag.get(source)
            if value not in (None, "", []):
                payload[target] = value
        payload.setdefault("sub", identity.sub)
        now = int(time.time())
        payload.update(iss=self._config.internal_jwt_issuer, iat=now, purpose="upstream")
        if self._config.internal_jwt_audience:
            payload["aud"] = self._config.internal_jwt_audience
        if self._config.internal_jwt_lifetime_s is not None:
            payload["exp"] = now + self._config.internal_jwt_lifetime_s
        if self._private_key is not None and self._public_jwk is not None:
            return jwt.encode(
                payload,
                self._private_key,
                self._mint_alg,
                headers={"kid": self._public_jwk["kid"], "typ": "JWT"},
            )
        return jwt.encode(
            payload,
            self._config.internal_jwt_signing_key.encode(),
            self._mint_alg,
            headers={"typ": "JWT"},
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._public_jwk] if self._public_jwk else []}

    # OAuth state ----------------------------------------------------------------------------

    def issue_state(self, nonce: str, next_url: str, binding: str) -> str:
        payload = {
            "nonce": nonce,
            "next": next_url,
            "bind": binding_hash(binding),
            "purpose": "oauth-state",
            "exp": int(time.time()) + STATE_LIFETIME_S,
        }
        return jwt.encode(payload, self._state_key, "HS256")

    def verify_state(self, state: str, binding: str) -> dict[str, Any] | None:
        try:
            claims = jwt.decode(state, self._state_key, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        if claims.get("purpose") != "oauth-state" or not secrets.compare_digest(
            str(claims.get("bind", "")), binding_hash(binding)
        ):
            return None
        return claims


def binding_hash(binding: str) -> str:
    return _b64url(hashlib.sha256(binding.encode()).digest())


def _public_jwk(key: Any) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
