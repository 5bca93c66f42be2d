"""The access gate with JWT on (issue 14): every attack of the matrix is refused with the spec's
status and text and changes nothing; each key family verifies; producerSub is the token's `sub`
on every push path, whatever the client writes; the proxy's tokens are accepted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration import keys
from tests.integration.api import unique
from tests.support import (
    ServerProcess,
    maps_cryptography,
    run_sql,
    running_server,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

RSA = keys.rsa_key()
OTHER_RSA = keys.rsa_key()
ED = keys.ed_key()
EC = keys.ec_key()


@pytest.fixture(scope="module")
def jwks() -> Iterator[keys.JwksServer]:
    document = {"keys": [keys.jwk(ED, "ed-1", "EdDSA"), keys.jwk(EC, "ec-1", "ES256")]}
    with keys.jwks_server(document) as served:
        yield served


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str, jwks: keys.JwksServer) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster,
        database,
        JWT_ENABLED="true",
        JWT_ALGORITHM="auto",
        JWT_SECRET=keys.SECRET,
        JWT_PUBLIC_KEY=keys.public_pem(RSA),
        JWT_JWKS_URL=jwks.url,
        JWT_ISSUER=f"{keys.ISSUER}, queen-proxy",
        JWT_AUDIENCE=keys.AUDIENCE,
    ) as process:
        yield process


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def push(
    server: ServerProcess, queue: str, headers: dict[str, str], **kwargs: Any
) -> httpx.Response:
    item = {"queue": queue, "payload": {"n": 1}}
    return httpx.post(
        f"{server.url}/api/v1/push", json={"items": [item]}, headers=headers, **kwargs
    )


def stored(pg_cluster: PgCluster, database: str, queue: str) -> list[Any]:
    return run_sql(
        pg_cluster,
        "SELECT m.id::text, m.producer_sub, m.is_encrypted, m.payload FROM queen.messages m"
        " JOIN queen.partitions p ON p.id = m.partition_id"
        " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1 ORDER BY m.seq",
        queue,
        database=database,
    )


def test_the_attack_matrix_is_refused_and_changes_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique("attacked")
    rsa_pem = keys.public_pem(RSA).encode()
    attacks: list[tuple[str, dict[str, str], dict[str, Any], int, str]] = [
        ("no token", {}, {}, 401, "Authentication required"),
        ("garbage", bearer("not.a.token"), {}, 401, "Invalid token"),
        ("alg none", bearer(keys.unsigned_token()), {}, 401, "Invalid token"),
        ("key confusion", bearer(keys.hmac_with(rsa_pem)), {}, 401, "Invalid token"),
        (
            "bad signature",
            bearer(keys.token("another-secret-another-secret-xx")),
            {},
            401,
            "Invalid token",
        ),
        ("expired", bearer(keys.token(exp=int(time.time()) - 3600)), {}, 401, "Token has expired"),
        (
            "not yet valid",
            bearer(keys.token(nbf=int(time.time()) + 3600)),
            {},
            401,
            "Token not yet valid",
        ),
        (
            "wrong issuer",
            bearer(keys.token(iss="https://evil.test")),
            {},
            401,
            "Invalid token issuer",
        ),
        ("wrong audience", bearer(keys.token(aud="other-app")), {}, 401, "Invalid token audience"),
        (
            "unknown kid",
            bearer(keys.token(OTHER_RSA, "RS256", {"kid": "nope"})),
            {},
            401,
            "Invalid token",
        ),
        ("crit header", bearer(keys.token(headers={"crit": ["exp"]})), {}, 401, "Invalid token"),
        (
            "read-only pushing",
            bearer(keys.token(role="read-only")),
            {},
            403,
            "Insufficient permissions",
        ),
        ("no role", bearer(keys.token(role="guest")), {}, 403, "Insufficient permissions"),
        (
            "token in the query",
            {},
            {"params": {"token": keys.token()}},
            401,
            "Authentication required",
        ),
        (
            "token in a cookie",
            {"Cookie": f"token={keys.token()}"},
            {},
            401,
            "Authentication required",
        ),
        ("8 KB header", bearer("x" * 8192), {}, 401, "Invalid token"),
    ]
    for name, headers, kwargs, status, error in attacks:
        response = push(server, queue, headers, **kwargs)
        assert (response.status_code, response.json()) == (status, {"error": error}), name
        if status == 401:
            assert response.headers["www-authenticate"].startswith('Bearer realm="queen"'), name
    assert stored(pg_cluster, database, queue) == []
    assert (
        run_sql(pg_cluster, "SELECT 1 FROM queen.queues WHERE name = $1", queue, database=database)
        == []
    )


def test_levels_are_cumulative_and_admin_routes_need_admin(server: ServerProcess) -> None:
    read_only, read_write = bearer(keys.token(role="read-only")), bearer(keys.token())
    admin = bearer(keys.token(role="admin"))
    url = f"{server.url}/api/v1/system/maintenance"
    assert httpx.get(f"{server.url}/api/v1/resources/queues", headers=read_only).status_code == 200
    refused = httpx.post(url, json={"enabled": True}, headers=read_write)
    assert (refused.status_code, refused.json()) == (403, {"error": "Insufficient permissions"})
    assert httpx.get(url, headers=admin).json()["maintenanceMode"] is False
    assert push(server, unique("rw"), read_write).status_code == 201
    roles_array = bearer(keys.token(role=None, roles=["viewer", "admin"]))
    assert httpx.get(url, headers=roles_array).status_code == 200


def test_public_routes_and_preflight_need_no_token(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200
    preflight = httpx.options(f"{server.url}/api/v1/push", headers={"Origin": "http://x.test"})
    assert preflight.status_code == 204


def test_a_worker_with_jwt_on_loads_pyjwt_and_cryptography(server: ServerProcess) -> None:
    """The other side of test_encryption's keyless worker, which loads neither (issue 20)."""
    [worker] = server.worker_pids().values()
    assert maps_cryptography(worker)


def test_every_key_family_verifies(server: ServerProcess) -> None:
    tokens = {
        "HS256": keys.token(),
        "HS384": keys.token(alg="HS384"),
        "HS512": keys.token(alg="HS512"),
        "RS256 public key": keys.token(RSA, "RS256"),
        "RS512 public key": keys.token(RSA, "RS512"),
        "EdDSA by kid": keys.token(ED, "EdDSA", {"kid": "ed-1"}),
        "ES256 by kid": keys.token(EC, "ES256", {"kid": "ec-1"}),
        "EdDSA without kid": keys.token(ED, "EdDSA"),
    }
    queue = unique("families")

    def all_pass() -> bool:  # the JWKS loads in the background after start
        return all(push(server, queue, bearer(t)).status_code == 201 for t in tokens.values())

    wait_until(all_pass, 15.0, "tokens of every family to verify")


def test_an_unknown_kid_never_waits_for_the_jwks(
    server: ServerProcess, jwks: keys.JwksServer
) -> None:
    jwks.delay_s = 3.0
    try:
        started = time.monotonic()
        response = push(server, unique("slow"), bearer(keys.token(ED, "EdDSA", {"kid": "rotated"})))
        assert response.status_code == 401
        assert time.monotonic() - started < 1.0
    finally:
        jwks.delay_s = 0.0


def test_producer_sub_is_the_token_subject_on_push_and_transaction(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique("stamped")
    forged_id = str(uuid.uuid4())
    forged = {"producerSub": "mallory", "isEncrypted": True, "messageId": forged_id}
    headers = bearer(keys.token(sub="alice"))
    response = httpx.post(
        f"{server.url}/api/v1/push",
        json={"items": [{"queue": queue, "payload": {"via": "push"}, **forged}]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    response = httpx.post(
        f"{server.url}/api/v1/transaction",
        json={
            "operations": [
                {
                    "type": "push",
                    "items": [{"queue": queue, "payload": {"via": "transaction"}, **forged}],
                }
            ]
        },
        headers=headers,
    )
    assert response.status_code == 200 and response.json()["success"], response.text
    # The proxy's minted upstream token (spec §4.10) and its session token (numeric id, no sub).
    proxy_minted = keys.token(
        sub="7",
        role="read-write",
        iss="queen-proxy",
        email="bob@example.test",
        preferred_username="bob",
        purpose="upstream",
        headers={"typ": "JWT"},
    )
    assert push(server, queue, bearer(proxy_minted)).status_code == 201
    numeric = keys.token(sub=42)
    assert push(server, queue, bearer(numeric)).status_code == 201
    session = keys.token(sub=None, id=5, username="carol", purpose="session")
    assert push(server, queue, bearer(session)).status_code == 201
    rows = stored(pg_cluster, database, queue)
    assert [(row["producer_sub"], row["is_encrypted"]) for row in rows] == [
        ("alice", False),
        ("alice", False),
        ("7", False),
        ("42", False),
        (None, False),
    ]
    assert forged_id not in {row["id"] for row in rows}


async def test_many_requests_with_one_token_verify_once(server: ServerProcess) -> None:
    """The verified-token cache: a burst of requests with one token all pass."""
    headers = bearer(keys.token())
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:

        async def one() -> None:
            response = await client.get("/api/v1/resources/queues")
            assert response.status_code == 200

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)


def test_a_token_from_queen_token_is_accepted(server: ServerProcess) -> None:
    """The operator's path: `queen token` with the server's secret, issuer and audience."""
    env = {
        **os.environ,
        "JWT_SECRET": keys.SECRET,
        "JWT_ISSUER": f"{keys.ISSUER}, queen-proxy",
        "JWT_AUDIENCE": keys.AUDIENCE,
    }
    minted = subprocess.run(
        [sys.executable, "-m", "queen", "token", "--sub", "ops-cli", "--expires", "10m"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert push(server, unique("cli"), bearer(minted)).status_code == 201
    assert push(server, unique("cli"), {}).status_code == 401
