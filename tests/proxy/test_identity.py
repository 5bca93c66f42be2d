"""What reaches the upstream and who gets in: the proxy in front of a fake identity provider that
also stands in for the broker (it echoes each forwarded request). SSO passthrough by audience and
role, the Google code flow and its refusals, the headers the upstream sees, login throttling
(spec security-cluster.md §4.6, §4.8, §4.11, D-P3, D-P6, D-P8, D-P11, D-P12, D-P15).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from queen.storage.pgcluster import PgCluster
from tests.proxy.support import (
    SECRET,
    FakeIdp,
    ProxyProcess,
    create_user,
    login,
    proxy_env,
    running_proxy,
    session_cookie,
)
from tests.support import run_sql

CLIENT_ID = "queen-test-client"


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdp]:
    with FakeIdp() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, database: str, idp: FakeIdp) -> Iterator[ProxyProcess]:
    env = proxy_env(
        pg_cluster,
        database,
        idp.url,
        EXTERNAL_JWKS_URL=f"{idp.url}/jwks",
        EXTERNAL_ISSUER="https://idp.test",
        EXTERNAL_AUDIENCE="queen",
        GOOGLE_CLIENT_ID=CLIENT_ID,
        GOOGLE_CLIENT_SECRET="google-secret",
        GOOGLE_REDIRECT_URI="http://127.0.0.1/api/auth/google/callback",
        GOOGLE_TOKEN_ENDPOINT=f"{idp.url}/token",
        GOOGLE_JWKS_URL=f"{idp.url}/jwks",
        GOOGLE_ALLOWED_DOMAINS="example.com",
        GOOGLE_AUTO_PROVISION="true",
        GOOGLE_DEFAULT_ROLE="read-write",
        FORWARD_AUTH_ENABLED="true",
        FORWARD_AUTH_EMIT_HEADERS="Authorization,X-Auth-User,X-Auth-Role",
    )
    create_user(env, "alice", "read-write")
    with running_proxy(env) as process:
        yield process


def _bearer(
    proxy: ProxyProcess, method: str, token: str, path: str = "/api/v1/push"
) -> httpx.Response:
    return httpx.request(
        method,
        proxy.url + path,
        headers={"Authorization": f"Bearer {token}"},
        json={"items": []} if method == "POST" else None,
        timeout=10,
    )


def test_sso_tokens_pass_by_audience_and_role(proxy: ProxyProcess, idp: FakeIdp) -> None:
    base = {"iss": "https://idp.test", "sub": "user-7", "preferred_username": "seven"}
    writer = idp.sign({**base, "aud": "queen", "roles": ["read-write"]})
    answer = _bearer(proxy, "POST", writer)
    assert answer.status_code == 200
    seen = answer.json()["headers"]
    assert seen["authorization"] == [f"Bearer {writer}"]  # passed through unchanged
    assert seen["x-proxy-external"] == ["true"]
    assert seen["x-proxy-user"] == ["seven"]

    other_app = idp.sign({**base, "aud": "another-app", "role": "admin"})
    assert _bearer(proxy, "GET", other_app, "/api/v1/resources/queues").status_code == 401
    wrong_issuer = idp.sign({**base, "iss": "https://elsewhere", "aud": "queen", "role": "admin"})
    assert _bearer(proxy, "GET", wrong_issuer, "/api/v1/resources/queues").status_code == 401
    reader = idp.sign({**base, "aud": "queen", "role": "read-only"})
    assert _bearer(proxy, "GET", reader, "/api/v1/resources/queues").status_code == 200
    assert _bearer(proxy, "POST", reader).status_code == 403
    roleless = idp.sign({**base, "aud": "queen"})  # EXTERNAL_DEFAULT_ROLE: read-only
    assert _bearer(proxy, "POST", roleless).status_code == 403
    # SSO users are not proxy users: /api/me answers only for proxy sessions.
    assert _bearer(proxy, "GET", writer, "/api/me").status_code == 401


def test_upstream_sees_a_minted_token_and_no_forged_headers(proxy: ProxyProcess) -> None:
    cookie = login(proxy.url, "alice")
    answer = httpx.get(
        f"{proxy.url}/api/v1/resources/queues?x=%2Fa",
        headers={
            "Cookie": f"token={cookie}",
            "Sec-Fetch-Site": "same-origin",
            "X-Proxy-User": "mallory",
            "X-Proxy-Role": "admin",
            "X-Proxy-External": "true",
            "X-Auth-User": "mallory",
            "X-Forwarded-For": "203.0.113.9",
        },
        timeout=10,
    )
    assert answer.status_code == 200
    seen = answer.json()
    headers = seen["headers"]
    assert seen["path"] == "/api/v1/resources/queues?x=%2Fa"
    assert headers["x-proxy-user"] == ["alice"]
    assert headers["x-proxy-role"] == ["read-write"]
    assert "x-proxy-external" not in headers
    assert "x-auth-user" not in headers
    assert "cookie" not in headers
    assert headers["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == [f"127.0.0.1:{proxy.port}"]
    upstream = headers["authorization"][0].removeprefix("Bearer ")
    assert upstream != cookie  # the session token never leaves the proxy
    claims = jwt.decode(upstream, SECRET, algorithms=["HS256"])
    assert claims["role"] == "read-write"
    assert claims["sub"].isdigit()
    assert claims["purpose"] == "upstream"
    assert claims["iss"] == "queen-proxy"
    assert 0 < claims["exp"] - time.time() <= 15 * 60


class GoogleBrowser:
    """One browser's side of the Google flow: its binding cookie and the state it was given."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy
        start = httpx.get(f"{proxy.url}/api/auth/google?next=/dash", timeout=10)
        assert start.status_code == 302
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["hd"] == ["example.com"]
        self.state = query["state"][0]
        self.nonce = query["nonce"][0]
        bind = next(h for h in start.headers.get_list("set-cookie") if h.startswith("g_bind="))
        self.binding = bind.split(";", 1)[0].split("=", 1)[1]

    def callback(
        self, code: str, state: str | None = None, binding: str | None = ""
    ) -> httpx.Response:
        cookie = self.binding if binding == "" else binding
        return httpx.get(
            f"{self.proxy.url}/api/auth/callback/google",
            params={"code": code, "state": state or self.state},
            headers={"Cookie": f"g_bind={cookie}"} if cookie else {},
            timeout=10,
        )


def _id_token(idp: FakeIdp, browser: GoogleBrowser, **claims: Any) -> str:
    code = uuid.uuid4().hex
    idp.codes[code] = idp.sign(
        {
            "iss": "https://accounts.google.com",
            "aud": CLIENT_ID,
            "nonce": browser.nonce,
            "sub": uuid.uuid4().hex,
            "email_verified": True,
            "hd": "example.com",
            **claims,
        }
    )
    return code


def _refused_with(answer: httpx.Response) -> str:
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith("/login?error="), location
    assert "token=" not in answer.headers.get("set-cookie", "")
    return location.removeprefix("/login?error=")


def test_google_sign_in_refusals(
    proxy: ProxyProcess, idp: FakeIdp, pg_cluster: PgCluster, database: str
) -> None:
    browser, other = GoogleBrowser(proxy), GoogleBrowser(proxy)
    good = {"email": "bob@example.com"}
    assert (
        _refused_with(browser.callback(_id_token(idp, browser, **good), "forged"))
        == "invalid_state"
    )
    assert (
        _refused_with(browser.callback(_id_token(idp, browser, **good), binding=None))
        == "invalid_state"
    )
    # A state issued to another browser does not complete in this one (login CSRF).
    stolen = browser.callback(_id_token(idp, browser, **good), other.state)
    assert _refused_with(stolen) == "invalid_state"
    unverified = _id_token(idp, browser, email="carol@example.com", email_verified=False)
    assert _refused_with(browser.callback(unverified)) == "google_failed"
    outside = _id_token(idp, browser, email="dave@other.org", hd="other.org")
    assert _refused_with(browser.callback(outside)) == "not_allowed"
    no_hd = _id_token(idp, browser, email="erin@example.com", hd=None)
    assert _refused_with(browser.callback(no_hd)) == "not_allowed"
    users = run_sql(pg_cluster, "SELECT username FROM queen_proxy.users", database=database)
    assert [row["username"] for row in users] == ["alice"]  # nobody refused was provisioned


def test_google_sign_in_provisions_and_lands_on_next(proxy: ProxyProcess, idp: FakeIdp) -> None:
    browser = GoogleBrowser(proxy)
    answer = browser.callback(_id_token(idp, browser, email="Frank@Example.com"))
    assert answer.status_code == 302
    assert answer.headers["location"] == "/dash"
    assert idp.token_requests[-1]["client_secret"] == ["google-secret"]
    cookie = session_cookie(answer)
    me = httpx.get(f"{proxy.url}/api/me", headers={"Cookie": f"token={cookie}"}, timeout=10)
    assert me.json() == {"username": "frank@example.com", "role": "read-write"}


def test_forward_auth_answers_with_identity_headers(proxy: ProxyProcess, idp: FakeIdp) -> None:
    probe = f"{proxy.url}/api/auth/forward-auth"
    assert httpx.get(probe, timeout=10).status_code == 401
    cookie = login(proxy.url, "alice")
    allowed = httpx.get(probe, headers={"Cookie": f"token={cookie}"}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["x-auth-user"] == "alice"
    assert allowed.headers["x-auth-role"] == "read-write"
    minted = allowed.headers["authorization"].removeprefix("Bearer ")
    assert jwt.decode(minted, SECRET, algorithms=["HS256"])["purpose"] == "upstream"
    # A token shaped like an OAuth state (a nonce, no role) is no session here either.
    state_like = jwt.encode({"nonce": "n", "next": "/", "exp": int(time.time()) + 60}, SECRET)
    forged = httpx.get(probe, headers={"Authorization": f"Bearer {state_like}"}, timeout=10)
    assert forged.status_code == 401
    reader = idp.sign({"iss": "https://idp.test", "aud": "queen", "sub": "r", "role": "read-only"})
    gated = {"Authorization": f"Bearer {reader}", "X-Forward-Auth-RBAC": "method"}
    assert httpx.get(probe, headers=gated, timeout=10).status_code == 200
    post = {**gated, "X-Forwarded-Method": "POST"}
    assert httpx.get(probe, headers=post, timeout=10).status_code == 403


def test_eleventh_failed_login_is_throttled(proxy: ProxyProcess) -> None:
    """Last in this module: it locks the test client's address out of password logins."""

    def attempt() -> httpx.Response:
        return httpx.post(
            f"{proxy.url}/api/login", json={"username": "alice", "password": "wrong"}, timeout=10
        )

    for _ in range(10):
        assert attempt().status_code == 401
    throttled = attempt()
    assert throttled.status_code == 429
    assert throttled.json() == {"error": "Too many login attempts"}
    assert 0 < int(throttled.headers["retry-after"]) <= 15 * 60
