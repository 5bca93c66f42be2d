"""Encryption at rest (issue 14, spec §2): the payload column holds the envelope, clients read
plaintext on every read path, rows in the original's envelope (and its Node.js predecessor's)
decrypt, a previous key still reads after a rotation, and no write path (push, transaction,
disk buffer and its replay) stores plaintext for an encrypted queue."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from queen.security.envelope import key_id
from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import (
    ServerProcess,
    maps_cryptography,
    run_sql,
    running_server,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

KEY = os.urandom(32)
PREVIOUS = os.urandom(32)
MARKER = "plaintext-marker-7f3a"


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster,
        database,
        QUEEN_ENCRYPTION_KEY=KEY.hex(),
        QUEEN_ENCRYPTION_PREVIOUS_KEYS=f"{os.urandom(32).hex()},{PREVIOUS.hex().upper()}",
    ) as process:
        yield process


def rows(pg_cluster: PgCluster, database: str, queue: str) -> list[Any]:
    return run_sql(
        pg_cluster,
        "SELECT m.payload::text AS payload, m.is_encrypted FROM queen.messages m"
        " JOIN queen.partitions p ON p.id = m.partition_id"
        " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1 ORDER BY m.seq",
        queue,
        database=database,
    )


def assert_all_sealed(stored: list[Any]) -> None:
    assert stored
    for row in stored:
        envelope = orjson.loads(row["payload"])
        assert row["is_encrypted"] is True
        assert set(envelope) == {"encrypted", "iv", "authTag", "kid"}
        assert envelope["kid"] == key_id(KEY)
        assert len(base64.b64decode(envelope["iv"])) == 16
        assert MARKER not in row["payload"]


async def encrypted_queue(api: Api) -> str:
    queue = unique("sealed")
    status, body = await api.request(
        "POST", "/api/v1/configure", json={"queue": queue, "options": {"encryptionEnabled": True}}
    )
    assert status == 200, body
    return queue


async def test_push_and_transaction_store_envelopes_and_clients_read_plaintext(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    async with Api(server.url) as api:
        queue = await encrypted_queue(api)
        await api.push(queue, [{"secret": MARKER, "n": 1}, "ünïcode " + MARKER])
        status, body = await api.request(
            "POST",
            "/api/v1/transaction",
            json={
                "operations": [
                    {
                        "type": "push",
                        "items": [{"queue": queue, "payload": {"secret": MARKER, "n": 3}}],
                    }
                ]
            },
        )
        assert status == 200 and body["success"], body
        assert_all_sealed(rows(pg_cluster, database, queue))
        popped = await api.pop(queue, batch=10, wait=False)
        assert popped is not None
        assert [m["data"] for m in popped["messages"]] == [
            {"secret": MARKER, "n": 1},
            "ünïcode " + MARKER,
            {"secret": MARKER, "n": 3},
        ]
        first = popped["messages"][0]
        status, detail = await api.request(
            "GET", f"/api/v1/messages/{first['partitionId']}/{first['transactionId']}"
        )
        assert status == 200 and detail["payload"] == {"secret": MARKER, "n": 1}, detail
        trace_name = unique("trace")
        status, _ = await api.request(
            "POST",
            "/api/v1/traces",
            json={
                "transactionId": first["transactionId"],
                "partitionId": first["partitionId"],
                "data": {"step": "seen"},
                "traceNames": [trace_name],
            },
        )
        assert status in (200, 201)
        status, traced = await api.request("GET", f"/api/v1/traces/by-name/{trace_name}")
        assert status == 200, traced
        assert [t["message_payload"] for t in traced["traces"]] == [{"secret": MARKER, "n": 1}]
        status, moved = await api.request(
            "POST",
            f"/api/v1/messages/{first['partitionId']}/{first['transactionId']}/dlq",
            json={"error": "testing"},
        )
        assert status == 200, moved
        status, dead = await api.request("GET", "/api/v1/dlq", params={"queue": queue})
        assert status == 200
        assert [m["data"] for m in dead["messages"]] == [{"secret": MARKER, "n": 1}]


def original_envelope(
    key: bytes, payload: Any, *, full_iv_nonce: bool = False, kid: str | None = None
) -> dict[str, str]:
    """What the C++ original wrote (16-byte iv, its first 12 bytes the nonce, no kid), or with
    `full_iv_nonce` its Node.js predecessor (all 16 bytes the nonce)."""
    iv = os.urandom(16)
    out = AESGCM(key).encrypt(iv if full_iv_nonce else iv[:12], orjson.dumps(payload), None)
    envelope = {
        "encrypted": base64.b64encode(out[:-16]).decode(),
        "iv": base64.b64encode(iv).decode(),
        "authTag": base64.b64encode(out[-16:]).decode(),
    }
    if kid is not None:
        envelope["kid"] = kid
    return envelope


async def test_envelopes_the_original_wrote_decrypt_with_current_and_previous_keys(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique("legacy")
    envelopes = [
        (original_envelope(KEY, {"from": "c++"}), True),
        (original_envelope(KEY, {"from": "node"}, full_iv_nonce=True), True),
        (original_envelope(PREVIOUS, {"from": "rotated"}), True),
        (original_envelope(PREVIOUS, {"from": "rotated+kid"}, kid=key_id(PREVIOUS)), True),
        (original_envelope(KEY, {"from": "flag lost"}), False),
    ]
    items = [
        {"queue": queue, "payload": envelope, "isEncrypted": flagged}
        for envelope, flagged in envelopes
    ]
    run_sql(
        pg_cluster,
        "SELECT queen.push_messages_v2($1::jsonb)",
        orjson.dumps(items).decode(),
        database=database,
    )
    async with Api(server.url) as api:
        popped = await api.pop(queue, batch=10, wait=False)
    assert popped is not None
    assert [m["data"] for m in popped["messages"]] == [
        {"from": "c++"},
        {"from": "node"},
        {"from": "rotated"},
        {"from": "rotated+kid"},
        {"from": "flag lost"},
    ]


def buffered_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in directory.rglob("*") if path.is_file())


async def test_the_disk_buffer_holds_and_replays_only_envelopes(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    buffer_dir = Path(server.env["FILE_BUFFER_DIR"])
    async with Api(server.url) as api:
        queue = await encrypted_queue(api)
        assert (await api.request("POST", "/api/v1/system/maintenance", json={"enabled": True}))[
            0
        ] == 200
        try:
            status, body = await api.request(
                "POST",
                "/api/v1/push",
                json={"items": [{"queue": queue, "payload": {"secret": MARKER}}]},
            )
            assert status == 201 and body[0]["status"] == "buffered", body
            written = buffered_bytes(buffer_dir)
            assert b"isEncrypted" in written
            assert MARKER.encode() not in written
        finally:
            await api.request("POST", "/api/v1/system/maintenance", json={"enabled": False})
        wait_until(lambda: bool(rows(pg_cluster, database, queue)), 30.0, "the replay")
        assert_all_sealed(rows(pg_cluster, database, queue))
        popped = await api.pop(queue, wait=False)
        assert popped is not None and popped["messages"][0]["data"] == {"secret": MARKER}


async def test_a_worker_with_a_key_loads_cryptography(server: ServerProcess) -> None:
    [worker] = server.worker_pids().values()
    assert maps_cryptography(worker)


async def test_without_a_key_an_encrypted_queue_refuses_pushes(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """And the keyless worker (JWT off too) never loads cryptography, plain queues and all
    (issue 20: about 9 MB per worker)."""
    async with Api(server.url) as api:
        queue = await encrypted_queue(api)
    with running_server(pg_cluster, database) as keyless:
        async with Api(keyless.url) as api:
            status, body = await api.request(
                "POST", "/api/v1/push", json={"items": [{"queue": queue, "payload": MARKER}]}
            )
            refusal = f"Queue '{queue}' requires encryption but no encryption key is configured"
            assert (status, body) == (503, {"error": refusal})
            status, body = await api.request(
                "POST",
                "/api/v1/transaction",
                json={
                    "operations": [{"type": "push", "items": [{"queue": queue, "payload": MARKER}]}]
                },
            )
            assert status == 503, body
            plain = unique("plain")
            await api.push(plain, [MARKER])
            popped = await api.pop(plain, wait=False)
            assert popped is not None and popped["messages"][0]["data"] == MARKER
            await api.ack(popped["messages"][0])
        [worker] = keyless.worker_pids().values()
        assert not maps_cryptography(worker)
    assert rows(pg_cluster, database, queue) == []


async def test_a_stale_view_of_the_flag_never_stores_plaintext(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """The server remembers a queue's flag for a few seconds; the push procedure refuses a
    plaintext item for an encrypted queue, and the server then seals it with a fresh view."""
    queue = unique("flipped")
    async with Api(server.url) as api:
        await api.push(queue, [{"before": 1}])  # remembered as not encrypted
        status, _ = await api.request(
            "POST",
            "/api/v1/configure",
            json={"queue": queue, "options": {"encryptionEnabled": True}},
        )
        assert status == 200
        await api.push(queue, [{"secret": MARKER}])
    stored = rows(pg_cluster, database, queue)
    assert [row["is_encrypted"] for row in stored] == [False, True]
    assert_all_sealed(stored[1:])
