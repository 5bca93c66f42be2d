"""Three queen instances on this machine against one PostgreSQL, woken over signed UDP: the
quickest way to see cluster sync at work (docs/cluster.md).

    python -m ops.cluster                       # PostgreSQL from PG_HOST/PG_PORT/..., or a
                                                # throwaway one when PG_HOST is unset
    python -m ops.cluster --ports 7001,7002,7003 --udp-ports 7101,7102,7103

Every instance lists all three UDP ports as peers (itself included: self-detection leaves it
out), shares one generated QUEEN_SYNC_SECRET (or yours), and logs to <workdir>/instance-N.log.
Once all three see each other alive it prints one line `ready <url> <url> <url>`; Ctrl-C (or
SIGTERM) stops the instances and the throwaway PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from queen.storage.pgcluster import PgCluster, find_bindir

READY_TIMEOUT_S = 60.0


def _ports(text: str) -> list[int]:
    ports = [int(part) for part in text.split(",")]
    if len(ports) != 3:
        raise argparse.ArgumentTypeError("three ports, comma-separated")
    return ports


@contextlib.contextmanager
def postgresql(workdir: Path) -> Iterator[dict[str, str]]:
    """The PG_* of the environment, or a throwaway cluster in `workdir` when PG_HOST is unset."""
    if os.environ.get("PG_HOST"):
        yield {k: v for k, v in os.environ.items() if k.startswith("PG_")}
        return
    cluster = PgCluster(data_dir=workdir / "pgdata", bindir=find_bindir(None))
    cluster.start()
    try:
        parts = cluster.dsn_parts()
        yield {
            "PG_HOST": str(parts["host"]),
            "PG_PORT": str(parts["port"]),
            "PG_USER": str(parts["user"]),
            "PG_PASSWORD": str(parts["password"]),
            "PG_DB": str(parts["database"]),
        }
    finally:
        cluster.stop()


def instance_env(
    index: int, http_port: int, udp_ports: list[int], secret: str, workdir: Path
) -> dict[str, str]:
    return {
        "PORT": str(http_port),
        "HOST": "127.0.0.1",
        "NUM_WORKERS": os.environ.get("NUM_WORKERS", "2"),
        "QUEEN_UDP_PEERS": ",".join(f"127.0.0.1:{port}" for port in udp_ports),
        "QUEEN_UDP_NOTIFY_PORT": str(udp_ports[index]),
        "QUEEN_UDP_BIND": "127.0.0.1",
        "QUEEN_SYNC_SECRET": secret,
        "FILE_BUFFER_DIR": str(workdir / f"buffer-{index}"),
    }


def alive_peers(url: str) -> int:
    try:
        state = httpx.get(f"{url}/api/v1/system/shared-state", timeout=2).json()
        return int(state["server_health"]["servers_alive"])
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.cluster", description=__doc__)
    parser.add_argument("--ports", type=_ports, default=[6632, 6642, 6652], help="HTTP ports")
    parser.add_argument("--udp-ports", type=_ports, default=[6633, 6643, 6653])
    parser.add_argument("--workdir", type=Path, default=None, help="logs, buffers, PostgreSQL")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="queen-cluster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o711)  # the throwaway PostgreSQL runs as an unprivileged user under root
    secret = os.environ.get("QUEEN_SYNC_SECRET") or secrets.token_hex(32)
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with postgresql(workdir) as pg_env:
        processes: list[subprocess.Popen[bytes]] = []
        urls = [f"http://127.0.0.1:{port}" for port in args.ports]
        try:
            for index, port in enumerate(args.ports):
                env = {
                    **os.environ,
                    **pg_env,
                    **instance_env(index, port, args.udp_ports, secret, workdir),
                }
                log = open(workdir / f"instance-{index}.log", "ab")  # noqa: SIM115 - child's
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "queen", "serve"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not stop and not all(alive_peers(url) == 2 for url in urls):
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    print(f"instances did not come up; logs in {workdir}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            print("ready " + " ".join(urls), flush=True)
            print(f"logs in {workdir}; Ctrl-C stops everything", file=sys.stderr, flush=True)
            while not stop and all(p.poll() is None for p in processes):
                time.sleep(0.2)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
