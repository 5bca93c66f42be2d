"""Signing keys and a local JWKS endpoint for the access-gate tests: the tokens a real issuer,
the auth proxy or an attacker would send, and an HTTP server whose key set the test changes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

SECRET = "s3cret-for-tests-only-" + "0123456789abcdef" * 3
ISSUER = "https://issuer.test"
AUDIENCE = "queen-tests"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    exporter = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    member: dict[str, Any] = json.loads(exporter.to_jwk(key.public_key()))
    return {**member, "kid": kid, "alg": alg, "use": "sig"}


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "alice",
        "role": "read-write",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def token(
    key: Any = SECRET, alg: str = "HS256", headers: dict[str, Any] | None = None, **extra: Any
) -> str:
    return jwt.encode(claims(**extra), key, algorithm=alg, headers=headers)


def _part(value: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")


def unsigned_token(**extra: Any) -> str:
    """`alg: none`, which no verifier may accept."""
    return (_part({"alg": "none", "typ": "JWT"}) + b"." + _part(claims(**extra)) + b".").decode()


def hmac_with(secret: bytes, **extra: Any) -> str:
    """An HS256 token keyed with arbitrary bytes (PyJWT refuses PEM text as an HMAC key, an
    attacker's library does not)."""
    signing_input = _part({"alg": "HS256", "typ": "JWT"}) + b"." + _part(claims(**extra))
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


@dataclass
class JwksServer:
    """Serves `document` at /jwks; `delay_s` makes every answer that slow."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    delay_s: float = 0.0
    requests: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"


@contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[JwksServer]:
    state = JwksServer(document)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            time.sleep(state.delay_s)
            body = json.dumps(state.document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()
