"""The image's command, run on this machine as the container would run it: ENTRYPOINT + CMD of the
Dockerfile's final stage, in a clean environment made of exactly the variables the image sets
(there is no Docker engine here). It must start, pass the image's own HEALTHCHECK command and the
chart's probes, drain a parked long-poll on SIGTERM and exit 0 leaving no process behind.

Three things differ from a container, each for a reason: the image's absolute paths are re-rooted
under a temporary directory (this machine's /var/lib/queen belongs to nobody's test), PORT is a
free port (tests never use 6632), and PG_* point at the test cluster, as every deployment around
the image (compose, chart, unit) does.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from queen.storage.pgcluster import PgCluster, free_port
from tests.deploy import artifacts
from tests.support import descendants, server_env, still_running, wait_until

STOP_BOUND_S = 30.0  # the chart's terminationGracePeriodSeconds and the compose grace period


def image_environment(root: Path, pg: dict[str, str]) -> tuple[dict[str, str], Path]:
    """The image's ENV with paths re-rooted, plus PG_*; and the re-rooted WORKDIR."""
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


@pytest.mark.timeout(120)
def test_image_command_starts_answers_health_and_drains_on_sigterm(
    pg_cluster: PgCluster, database: str, tmp_path: Path
) -> None:
    final = artifacts.image_stage()
    pg = {k: v for k, v in server_env(pg_cluster, database).items() if k.startswith("PG_")}
    environment, workdir = image_environment(tmp_path / "image", pg)
    argv = final.exec_form("ENTRYPOINT") + final.exec_form("CMD")
    argv[0] = shutil.which(argv[0], path=environment["PATH"]) or argv[0]
    url = f"http://127.0.0.1:{environment['PORT']}"
    log_path = tmp_path / "queen.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=environment, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"exited {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                return httpx.get(f"{url}/health", timeout=3.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 60, "/health to answer 200")
        tree = descendants(process.pid)
        workers = [p for p in tree if "worker" in p.cmdline.split("\0")]
        assert len(workers) == int(final.env["NUM_WORKERS"])

        check = subprocess.run(
            final.healthcheck, env=environment, capture_output=True, timeout=10, check=False
        )
        assert check.returncode == 0, check.stderr

        (container,) = artifacts.containers(artifacts.rendered_objects())
        for probe in ("livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert httpx.get(f"{url}{path}", timeout=5.0).status_code == 200, probe

        answers: list[int | str] = []

        def long_poll() -> None:
            try:
                response = httpx.get(
                    f"{url}/api/v1/pop/queue/deploy-drain",
                    params={"wait": "true", "timeout": "25000"},
                    timeout=40.0,
                )
                answers.append(response.status_code)
            except httpx.HTTPError as error:
                answers.append(type(error).__name__)

        poller = threading.Thread(target=long_poll)
        poller.start()
        wait_until(lambda: parked_pops(url) >= 1, 15, "the long-poll to park")

        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_BOUND_S) == 0
        poller.join(10)
        assert answers == [204]
        assert still_running(tree) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # the image sets LOG_FORMAT=json
    assert any("queen stopped" in entry.values() for entry in entries)
