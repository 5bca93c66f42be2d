"""The image's command, run on this machine as the container would run it: ENTRYPOINT + CMD of the
Dockerfile's final stage, in a clean environment made of exactly the variables the image sets
(there is no Docker engine here). It must start, pass the image's own HEALTHCHECK command and the
chart's probes, drain a parked long-poll on SIGTERM and exit 0 leaving no process behind.

Two things differ from a container, each for a reason: the image's absolute paths are re-rooted
under a temporary directory (this machine's /var/lib/queen belongs to nobody's test), and PORT is
a free port (tests never use 6632). The image alone runs an embedded PostgreSQL (`docker run` as a
try-out); with PG_* pointing at a server, as compose, the chart and the unit do, it is a broker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from queen.storage.pgcluster import PgCluster, free_port
from tests.deploy import artifacts
from tests.support import ProcessInfo, descendants, server_env, still_running, wait_until

STOP_BOUND_S = 30.0  # the chart's terminationGracePeriodSeconds and the compose grace period


def image_environment(root: Path, pg: dict[str, str]) -> tuple[dict[str, str], Path]:
    """The image's ENV with paths re-rooted, plus `pg`; and the re-rooted WORKDIR."""
    final = artifacts.image_stage()
    environment = {
        name: str(root / value.lstrip("/")) if value.startswith("/") else value
        for name, value in final.env.items()
    }
    for value in environment.values():
        if value.startswith(str(root)):
            Path(value).mkdir(parents=True, exist_ok=True)
    workdir = root / final.arguments("WORKDIR")[-1].lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    # PATH and LANG come from the python base image; its interpreter is this virtualenv's.
    base = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    return {**base, **environment, "PORT": str(free_port()), **pg}, workdir


def parked_pops(url: str) -> int:
    """Long-polls parked in whichever worker answers this fresh connection."""
    with httpx.Client(base_url=url, timeout=5.0) as client:
        body = client.get("/metrics").json()
    return int(body.get("longPolls", {}).get("parked", 0))


@dataclass
class Container:
    """The image's command running here: its process, environment and log."""

    process: subprocess.Popen[bytes]
    environment: dict[str, str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.environment['PORT']}"

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            tail = self.log_path.read_text()[-4000:]
            raise RuntimeError(f"exited {self.process.returncode}:\n{tail}")
        try:
            return httpx.get(f"{self.url}/health", timeout=3.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log_entries(self) -> list[dict[str, object]]:
        """Every line; the image sets LOG_FORMAT=json, so each one must be a JSON object."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_BOUND_S)


@contextmanager
def run_image(tmp_path: Path, pg: dict[str, str]) -> Iterator[Container]:
    final = artifacts.image_stage()
    # Outside pytest's private tmp_path: as root, the embedded PostgreSQL runs as an unprivileged
    # user that must reach its data directory, as the image's queen user does.
    root = Path(tempfile.mkdtemp(prefix="queen-image-"))
    root.chmod(0o711)
    environment, workdir = image_environment(root, pg)
    argv = final.exec_form("ENTRYPOINT") + final.exec_form("CMD")
    argv[0] = shutil.which(argv[0], path=environment["PATH"]) or argv[0]
    log_path = tmp_path / "queen.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=environment, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    tree: list[ProcessInfo] = []
    try:
        yield Container(process, environment, log_path)
    finally:
        if process.poll() is None:
            tree = descendants(process.pid)
            process.kill()
            process.wait()
            for info in still_running(tree):
                os.kill(info.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def passes_image_healthcheck(container: Container) -> None:
    check = subprocess.run(
        artifacts.image_stage().healthcheck,
        env=container.environment,
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.timeout(120)
def test_image_alone_runs_with_its_embedded_postgres(tmp_path: Path) -> None:
    """`docker run queen:local`: no PG_HOST, so PostgreSQL starts inside, in QUEEN_DATA_DIR."""
    with run_image(tmp_path, {}) as container:
        wait_until(container.healthy, 90, "/health to answer 200")
        tree = descendants(container.process.pid)
        passes_image_healthcheck(container)
        data_dir = Path(container.environment["QUEEN_DATA_DIR"])
        assert (data_dir / "PG_VERSION").is_file()
        assert container.stop() == 0
        assert still_running(tree) == []
    assert any("queen stopped" in entry.values() for entry in container.log_entries())


@pytest.mark.timeout(120)
def test_image_command_starts_answers_probes_and_drains_on_sigterm(
    pg_cluster: PgCluster, database: str, tmp_path: Path
) -> None:
    pg = {k: v for k, v in server_env(pg_cluster, database).items() if k.startswith("PG_")}
    with run_image(tmp_path, pg) as container:
        wait_until(container.healthy, 60, "/health to answer 200")
        tree = descendants(container.process.pid)
        workers = [p for p in tree if "worker" in p.cmdline.split("\0")]
        assert len(workers) == int(artifacts.image_stage().env["NUM_WORKERS"])
        passes_image_healthcheck(container)

        (pod,) = artifacts.containers(artifacts.rendered_objects())
        for probe in ("livenessProbe", "readinessProbe"):
            path = pod[probe]["httpGet"]["path"]
            assert httpx.get(f"{container.url}{path}", timeout=5.0).status_code == 200, probe

        answers: list[int | str] = []

        def long_poll() -> None:
            try:
                response = httpx.get(
                    f"{container.url}/api/v1/pop/queue/deploy-drain",
                    params={"wait": "true", "timeout": "25000"},
                    timeout=40.0,
                )
                answers.append(response.status_code)
            except httpx.HTTPError as error:
                answers.append(type(error).__name__)

        poller = threading.Thread(target=long_poll)
        poller.start()
        wait_until(lambda: parked_pops(container.url) >= 1, 15, "the long-poll to park")

        assert container.stop() == 0
        poller.join(10)
        assert answers == [204]  # answered empty by the drain, not cut off
        assert still_running(tree) == []
    assert any("queen stopped" in entry.values() for entry in container.log_entries())
