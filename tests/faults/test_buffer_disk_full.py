"""The disk buffer runs out of room during a PostgreSQL outage: the push that could not be written
is told so, and every push answered "buffered" before and after it is delivered exactly once when
the database is back.

The buffer lives on a real 64 KiB tmpfs the test mounts (as root, as CI runs), filled by a file of
the test's own until a push is cut short mid-write, then emptied again.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from queen.storage.file_buffer import BufferDirectory, encode_records, read_records
from queen.storage.pgcluster import PgCluster
from tests.faults.harness import PAGE, fill_disk, mounted_tmpfs, new_database, wait_drained
from tests.integration.api import Api, unique
from tests.support import ServerProcess, buffered_record, server_env

pytestmark = pytest.mark.faults


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    with mounted_tmpfs(tmp_path / "disk", "64k") as mount:
        yield mount


def test_a_failed_append_is_cut_off_and_writing_goes_on_in_a_new_file(tiny_disk: Path) -> None:
    directory = BufferDirectory(tiny_disk / "w0", lock=False)
    directory.open()
    try:
        directory.append(encode_records([buffered_record("a1"), buffered_record("a2")]), 2)
        filler = fill_disk(tiny_disk, leave_pages=1)
        with pytest.raises(OSError) as refused:
            directory.append(encode_records([buffered_record("c", "x" * 3 * PAGE)]), 1)
        files_after_failure = sorted(p.name for p in directory.path.iterdir() if p.is_file())
        filler.unlink()
        directory.append(encode_records([buffered_record("b1")]), 1)
        directory.finalize_active()
        replayable = directory.replayable_files()
        replayed = [r["transactionId"] for p in replayable for r in read_records(p)]
    finally:
        directory.close()
    print(
        f"\n[failed-append] error={refused.value} files_after_failure={files_after_failure} "
        f"files={[p.name for p in replayable]} records={replayed} pending={directory.pending}"
    )
    assert refused.value.errno == errno.ENOSPC
    assert len(files_after_failure) == 1 and files_after_failure[0].endswith(".buf"), (
        "the file the append failed in is retired at once"
    )
    assert len(replayable) == 2, "what follows the failure goes to a new file"
    assert replayed == ["a1", "a2", "b1"], "the torn record was cut off"
    assert directory.pending == 3


async def push(client: httpx.AsyncClient, queue: str, txid: str, payload: Any) -> httpx.Response:
    item = {"queue": queue, "transactionId": txid, "payload": payload}
    return await client.post("/api/v1/push", json={"items": [item]})


async def test_disk_full_during_an_outage_loses_no_acknowledged_push(
    own_cluster: PgCluster, tiny_disk: Path
) -> None:
    cluster = own_cluster
    database = await new_database(cluster)
    # Replay cycles 2 s apart: the active file, idle for 4 s before it is finalized, is still
    # the one written to when the disk fills (as with a steady trickle of pushes).
    env = server_env(
        cluster, database, FILE_BUFFER_DIR=str(tiny_disk / "buffer"), FILE_BUFFER_FLUSH_MS="2000"
    )
    server = ServerProcess(env).start()
    queue = unique("diskfull")
    answers: dict[str, tuple[int, list[str]]] = {}
    retry_after: dict[str, str | None] = {}

    async def send(client: httpx.AsyncClient, txid: str, payload: Any = None) -> None:
        response = await push(client, queue, txid, {"tx": txid} if payload is None else payload)
        answers[txid] = (response.status_code, [r["status"] for r in response.json()])
        retry_after[txid] = response.headers.get("Retry-After")

    try:
        async with Api(server.url) as api:
            await trio.to_thread.run_sync(cluster.stop)
            for txid in ("a1", "a2", "a3"):
                await send(api.client, txid)
            filler = await trio.to_thread.run_sync(fill_disk, tiny_disk, 1)
            await send(api.client, "c", {"blob": "x" * 3 * PAGE})
            await trio.to_thread.run_sync(filler.unlink)
            for txid in ("b1", "b2", "b3"):
                await send(api.client, txid)
            files_in_outage = sorted(p.name for p in (tiny_disk / "buffer").rglob("*.buf*"))
            await trio.to_thread.run_sync(cluster.start)
            acknowledged = {t for t, (status, _) in answers.items() if status == 201}
            rows = await wait_drained(
                api.client, cluster, database, queue, expected=acknowledged, timeout_s=60
            )
            popped = await api.pop(queue, batch=20)
    finally:
        server.stop()
    delivered = [m["transactionId"] for m in popped["messages"]] if popped else []
    print(
        f"\n[disk-full-outage] answers={answers} files_in_outage={files_in_outage} "
        f"stored={dict(rows)} delivered={delivered}"
    )
    assert answers["c"] == (503, ["failed"]), "the push that was not written is told to retry"
    assert retry_after["c"] == "1"
    assert acknowledged == {"a1", "a2", "a3", "b1", "b2", "b3"}
    assert all(statuses == ["buffered"] for t, (_, statuses) in answers.items() if t != "c")
    assert rows == Counter(dict.fromkeys(acknowledged, 1)), "each exactly once, nothing else"
    assert delivered == ["a1", "a2", "a3", "b1", "b2", "b3"], "in the order they were buffered"


async def test_an_oversized_push_is_refused_alone_during_an_outage(own_cluster: PgCluster) -> None:
    cluster = own_cluster
    database = await new_database(cluster)
    server = ServerProcess(server_env(cluster, database)).start()
    queue = unique("oversized")
    answers: dict[str, httpx.Response] = {}
    small = [f"s{n}" for n in range(6)]

    async def send(client: httpx.AsyncClient, txid: str, payload: Any) -> None:
        answers[txid] = await push(client, queue, txid, payload)

    try:
        async with Api(server.url, timeout_s=60) as api:
            await trio.to_thread.run_sync(cluster.stop)
            await send(api.client, "first", {"tx": "first"})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send, api.client, "huge", {"blob": "x" * (11 * 1024 * 1024)})
                for txid in small:
                    nursery.start_soon(send, api.client, txid, {"tx": txid})
            await trio.to_thread.run_sync(cluster.start)
            rows = await wait_drained(
                api.client, cluster, database, queue, expected={"first", *small}, timeout_s=60
            )
    finally:
        server.stop()
    huge = answers.pop("huge")
    print(
        f"\n[oversized-outage] huge={huge.status_code} {huge.text[:160]} "
        f"others={ {t: r.status_code for t, r in answers.items()} } stored={dict(rows)}"
    )
    assert huge.status_code == 413
    assert set(huge.json()) == {"error"} and "at most" in huge.json()["error"]
    assert all(r.status_code == 201 for r in answers.values())
    assert rows == Counter(dict.fromkeys(["first", *small], 1))
