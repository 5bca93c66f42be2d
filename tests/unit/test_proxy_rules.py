"""Pure rules of the auth proxy: route levels per role, redirect sanitising, durations, login
throttling and token purposes (spec security-cluster.md §4.17)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from queen.config import ConfigError
from queen.proxy.config import ProxyConfig, parse_duration
from queen.proxy.levels import refusal
from queen.proxy.redirects import sanitise
from queen.proxy.throttle import LoginThrottle
from queen.proxy.tokens import TokenService

SECRET = "unit-test-secret-0123456789abcdef0123456789"


def test_read_only_may_only_get() -> None:
    assert refusal("read-only", "GET", "/api/v1/messages") is None
    assert refusal("read-only", "GET", "/assets/app.js") is None  # the dashboard
    assert refusal("read-only", "POST", "/streams/v1/state/get") is not None
    assert refusal("read-only", "GET", "/api/v1/pop/queue/q") is not None
    assert refusal("read-write", "DELETE", "/api/v1/consumer-groups/g") is not None
    assert refusal("admin", "DELETE", "/api/v1/consumer-groups/g") is None
    assert refusal("read-write", "POST", "/api/v1/push") is None
    assert refusal("read-write", "GET", "/api/v1/system/maintenance") is not None
    assert refusal("read-write", "PUT", "/api/v1/not-a-route") is not None  # unknown: ADMIN
    assert refusal("superuser", "GET", "/api/v1/messages") is not None


@pytest.mark.parametrize(
    "target",
    [
        "//evil",
        "/\\evil",
        "/a\\b",
        "/x\ty",
        "/x\x7f",
        "http://evil.example/",
        "ftp://ok.example/",
        "https://user@ok.example/",
        "javascript:alert(1)",
        "",
    ],
)
def test_unsafe_redirects_are_refused(target: str) -> None:
    assert sanitise(target, ("ok.example",), "") is None


def test_safe_redirects_pass() -> None:
    assert sanitise("/dash?x=1", (), "") == "/dash?x=1"
    assert sanitise("https://ok.example/a", ("ok.example",), "") == "https://ok.example/a"
    assert sanitise("https://app.corp.example/", (), "corp.example") == "https://app.corp.example/"


def test_durations() -> None:
    assert parse_duration("X", "15m") == 900
    assert parse_duration("X", "3600") == 3600  # seconds, not the original's milliseconds
    assert parse_duration("X", "never") is None
    for bad in ("1 day", "2w", "-5s", "0", "1.5h"):
        with pytest.raises(ConfigError):
            parse_duration("X", bad)


def test_the_default_secret_is_refused() -> None:
    with pytest.raises(ConfigError):
        ProxyConfig.from_env({})
    with pytest.raises(ConfigError):
        ProxyConfig.from_env({"JWT_SECRET": "change-me-in-production"})
    with pytest.raises(ConfigError):
        ProxyConfig.from_env({"JWT_SECRET": SECRET, "COOKIE_SECURE": "maybe"})


def test_throttle_opens_after_the_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("u", "a") is None
        throttle.failed("u", "a")
    assert throttle.retry_after("u", "a") == 60
    assert throttle.retry_after("other", "a") == 60  # the address is locked for every name
    now[0] = 61.0
    assert throttle.retry_after("u", "a") is None


def test_token_purposes_do_not_mix() -> None:
    tokens = TokenService(ProxyConfig.from_env({"JWT_SECRET": SECRET}))
    session = tokens.issue_session(7, "alice", "read-write", lifetime_s=60)
    identity = tokens.verify_session(session.token)
    assert identity is not None and identity.sub == "7" and identity.jti == session.jti
    upstream = tokens.mint_upstream(identity)
    assert tokens.verify_session(upstream) is None
    claims = jwt.decode(upstream, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "7" and claims["role"] == "read-write"
    state = tokens.issue_state("nonce", "/", "binding")
    assert tokens.verify_session(state) is None
    assert tokens.verify_state(state, "binding") is not None
    assert tokens.verify_state(state, "another browser") is None
    expired = jwt.encode({"id": 7, "role": "admin", "exp": int(time.time()) - 5}, SECRET)
    assert tokens.verify_session(expired) is None


@pytest.mark.parametrize(
    ("make_key", "alg"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_asymmetric_minting_publishes_its_key(make_key: Any, alg: str) -> None:
    pem = make_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    config = ProxyConfig.from_env(
        {"JWT_SECRET": SECRET, "INTERNAL_JWT_PRIVATE_KEY_PEM": pem.decode()}
    )
    tokens = TokenService(config)
    identity = tokens.verify_session(tokens.issue_session(1, "a", "admin", lifetime_s=60).token)
    assert identity is not None
    minted = tokens.mint_upstream(identity)
    (published,) = tokens.jwks()["keys"]
    assert published["alg"] == alg and published["use"] == "sig"
    assert jwt.get_unverified_header(minted)["kid"] == published["kid"]
    claims = jwt.decode(minted, jwt.PyJWK(published).key, algorithms=[alg])
    assert claims["iss"] == "queen-proxy" and claims["sub"] == "1"
