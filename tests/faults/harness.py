"""Counting harness for the fault tests: push loads that remember what every client was told,
the database's own count of what it stored, and the figures each test prints.

Zero message loss is a statement about two ledgers: the client's (every message answered 2xx,
per transactionId) and PostgreSQL's (rows in queen.messages). Every fault test builds both and
compares them message by message, so a loss or a duplicate names the transactionId involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import httpx
import trio

from queen.storage.file_buffer import count_records
from queen.storage.pgcluster import PgCluster
from tests.support import (
    ServerProcess,
    create_database,
    descendants,
    run_sql,
    sessions_waiting_for_a_lock,
)

RETRY_PAUSE_S = 0.05


@dataclass
class Ledger:
    """What the clients sent and what the server answered, per transactionId."""

    attempted: set[str] = field(default_factory=set)
    acknowledged: dict[str, str] = field(default_factory=dict)  # txid -> item status of the 2xx
    buffered_at: dict[str, float] = field(default_factory=dict)  # txid -> when it was buffered
    unanswered: set[str] = field(default_factory=set)  # sent, no answer ever received
    failed: set[str] = field(default_factory=set)  # given up after a non-2xx answer
    requests: int = 0
    retries: int = 0
    http_codes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[float, int, list[str]]] = field(default_factory=list)
    slowest_s: float = 0.0  # longest a single request waited for its answer (or its error)

    @property
    def buffered(self) -> int:
        return sum(status == "buffered" for status in self.acknowledged.values())

    def statuses(self) -> Counter[str]:
        return Counter(self.acknowledged.values())


async def push_batch(
    client: httpx.AsyncClient,
    queue: str,
    txids: list[str],
    ledger: Ledger,
    *,
    partition: str = "Default",
    retry_until: float | None = None,
) -> None:
    """Push one request; retry it with the same transactionIds (so a retry of a push that did
    commit is a duplicate, never a second copy) on transport errors and 5xx until `retry_until`."""
    items = [
        {"queue": queue, "partition": partition, "transactionId": t, "payload": {"tx": t}}
        for t in txids
    ]
    ledger.attempted.update(txids)
    while True:
        ledger.requests += 1
        sent = time.monotonic()
        try:
            response = await client.post("/api/v1/push", json={"items": items})
        except httpx.TransportError as error:
            ledger.errors[type(error).__name__] += 1
            outcome = None
        else:
            ledger.http_codes[response.status_code] += 1
            outcome = response
        ledger.slowest_s = max(ledger.slowest_s, time.monotonic() - sent)
        if outcome is not None and outcome.status_code in (200, 201):
            body = outcome.json()
            now = time.monotonic()
            ledger.answers.append((now, outcome.status_code, [r["status"] for r in body]))
            for txid, result in zip(txids, body, strict=True):
                ledger.acknowledged[txid] = result["status"]
                if result["status"] == "buffered":
                    ledger.buffered_at[txid] = now
            ledger.unanswered.difference_update(txids)
            return
        if outcome is not None and outcome.status_code < 500:
            ledger.failed.update(txids)
            return
        if outcome is None:
            ledger.unanswered.update(txids)
        if retry_until is None or time.monotonic() > retry_until:
            if outcome is not None:
                ledger.failed.update(txids)
            return
        ledger.retries += 1
        await trio.sleep(RETRY_PAUSE_S)  # pacing between retries, not a wait for a condition


async def push_load(
    url: str,
    queue: str,
    ledger: Ledger,
    stop: trio.Event,
    *,
    tag: str,
    producers: int = 4,
    batch: int = 2,
    max_messages: int = 600,
    pace_s: float = 0.03,
    retry_s: float | None = None,
    partitions: int = 1,
) -> None:
    """`producers` clients pushing `batch` messages per request every `pace_s` until `stop` is set
    or `max_messages` were sent; transactionIds are `<tag>-<producer>-<n>`."""
    per_producer = max_messages // producers // batch

    async def producer(index: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            for n in range(per_producer):
                if stop.is_set():
                    return
                txids = [f"{tag}-{index}-{n}-{k}" for k in range(batch)]
                retry_until = None if retry_s is None else time.monotonic() + retry_s
                await push_batch(
                    client,
                    queue,
                    txids,
                    ledger,
                    partition=f"p{(index + n) % partitions}",
                    retry_until=retry_until,
                )
                await trio.sleep(pace_s)  # the load's rate

    async with trio.open_nursery() as nursery:
        for index in range(producers):
            nursery.start_soon(producer, index)


def stored(cluster: PgCluster, database: str, queue: str) -> Counter[str]:
    """transactionId -> number of rows of `queue` in queen.messages (dedup is per partition, so
    a count above 1 is a duplicate only when the transactionIds are unique per queue: ours are)."""
    rows = run_sql(
        cluster,
        "SELECT m.transaction_id, count(*) AS n FROM queen.messages m "
        "JOIN queen.partitions p ON p.id = m.partition_id "
        "JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1 GROUP BY 1",
        queue,
        database=database,
    )
    return Counter({row["transaction_id"]: row["n"] for row in rows})


async def stored_async(cluster: PgCluster, database: str, queue: str) -> Counter[str]:
    return await trio.to_thread.run_sync(stored, cluster, database, queue)


async def sql(cluster: PgCluster, query: str, *args: Any, database: str | None = None) -> Any:
    """run_sql from a trio test, in a worker thread: a blocking query on the trio loop would
    stall the load the test is measuring, and asyncio.run inside trio is refused under the loop
    policy trio_asyncio installs once any collected module imports it."""
    return await trio.to_thread.run_sync(partial(run_sql, cluster, query, *args, database=database))


async def new_database(cluster: PgCluster) -> str:
    """create_database from a trio test (see `sql`)."""
    return await trio.to_thread.run_sync(create_database, cluster)


def report(name: str, ledger: Ledger, rows: Counter[str], **extra: Any) -> dict[str, Any]:
    """Compare the two ledgers, print the figures, and return them for the assertions."""
    acknowledged = set(ledger.acknowledged)
    figures: dict[str, Any] = {
        "pushed": len(ledger.attempted),
        "acknowledged": len(acknowledged),
        "buffered": ledger.buffered,
        "stored": sum(rows.values()),
        "distinct_stored": len(rows),
        "duplicates": sum(n - 1 for n in rows.values() if n > 1),
        "lost": len(acknowledged - set(rows)),
        "unanswered": len(ledger.unanswered),
        "unanswered_stored": len(ledger.unanswered & set(rows)),
        "failed": len(ledger.failed),
        "strangers": len(set(rows) - ledger.attempted),
        "requests": ledger.requests,
        "retries": ledger.retries,
        "slowest_answer_s": round(ledger.slowest_s, 2),
        "statuses": dict(ledger.statuses()),
        "http": dict(ledger.http_codes),
        "transport_errors": dict(ledger.errors),
        **extra,
    }
    print(f"\n[{name}] " + " ".join(f"{key}={value}" for key, value in figures.items()))
    return figures


def assert_exactly_once(ledger: Ledger, rows: Counter[str]) -> None:
    """Every acknowledged message stored exactly once, nothing stored that nobody sent."""
    lost = sorted(set(ledger.acknowledged) - set(rows))
    assert not lost, f"{len(lost)} acknowledged messages are not stored, e.g. {lost[:5]}"
    doubled = sorted(t for t, n in rows.items() if n > 1)
    assert not doubled, f"{len(doubled)} messages are stored more than once, e.g. {doubled[:5]}"
    strangers = sorted(set(rows) - ledger.attempted)
    assert not strangers, f"stored but never sent: {strangers[:5]}"


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout_s: float,
    what: str,
    every_s: float = 0.05,
) -> None:
    """Poll a condition (plain or async) until it holds; fail naming `what` after `timeout_s`."""
    with trio.move_on_after(timeout_s):
        while True:
            outcome = condition()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await trio.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


async def buffer_state(client: httpx.AsyncClient) -> dict[str, Any] | None:
    """GET /api/v1/system/maintenance, or None while the server cannot answer it."""
    try:
        response = await client.get("/api/v1/system/maintenance")
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body


async def wait_drained(
    client: httpx.AsyncClient,
    cluster: PgCluster,
    database: str,
    queue: str,
    *,
    expected: set[str],
    timeout_s: float = 30.0,
) -> Counter[str]:
    """Wait for bufferedMessages to reach 0 and for every expected transactionId to be stored."""

    async def buffer_empty() -> bool:
        state = await buffer_state(client)
        return state is not None and state["bufferedMessages"] == 0

    await eventually(buffer_empty, timeout_s, "bufferedMessages to reach 0")
    rows: Counter[str] = Counter()

    async def all_stored() -> bool:
        nonlocal rows
        rows = await stored_async(cluster, database, queue)
        return expected <= set(rows)

    # On a timeout the caller's exactly-once assertion names the missing ones.
    with contextlib.suppress(TimeoutError):
        await eventually(all_stored, timeout_s, "every acknowledged message in queen.messages")
    return rows


def buffer_files(root: Path) -> dict[str, int]:
    """How many buffer files of each kind sit under a FILE_BUFFER_DIR (all worker subdirs)."""
    kinds: Counter[str] = Counter()
    for path in root.rglob("*.buf*"):
        where = "failed" if path.parent.name == "failed" else "main"
        kinds[f"{where}{'.tmp' if path.name.endswith('.tmp') else ''}"] += 1
    return dict(kinds)


def records_on_disk(root: Path) -> int:
    """Records framed in every buffer file under a FILE_BUFFER_DIR, failed/ included."""
    return sum(count_records(path) for path in root.rglob("*.buf*"))


async def served_by(url: str, worker: int) -> bool:
    """A fresh connection (SO_REUSEPORT picks the worker per connection) landed on `worker`."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=3.0) as client:
            response = await client.get("/health")
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json()["worker_id"] == worker


def sigkill_server(server: ServerProcess) -> list[int]:
    """SIGKILL a `queen serve` process and all its workers at once, as a power cut would (the
    workers run in sessions of their own, so a process-group kill would miss them)."""
    victims = [server.pid, *(child.pid for child in descendants(server.pid))]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2 :].split()[0] != "Z"


class HeldRowLock:
    """A test session holding `SELECT ... FOR UPDATE` open (asyncpg needs asyncio, so it lives in
    a thread of its own) until the `with` block ends."""

    def __init__(self, cluster: PgCluster, database: str, sql: str, *args: Any) -> None:
        self.parts = {**cluster.dsn_parts(), "database": database}
        self.sql, self.args = sql, args
        self.locked, self.release = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        try:
            conn = await asyncpg.connect(**self.parts)
            try:
                async with conn.transaction():
                    await conn.execute(self.sql, *self.args)
                    self.locked.set()
                    await asyncio.get_running_loop().run_in_executor(None, self.release.wait)
                    raise asyncio.CancelledError  # roll back: the lock was all we wanted
            finally:
                await conn.close()
        except asyncio.CancelledError:
            pass
        except BaseException as error:
            self.error = error
            self.locked.set()

    def __enter__(self) -> HeldRowLock:
        self.thread.start()
        self.locked.wait(10)
        if self.error is not None:
            raise self.error
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        self.thread.join(10)


_TERMINATE_WORKER_BACKENDS = (
    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
    "WHERE application_name LIKE 'queen-w%' AND datname = $1"
)
KILL_EVERY_S = 0.15
# The rows of a queue's partitions, by name ($1 the queue, $2 the names): a transaction or a
# streaming cycle acking from one of them waits on this lock with its earlier statements applied.
LOCK_PARTITIONS = (
    "SELECT 1 FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id "
    "WHERE q.name = $1 AND p.name = ANY ($2::text[]) FOR UPDATE OF p"
)


async def terminate_worker_backends(cluster: PgCluster, database: str) -> int:
    """Drop every connection the server's workers hold to `database`; how many there were."""
    rows = await sql(cluster, _TERMINATE_WORKER_BACKENDS, database)
    return int(rows[0]["n"])


async def dropped_while_blocked(
    cluster: PgCluster,
    database: str,
    attempts: dict[str, Callable[[], Awaitable[str]]],
    rows_to_lock: tuple[str, tuple[Any, ...]],
    before_drop: Callable[[], Awaitable[None]] | None = None,
) -> tuple[dict[str, str], int]:
    """Start every attempt while a test session holds `rows_to_lock` (SQL, arguments) FOR
    UPDATE; once each attempt's server session waits on that lock inside PostgreSQL (its earlier
    statements applied, uncommitted), run `before_drop` and terminate the workers' backends.
    The attempts' first outcomes, and the backends terminated."""
    outcomes: dict[str, str] = {}
    query, args = rows_to_lock
    with HeldRowLock(cluster, database, query, *args):
        async with trio.open_nursery() as nursery:

            async def attempt(name: str) -> None:
                outcomes[name] = await attempts[name]()

            for name in attempts:
                nursery.start_soon(attempt, name)

            async def all_waiting() -> bool:
                waiting = await trio.to_thread.run_sync(
                    sessions_waiting_for_a_lock, cluster, database, "queen-w%"
                )
                return waiting == len(attempts)

            await eventually(all_waiting, 10, "every attempt blocked inside PostgreSQL")
            if before_drop is not None:
                await before_drop()
            terminated = await terminate_worker_backends(cluster, database)
    return outcomes, terminated


async def run_under_fire(
    cluster: PgCluster,
    database: str,
    url: str,
    names: list[str],
    attempt: Callable[[httpx.AsyncClient, str], Awaitable[str]],
    *,
    timeout_s: float,
) -> tuple[dict[str, str], int]:
    """Run `attempt` for every name, four clients at a time, while the workers' backends are
    terminated every KILL_EVERY_S; each name's outcome, and the backends terminated."""
    settled: dict[str, str] = {}
    terminated = 0
    done = trio.Event()

    async def killer() -> None:
        nonlocal terminated
        while not done.is_set():
            await trio.sleep(KILL_EVERY_S)  # the fault's cadence
            terminated += await terminate_worker_backends(cluster, database)

    async def client(chunk: list[str]) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as own:
            for name in chunk:
                settled[name] = await attempt(own, name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(killer)
        async with trio.open_nursery() as clients:
            for k in range(4):
                clients.start_soon(client, names[k::4])
        done.set()
    return settled, terminated


PAGE = 4096


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount syntax: "64k", "2m") at `mount` for the block: a disk a test can
    fill for real. Needs root (CI runs as root); the caller skips otherwise."""
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        # Lazily if something still holds a file there: the mount must never outlive the test.
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill_disk(disk: Path, leave_pages: int) -> Path:
    """Take every free page of `disk` but `leave_pages`, with a file the caller deletes to free
    them again."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * PAGE)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave_pages * PAGE))
    os.close(fd)
    return filler


def rss_mib(pid: int) -> float | None:
    """Resident set size of a live process in MiB (VmRSS), None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None
