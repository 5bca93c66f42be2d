"""Test helpers: a throwaway PostgreSQL cluster, fresh databases, and real `queen serve` processes.

Nothing here fakes PostgreSQL or the server: tests talk HTTP to a process started exactly as a user
starts it, against a real cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from queen.storage import migrations
from queen.storage.pgcluster import PgCluster, find_bindir, free_port

REPO = Path(__file__).resolve().parent.parent


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def start_test_cluster(bindir: str | None = None) -> PgCluster:
    root = Path(tempfile.mkdtemp(prefix="queen-test-pg-"))
    os.chmod(root, 0o711)
    cluster = PgCluster(
        data_dir=root / "data",
        bindir=find_bindir(bindir),
        settings={"fsync": "off", "full_page_writes": "off", "max_connections": "400"},
    )
    cluster.start()
    return cluster


def remove_test_cluster(cluster: PgCluster) -> None:
    """Stop a cluster made by start_test_cluster and delete its directory."""
    cluster.stop()
    shutil.rmtree(cluster.data_dir.parent, ignore_errors=True)


def run_sql(cluster: PgCluster, sql: str, *args: Any, database: str | None = None) -> Any:
    async def go() -> Any:
        parts = cluster.dsn_parts()
        if database:
            parts["database"] = database
        conn = await asyncpg.connect(**parts)  # type: ignore[arg-type]
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    # A thread and a loop of our own: trio-asyncio, once imported, patches asyncio's running-loop
    # lookup in the thread that runs trio, so asyncio.run() inside a trio test fails there.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, go()).result()


def sessions_waiting_for_a_lock(
    cluster: PgCluster, database: str, application_name: str = "%"
) -> int:
    """Sessions on `database` whose application_name is LIKE `application_name` that are waiting
    for a lock right now: how a test knows the server's call reached the lock it holds."""
    rows = run_sql(
        cluster,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 "
        "AND application_name LIKE $2 AND wait_event_type = 'Lock'",
        database,
        application_name,
    )
    return int(rows[0]["n"])


def schema_state(cluster: PgCluster, database: str | None = None) -> dict[str, Any] | None:
    """What the migration runner recorded (release, function-file checksums, when), or None when
    the schema is not there yet."""
    try:
        rows = run_sql(
            cluster,
            "SELECT release, functions::text AS functions, migrated_at FROM queen.schema_version",
            database=database,
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None
    if not rows:
        return None
    return {
        "release": rows[0]["release"],
        "functions": json.loads(rows[0]["functions"]),
        "migrated_at": rows[0]["migrated_at"],
    }


def schema_is_current(state: dict[str, Any] | None) -> bool:
    """The database carries exactly the SQL this checkout ships."""
    tree = migrations.shipped()
    return (
        state is not None
        and state["release"] == tree.release
        and state["functions"] == tree.function_checksums()
    )


def buffered_record(txid: str, payload: Any = None, partition: str = "Default") -> dict[str, Any]:
    """A disk-buffer record as the push path writes one (the original's field names)."""
    return {
        "queue": "q",
        "partition": partition,
        "payload": {"tx": txid} if payload is None else payload,
        "transactionId": txid,
        "failover": True,
    }


def create_database(cluster: PgCluster, prefix: str = "queen_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_sql(cluster, f'CREATE DATABASE "{name}"')
    return name


@dataclass
class ChildProcess:
    """A queen command in a child process of its own session, configured through its environment
    like a real deploy, its output in a log file the tests can quote when it fails."""

    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, argv: list[str], env: Mapping[str, str]) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


class ServerProcess(ChildProcess):
    """`queen serve`."""

    def start(self, wait_healthy: bool = True, timeout_s: float = 30.0) -> ServerProcess:
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "NUM_WORKERS": "1",
            "LOG_LEVEL": "info",
            **self.env,
        }
        self.spawn([sys.executable, "-m", "queen", "serve"], env)
        if wait_healthy:
            try:
                self.wait_health(200, timeout_s)
            except BaseException:
                self.stop()  # a server that never became healthy is not left running
                raise
        return self

    def health_status(self) -> int | None:
        try:
            return httpx.get(f"{self.url}/health", timeout=3.0).status_code
        except httpx.HTTPError:
            return None

    def wait_health(self, status: int, timeout_s: float = 30.0) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            return self.health_status() == status

        wait_until(ready, timeout_s, f"/health to answer {status}", every_s=0.1)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid, read from the process table (workers run `queen worker`)."""
        workers: dict[int, int] = {}
        for info in self.scan_workers(self.pid):
            argv = info.cmdline.split("\0")
            workers[int(argv[argv.index("--index") + 1])] = info.pid
        return workers

    @staticmethod
    def scan_workers(server_pid: int) -> list[ProcessInfo]:
        """Live `queen worker` processes started by `server_pid`, even after it is gone."""
        found = []
        for info in processes_matching("--parent"):
            argv = info.cmdline.split("\0")
            if argv[argv.index("--parent") + 1 :][:1] == [str(server_pid)] and "--index" in argv:
                found.append(info)
        return found

    def stop(self, timeout_s: float = 20.0) -> int | None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        tree = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            # Workers and PostgreSQL run in sessions of their own: kill the tree, not a group.
            for info in [*tree, *descendants(process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.pid, signal.SIGKILL)
            process.kill()
            process.wait()
            raise


def server_env(cluster: PgCluster, database: str, **extra: str) -> dict[str, str]:
    parts = cluster.dsn_parts()
    return {
        "PG_HOST": str(parts["host"]),
        "PG_PORT": str(parts["port"]),
        "PG_USER": str(parts["user"]),
        "PG_PASSWORD": str(parts["password"]),
        "PG_DB": database,
        "FILE_BUFFER_DIR": tempfile.mkdtemp(prefix="queen-buf-"),
        **extra,
    }


@dataclass(frozen=True)
class ProcessInfo:
    """One /proc entry; `started` (clock ticks since boot) tells a reused pid from the original."""

    pid: int
    ppid: int
    state: str
    started: int
    cmdline: str  # arguments joined by NUL, as in /proc/<pid>/cmdline


def _read_process(pid: int) -> ProcessInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return ProcessInfo(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0],
        started=int(fields[19]),
        cmdline=cmdline.rstrip(b"\0").decode(errors="replace"),
    )


def processes() -> list[ProcessInfo]:
    """Every live process; zombies are left out, an orphan's corpse holds and serves nothing."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _read_process(int(entry))
            if info is not None and info.state != "Z":
                found.append(info)
    return found


def processes_matching(text: str) -> list[ProcessInfo]:
    return [info for info in processes() if text in info.cmdline]


def descendants(root_pid: int) -> list[ProcessInfo]:
    """The live processes below `root_pid` (children, their children, ...)."""
    children: dict[int, list[ProcessInfo]] = {}
    for info in processes():
        children.setdefault(info.ppid, []).append(info)
    found: list[ProcessInfo] = []
    stack = [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def maps_cryptography(pid: int) -> bool:
    """Whether a live process has cryptography's compiled core mapped: a worker loads it for
    AES-GCM keys and through PyJWT (which imports it whenever it is installed)."""
    return "cryptography/hazmat/bindings/_rust" in Path(f"/proc/{pid}/maps").read_text()


def alive(pid: int) -> bool:
    info = _read_process(pid)
    return info is not None and info.state != "Z"


def still_running(snapshot: Iterable[ProcessInfo]) -> list[ProcessInfo]:
    """Those of `snapshot` that are still alive (same pid *and* same start time)."""
    alive = []
    for info in snapshot:
        now = _read_process(info.pid)
        if now is not None and now.started == info.started and now.state != "Z":
            alive.append(now)
    return alive


class PausableProxy:
    """A TCP relay to PostgreSQL that a test can pause, to keep database calls in flight for as
    long as it needs without touching the server itself.

    While paused, bytes are read but held; `stalled(marker)` counts the client connections whose
    start-up packet contains `marker` (e.g. an application_name) and that hold unsent bytes.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def stalled(self, marker: bytes) -> int:
        with self._lock:
            return sum(1 for link in self._links if marker in link.startup and link.held > 0)

    def drop(self) -> int:
        """Break every open connection at once, as a network fault would, and keep accepting new
        ones; returns how many were broken."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
        return len(links)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._flowing.set()
        with self._lock:
            for link in self._links:
                link.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
            for source, sink, record in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(link, source, sink, record), daemon=True
                ).start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record and not link.startup:
                    link.startup = data
                if not self._flowing.is_set():
                    with self._lock:
                        link.held += len(data)
                    self._flowing.wait()
                    with self._lock:
                        link.held -= len(data)
                sink.sendall(data)
        except OSError:
            pass
        link.close()


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket
    startup: bytes = b""
    held: int = 0

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


# Parked long-polls re-check only every 5 s on their own under these settings, so a waiting pop
# answered well inside that window was woken by whatever the test did.
SLOW_RECHECK = {"POP_WAIT_INITIAL_INTERVAL_MS": "5000", "POP_WAIT_MAX_INTERVAL_MS": "5000"}


@contextlib.contextmanager
def running_server(cluster: PgCluster, database: str, **env: str) -> Iterator[ServerProcess]:
    """A healthy `queen serve` on `database` for the duration of the block."""
    process = ServerProcess(server_env(cluster, database, **env)).start()
    try:
        yield process
    finally:
        process.stop()
