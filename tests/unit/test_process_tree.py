"""The `queen serve` parent's loop (queen/supervise.py) with small Python scripts as its children,
for what the server tests cannot reach in their time: a worker refusing its configuration, a
worker deaf to SIGTERM (killed after its stop timeout, or at once on a second signal), and a
signal that lands before the loop runs. The signals are real, sent to this process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queen.storage.pgcluster import ClusterError
from queen.supervise import Child, Database, ProcessTree, Wakeups, signals_as_wakeups
from tests.support import wait_until

# Marks its start in argv[1], records each SIGTERM in argv[1] + ".term" and carries on.
DEAF_TO_SIGTERM = """
import signal, sys, time
from pathlib import Path
marker = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: Path(f"{marker}.term").touch())
marker.touch()
while True:
    time.sleep(1)
"""
SLEEPS = "import sys, time; from pathlib import Path; Path(sys.argv[1]).touch(); time.sleep(60)"
REFUSES_ONCE_THERE = """
import sys, time
from pathlib import Path
while not Path(sys.argv[1]).exists():
    time.sleep(0.01)
sys.exit(2)
"""


def child(name: str, code: str, *args: str, stop_timeout_s: float = 15.0) -> Child:
    return Child(
        name, [sys.executable, "-c", code, *args], lambda _: 0.05, stop_timeout_s=stop_timeout_s
    )


@pytest.fixture
def wakeups() -> Iterator[Wakeups]:
    with signals_as_wakeups() as taken_over:
        yield taken_over


def signal_when(path: Path, signum: int) -> threading.Thread:
    """SIGTERM to this process once `path` exists: the loop, blocked in run(), must see it."""

    def send() -> None:
        wait_until(path.exists, 10.0, f"{path.name} to appear")
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(30)
def test_a_worker_refusing_its_configuration_stops_the_others(
    wakeups: Wakeups, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    tree = ProcessTree(
        wakeups,
        child("migration", "pass"),
        [
            child("worker", REFUSES_ONCE_THERE, str(other)),
            child("worker", SLEEPS, str(other), stop_timeout_s=5.0),
        ],
    )
    with caplog.at_level(logging.INFO, logger="queen"):
        tree.run()
    assert tree.fatal
    # run() returned: the sleeping worker was stopped, well before its 60 s were up.
    assert "worker rejected the configuration; stopping" in caplog.messages
    assert "shutting down" not in caplog.messages


@pytest.mark.timeout(30)
def test_a_worker_deaf_to_sigterm_is_killed_after_its_stop_timeout(
    wakeups: Wakeups, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started = tmp_path / "worker"
    tree = ProcessTree(
        wakeups,
        child("migration", "pass"),
        [child("worker", DEAF_TO_SIGTERM, str(started), stop_timeout_s=0.5)],
    )
    signal_when(started, signal.SIGTERM)
    with caplog.at_level(logging.INFO, logger="queen"):
        tree.run()
    assert Path(f"{started}.term").exists()
    assert not tree.fatal
    assert caplog.messages[-2:] == ["shutting down", "worker did not stop in time; killing it"]


@pytest.mark.timeout(30)
def test_a_second_signal_kills_at_once(wakeups: Wakeups, tmp_path: Path) -> None:
    started = tmp_path / "worker"
    tree = ProcessTree(
        wakeups,
        child("migration", "pass"),
        [child("worker", DEAF_TO_SIGTERM, str(started), stop_timeout_s=60.0)],
    )
    signal_when(started, signal.SIGTERM)
    # The second comes once the worker got the first (two sent at once may arrive as one).
    signal_when(Path(f"{started}.term"), signal.SIGINT)
    began = time.monotonic()
    tree.run()
    assert time.monotonic() - began < 10.0


@pytest.mark.timeout(30)
def test_a_signal_before_the_loop_runs_stops_it_before_any_child_starts(
    wakeups: Wakeups, tmp_path: Path
) -> None:
    """What `serve` relies on when Ctrl-C lands while the embedded PostgreSQL starts."""
    migrated = tmp_path / "migration"
    tree = ProcessTree(wakeups, child("migration", SLEEPS, str(migrated)), [])
    os.kill(os.getpid(), signal.SIGINT)
    tree.run()
    assert not migrated.exists()
    assert not tree.fatal


class FlakyPostmaster:
    """A `sleep` standing in for the postmaster; its first restart fails as a start of
    PostgreSQL can (the port taken meanwhile), the second succeeds and says so in `restarted`."""

    def __init__(self, restarted: Path) -> None:
        self.restarted = restarted
        self.starts = 0
        self.process = subprocess.Popen(["sleep", "60"])

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            raise ClusterError("PostgreSQL exited during start-up")
        self.process = subprocess.Popen(["sleep", "60"])
        self.restarted.touch()


@pytest.mark.timeout(30)
def test_a_postmaster_that_exits_is_started_again_until_it_starts(
    wakeups: Wakeups, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    postmaster = FlakyPostmaster(tmp_path / "restarted")
    tree = ProcessTree(
        wakeups,
        child("migration", "pass"),
        [child("worker", SLEEPS, str(tmp_path / "worker"))],
        Database(postmaster, backoff=lambda _: 0.05),
    )
    postmaster.process.kill()  # its exit (SIGCHLD) is what wakes the loop
    signal_when(tmp_path / "restarted", signal.SIGTERM)
    try:
        with caplog.at_level(logging.INFO, logger="queen"):
            tree.run()
    finally:
        postmaster.process.kill()
        postmaster.process.wait()
    assert postmaster.starts == 2
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("embedded PostgreSQL exited; restarting") == 2
    assert "embedded PostgreSQL did not start" in messages
