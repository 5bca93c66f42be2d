"""The proxy alone protects a broker whose own auth is off: route-aware RBAC per role, the CSRF
rule for cookie sessions, revocation on logout, purpose-separated tokens, redirect sanitising and a
1.5 MB push streamed through (spec security-cluster.md §4, D-P2, D-P4, D-P5, D-P7, D-P10, D-P12).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from tests.proxy.support import SECRET, ProxyProcess, create_token, login

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


def _call(
    proxy: ProxyProcess, method: str, path: str, cookie: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if cookie is not None:
        headers["Cookie"] = f"token={cookie}"
    return httpx.request(method, proxy.url + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def service_token(proxy: ProxyProcess) -> str:
    """A read-write service token made by `queen proxy create-token`."""
    return create_token(proxy.env, "gate_service", "read-write")


def _push(queue: str, payload: Any = None) -> dict[str, Any]:
    return {"items": [{"queue": queue, "payload": payload or {"n": 1}}]}


def test_each_role_reaches_only_its_level(proxy: ProxyProcess) -> None:
    queue = f"rbac_{uuid.uuid4().hex[:8]}"
    cookies = {user: login(proxy.url, user) for user in ("admin", "read_write", "read_only")}

    def status(user: str, method: str, path: str, **kwargs: Any) -> int:
        answer = _call(proxy, method, path, cookies[user], headers=SAME_ORIGIN, **kwargs)
        return answer.status_code

    pop = f"/api/v1/pop/queue/{queue}?wait=false"
    assert status("read_write", "POST", "/api/v1/push", json=_push(queue)) == 201
    assert status("read_only", "GET", "/api/v1/resources/queues") == 200
    assert status("read_only", "POST", "/api/v1/push", json=_push(queue)) == 403
    assert status("read_only", "GET", pop) == 403
    assert status("read_write", "GET", pop) == 200
    for method, path in [
        ("DELETE", f"/api/v1/resources/queues/{queue}"),
        ("GET", "/api/v1/system/maintenance"),
        ("POST", "/api/v1/migration/start"),
        ("DELETE", f"/api/v1/queues/{queue}/clear"),
    ]:
        assert status("read_write", method, path) == 403, (method, path)
    refused = _call(
        proxy, "GET", "/api/v1/system/maintenance", cookies["read_write"], headers=SAME_ORIGIN
    )
    assert refused.json()["error"] == "Insufficient permissions"
    assert status("admin", "GET", "/api/v1/system/maintenance") == 200
    # As the dashboard sends it: the Origin names the proxy, which the broker must not refuse.
    dashboard = {**SAME_ORIGIN, "Origin": proxy.url}
    deleted = _call(
        proxy, "DELETE", f"/api/v1/resources/queues/{queue}", cookies["admin"], headers=dashboard
    )
    assert deleted.status_code == 200, deleted.text


def test_anonymous_callers_are_sent_to_login(proxy: ProxyProcess) -> None:
    api = _call(proxy, "GET", "/api/v1/resources/queues")
    assert api.status_code == 401
    assert api.json() == {"error": "Authentication required"}
    browser = _call(proxy, "GET", "/", headers={"Accept": "text/html"})
    assert browser.status_code == 302
    assert browser.headers["location"] == "/login"
    bad = _call(
        proxy, "GET", "/api/v1/resources/queues", headers={"Authorization": "Bearer nonsense"}
    )
    assert bad.status_code == 401
    assert bad.json() == {"error": "Invalid or expired token"}


def test_cookie_calls_from_other_sites_are_refused(proxy: ProxyProcess, service_token: str) -> None:
    cookie = login(proxy.url, "read_write")
    queue = f"csrf_{uuid.uuid4().hex[:8]}"
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Referer": "http://evil.example/page"},
        {},
    ):
        answer = _call(proxy, "POST", "/api/v1/push", cookie, headers=headers, json=_push(queue))
        assert answer.status_code == 403, headers
        assert answer.json() == {"error": "Cross-site request refused"}
    # A pop is a GET that changes state: a link on another site must not consume messages.
    pop = _call(
        proxy,
        "GET",
        f"/api/v1/pop/queue/{queue}?wait=false",
        cookie,
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert pop.status_code == 403
    own_origin = {"Origin": proxy.url}
    assert (
        _call(
            proxy, "POST", "/api/v1/push", cookie, headers=own_origin, json=_push(queue)
        ).status_code
        == 201
    )
    bearer = {"Authorization": f"Bearer {service_token}", "Sec-Fetch-Site": "cross-site"}
    assert (
        _call(proxy, "POST", "/api/v1/push", headers=bearer, json=_push(queue)).status_code == 201
    )


def test_logout_revokes_the_session(proxy: ProxyProcess) -> None:
    cookie = login(proxy.url, "read_only")
    assert _call(proxy, "GET", "/api/me", cookie).json() == {
        "username": "read_only",
        "role": "read-only",
    }
    assert _call(proxy, "POST", "/api/logout", cookie).json() == {"success": True}
    assert _call(proxy, "GET", "/api/me", cookie).status_code == 401
    stale = _call(proxy, "GET", "/api/v1/resources/queues", cookie, headers=SAME_ORIGIN)
    assert stale.status_code == 401


def test_only_session_tokens_open_sessions(proxy: ProxyProcess) -> None:
    now = int(time.time())
    admin_claims = {"id": 1, "username": "admin", "role": "admin", "iat": now, "exp": now + 60}
    forged = {
        "upstream": {**admin_claims, "sub": "1", "purpose": "upstream"},
        "oauth state": {**admin_claims, "nonce": "n", "next": "/"},
        "no role": {"id": 1, "username": "admin", "iat": now, "exp": now + 60},
        "unrecorded jti": {**admin_claims, "jti": str(uuid.uuid4()), "purpose": "session"},
        "other key": admin_claims,
    }
    for label, claims in forged.items():
        key = "another-secret-of-enough-length-000000" if label == "other key" else SECRET
        token = jwt.encode(claims, key, "HS256")
        answer = _call(
            proxy, "GET", "/api/v1/resources/queues", headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401, label
    # A token of the original proxy (no purpose, no jti) still works: existing CLI tokens.
    legacy = jwt.encode(admin_claims, SECRET, "HS256")
    answer = _call(
        proxy, "GET", "/api/v1/resources/queues", headers={"Authorization": f"Bearer {legacy}"}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "/ok\x00",
        "/ok\r\nSet-Cookie: x",
        "https://evil.example/",
        "javascript:alert(1)",
    ],
)
def test_login_refuses_open_redirects(proxy: ProxyProcess, target: str) -> None:
    answer = httpx.post(
        f"{proxy.url}/api/login",
        json={"username": "read_only", "password": "correct horse battery", "redirect_uri": target},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.json()["redirect_uri"] is None


def test_login_keeps_a_local_redirect(proxy: ProxyProcess) -> None:
    answer = httpx.post(
        f"{proxy.url}/api/login",
        json={
            "username": "read_only",
            "password": "correct horse battery",
            "redirect_uri": "/q?x=1",
        },
        timeout=10,
    )
    assert answer.json()["redirect_uri"] == "/q?x=1"


def test_a_large_push_streams_through(proxy: ProxyProcess, service_token: str) -> None:
    headers = {"Authorization": f"Bearer {service_token}"}
    queue = f"bulk_{uuid.uuid4().hex[:8]}"
    blob = "x" * (1536 * 1024)
    pushed = _call(
        proxy, "POST", "/api/v1/push", headers=headers, json=_push(queue, {"blob": blob})
    )
    assert pushed.status_code == 201, pushed.text
    popped = _call(proxy, "GET", f"/api/v1/pop/queue/{queue}?wait=false", headers=headers)
    assert popped.status_code == 200
    assert popped.json()["messages"][0]["data"]["blob"] == blob


def test_websocket_upgrades_are_not_proxied(proxy: ProxyProcess, service_token: str) -> None:
    answer = _call(
        proxy,
        "GET",
        "/ws",
        headers={
            "Authorization": f"Bearer {service_token}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert answer.status_code == 400


def test_bodiless_answers_pass_and_free_the_upstream(
    proxy: ProxyProcess, service_token: str
) -> None:
    headers = {"Authorization": f"Bearer {service_token}"}
    empty = f"/api/v1/pop/queue/empty_{uuid.uuid4().hex[:8]}?wait=false"
    # Repeated on one proxy: answers without a body are relayed without waiting for one.
    for _ in range(3):
        head = _call(proxy, "HEAD", "/api/v1/resources/queues", headers=headers)
        assert head.status_code == 200 and head.content == b""
        assert _call(proxy, "GET", empty, headers=headers).status_code == 204
