"""`python -m ops.cluster`, the three-instance demo of docs/cluster.md, does what the page says:
three instances on one PostgreSQL, and a push on one wakes a consumer on another at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from queen.storage.pgcluster import PgCluster, free_port
from tests.integration.api import Api
from tests.integration.cluster_helpers import free_udp_port, one_wake
from tests.support import REPO, SLOW_RECHECK, server_env

READY_TIMEOUT_S = 90


@pytest.fixture
def demo(pg_cluster: PgCluster, database: str) -> Iterator[tuple[list[str], Path]]:
    """The script running (its instances' URLs and its work directory); stopped with Ctrl-C."""
    ports = [free_port() for _ in range(3)]
    udp_ports = [free_udp_port("127.0.0.1") for _ in range(3)]
    pg_env = {k: v for k, v in server_env(pg_cluster, database).items() if k.startswith("PG_")}
    workdir = Path(tempfile.mkdtemp(prefix="queen-ops-cluster-"))
    argv = [sys.executable, "-m", "ops.cluster", "--workdir", str(workdir)]
    argv += ["--ports", ",".join(map(str, ports)), "--udp-ports", ",".join(map(str, udp_ports))]
    script = subprocess.Popen(
        argv,
        cwd=REPO,
        env={**os.environ, **pg_env, **SLOW_RECHECK, "NUM_WORKERS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert script.stdout is not None
        line = script.stdout.readline()  # the script gives up (and exits) by READY_TIMEOUT_S
        assert line.startswith(b"ready "), (line, script.poll())
        yield line.decode().split()[1:], workdir
    finally:
        script.send_signal(signal.SIGINT)
        assert script.wait(READY_TIMEOUT_S) == 0


@pytest.mark.timeout(150)
async def test_the_demo_script_starts_three_instances_that_wake_each_other(
    demo: tuple[list[str], Path],
) -> None:
    urls, workdir = demo
    assert len(urls) == 3
    async with Api(urls[0]) as producer, Api(urls[2]) as consumer:
        latency, _, ids = await one_wake(producer, consumer)
    assert len(ids) == 1 and latency < 1.0  # the pop's own re-check is 5 s away
    assert all((workdir / f"instance-{index}.log").exists() for index in range(3))
