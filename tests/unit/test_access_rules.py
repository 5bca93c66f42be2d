"""Pure security logic of issue 14: the route-level table covers every route the app serves,
token verification (algorithms kept apart, claims, roles, subjects), the encryption envelope,
strict configuration that never echoes a secret, and the private socket directory."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from queen.actors.root import Services
from queen.config import Config, ConfigError
from queen.http.app import create_app
from queen.http.route_levels import API_PREFIXES, declared_level, level_of
from queen.logs import TextFormatter
from queen.security.envelope import is_envelope, key_id
from queen.security.keyring import Keyring
from queen.security.minting import duration_s, mint
from queen.security.tokens import Level, Rejected, Verifier, token_of
from queen.serve import _warn_about_exposure
from queen.sync.siblings import _private_directory

SECRET = "unit-secret-" + "x" * 40


def test_every_route_of_the_app_has_a_row_in_the_level_table() -> None:
    """A route added without a row is closed (admin), not open; this makes it visible. Only the
    dashboard's files, GET outside the API prefixes, rely on the default (public)."""
    app = create_app(Services(Config.from_env({"PG_HOST": "unused"}), 0))
    missing = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            dashboard = method == "GET" and not path.startswith(API_PREFIXES)
            if declared_level(method, path) is None and not dashboard:
                missing.append(f"{method} {rule.rule}")
    assert missing == []


@pytest.mark.parametrize(
    ("method", "path", "level"),
    [
        ("GET", "/health", Level.PUBLIC),
        ("GET", "/assets/app.js", Level.PUBLIC),
        ("POST", "/api/v1/push", Level.READ_WRITE),
        ("POST", "//api/v1/push/", Level.READ_WRITE),
        ("GET", "/api/v1/pop/queue/orders", Level.READ_WRITE),
        ("GET", "/api/v1/messages/p/t/with/slashes", Level.READ_ONLY),
        ("DELETE", "/api/v1/resources/queues/orders", Level.ADMIN),
        ("GET", "/api/v1/brand-new-route", Level.ADMIN),
        ("POST", "/anything", Level.ADMIN),
        ("HEAD", "/api/v1/dlq", Level.READ_ONLY),
    ],
)
def test_levels(method: str, path: str, level: Level) -> None:
    assert level_of(method, path) is level


def verifier(**env: str) -> Verifier:
    return Verifier(Config.from_env({"JWT_ENABLED": "true", "JWT_SECRET": SECRET, **env}))


def test_algorithm_families_stay_apart() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    gate = Verifier(
        Config.from_env(
            {"JWT_ENABLED": "true", "JWT_ALGORITHM": "RS256", "JWT_PUBLIC_KEY": pem.decode()}
        )
    )
    good = jwt.encode({"sub": "a", "role": "admin"}, rsa_key, algorithm="RS256")
    assert gate.identity(f"Bearer {good}").level is Level.ADMIN
    hs = jwt.encode({"sub": "a", "role": "admin"}, SECRET, algorithm="HS256")
    with pytest.raises(Rejected, match="Invalid token"):
        gate.identity(hs)  # an HS token means nothing to an RS256 server


def test_subjects_roles_and_claims() -> None:
    gate = verifier(JWT_ROLES_ARRAY_CLAIM="realm_access.roles")
    keycloak = jwt.encode({"sub": 42, "realm_access": {"roles": ["read-only"]}}, SECRET)
    identity = gate.identity(keycloak)
    assert (identity.sub, identity.level) == ("42", Level.READ_ONLY)
    no_role = jwt.encode({"sub": "a", "role": "guest", "id": 7}, SECRET)
    assert gate.identity(no_role).level is Level.PUBLIC
    required = verifier(JWT_REQUIRE_EXP="true")
    with pytest.raises(Rejected):
        required.identity(jwt.encode({"sub": "a", "role": "admin"}, SECRET))
    expired = jwt.encode({"role": "admin", "exp": int(time.time()) - 100}, SECRET)
    with pytest.raises(Rejected, match="Token has expired"):
        gate.identity(expired)


def test_a_cached_token_still_expires() -> None:
    gate = verifier(JWT_CLOCK_SKEW="0")
    token = jwt.encode({"role": "admin", "exp": int(time.time()) + 1}, SECRET)
    assert gate.identity(token).level is Level.ADMIN
    time.sleep(1.1)  # the token's own lifetime is what is under test
    with pytest.raises(Rejected, match="Token has expired"):
        gate.identity(token)


def test_token_extraction() -> None:
    assert token_of("  BEARER abc  ") == "abc"
    assert token_of("abc") == "abc"
    assert token_of("   ") is None


def test_the_envelope_round_trips_and_reads_without_kid() -> None:
    current, previous = os.urandom(32), os.urandom(32)
    old = Keyring(previous)
    ring = Keyring(current, [previous])
    sealed = ring.seal([b'{"a":1}'])[0]
    envelope = orjson.loads(sealed)
    assert is_envelope(envelope) and envelope["kid"] == key_id(current)
    assert ring.open(envelope) == {"a": 1}
    legacy = orjson.loads(old.seal([b"[1,2]"])[0])
    del legacy["kid"]
    assert ring.open(legacy) == [1, 2]
    with pytest.raises(ValueError):
        Keyring(os.urandom(32)).open(envelope)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JWT_ENABLED": "ture"}, "JWT_ENABLED"),
        ({"JWT_ENABLED": "true"}, "JWT_SECRET"),
        ({"JWT_ENABLED": "true", "JWT_ALGORITHM": "RS256"}, "JWT_PUBLIC_KEY"),
        ({"JWT_ENABLED": "true", "JWT_ALGORITHM": "none", "JWT_SECRET": "s"}, "JWT_ALGORITHM"),
        ({"QUEEN_ENCRYPTION_KEY": "ab" * 31 + "zz"}, "QUEEN_ENCRYPTION_KEY"),
        ({"QUEEN_ENCRYPTION_PREVIOUS_KEYS": "ab" * 32 + ",12"}, "QUEEN_ENCRYPTION_PREVIOUS_KEYS"),
    ],
)
def test_security_settings_are_strict_and_never_echo_secrets(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as refusal:
        Config.from_env(env)
    assert named in str(refusal.value)
    assert "zz" not in str(refusal.value) and "ab" * 5 not in str(refusal.value)
    config = Config.from_env({"JWT_SECRET": "hunter2-hunter2", "QUEEN_ENCRYPTION_KEY": "cd" * 32})
    assert "hunter2" not in repr(config) and "cd" * 8 not in repr(config)


def test_queen_token_mints_what_the_gate_accepts() -> None:
    assert duration_s("7d") == 7 * 86400 and duration_s("never") is None
    with pytest.raises(ValueError):
        duration_s("2 days")
    token = mint(sub="ops", role="admin", expires_in_s=60, algorithm="HS256", secret=SECRET)
    assert verifier().identity(token).sub == "ops"
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed = mint(
        sub="ed", role="read-only", expires_in_s=None, algorithm="EdDSA", private_key_pem=pem
    )
    gate = Verifier(
        Config.from_env(
            {"JWT_ENABLED": "true", "JWT_ALGORITHM": "EdDSA", "JWT_PUBLIC_KEY": public.decode()}
        )
    )
    assert gate.identity(signed).level is Level.READ_ONLY


def test_the_wake_socket_directory_must_be_private(tmp_path: Path) -> None:
    private = tmp_path / "private"
    _private_directory(private)
    assert private.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(PermissionError):
        _private_directory(shared)
    link = tmp_path / "link"
    link.symlink_to(private)
    with pytest.raises(PermissionError):
        _private_directory(link)


def test_text_logs_escape_control_characters() -> None:
    record = logging.LogRecord("queen.http", logging.INFO, "", 0, "request", None, None)
    record.path = "/api/v1/x\n[2026-01-01] [error] forged"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\\x0a" in line


def test_listening_beyond_loopback_without_jwt_is_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="queen")
    _warn_about_exposure(Config.from_env({"HOST": "127.0.0.1"}))
    assert not caplog.records
    _warn_about_exposure(Config.from_env({"HOST": "0.0.0.0"}))
    assert "JWT_ENABLED is false" in caplog.records[0].getMessage()
