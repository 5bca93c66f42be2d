"""The proxy without a broker to forward to: ForwardAuth-only mode answers its descriptor and 404s
(spec §4.1), and a configured broker that does not answer gives 502 (§4.8)."""

from __future__ import annotations

import time

import httpx
import jwt

from queen.storage.pgcluster import PgCluster, free_port
from tests.proxy.support import SECRET, proxy_env, running_proxy


def _bearer() -> dict[str, str]:
    """A token as the original proxy issued them (no jti): valid without a users table row."""
    claims = {"id": 1, "username": "ops", "role": "admin", "exp": int(time.time()) + 600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET)}", "Accept": "application/json"}


def test_forward_auth_only_mode(pg_cluster: PgCluster, database: str) -> None:
    env = {**proxy_env(pg_cluster, database, ""), "FORWARD_AUTH_ENABLED": "true"}
    with running_proxy(env) as proxy:
        bearer = _bearer()
        descriptor = httpx.get(f"{proxy.url}/", headers=bearer, timeout=10)
        assert descriptor.json() == {
            "service": "queen-proxy",
            "mode": "forward-auth-only",
            "forwardAuth": "/api/auth/forward-auth",
            "jwks": "/.well-known/jwks.json",
            "login": "/login",
        }
        other = httpx.get(f"{proxy.url}/api/v1/resources/queues", headers=bearer, timeout=10)
        assert other.status_code == 404
        assert other.json() == {"error": "not_found", "mode": "forward-auth-only"}
        probe = httpx.get(f"{proxy.url}/api/auth/forward-auth", headers=bearer, timeout=10)
        assert probe.status_code == 200


def test_an_unreachable_broker_is_a_bad_gateway(pg_cluster: PgCluster, database: str) -> None:
    env = proxy_env(pg_cluster, database, f"http://127.0.0.1:{free_port()}")
    with running_proxy(env) as proxy:
        answer = httpx.get(f"{proxy.url}/api/v1/resources/queues", headers=_bearer(), timeout=10)
        assert answer.status_code == 502
        assert answer.json() == {"error": "Bad gateway - Queen server unreachable"}
