"""Test helpers: a throwaway PostgreSQL cluster, fresh databases, and real `queen serve` processes.

Nothing here fakes PostgreSQL or the server: tests talk HTTP to a process started exactly as a user
starts it, against a real cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

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

    return asyncio.run(go())


def create_database(cluster: PgCluster, prefix: str = "queen_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    run_sql(cluster, f'CREATE DATABASE "{name}"')
    return name


@dataclass
class ServerProcess:
    """`queen serve` in a child process, configured through its environment like a real deploy."""

    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="queen-server-", suffix=".log")[1])
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_healthy: bool = True, timeout_s: float = 30.0) -> ServerProcess:
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "NUM_WORKERS": "1",
            "LOG_LEVEL": "info",
            **self.env,
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "queen", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_healthy:
            self.wait_health(200, timeout_s)
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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
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
