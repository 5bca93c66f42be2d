"""The pieces of the embedded cluster that decide things without starting PostgreSQL: where the
binaries are, and whether the pid in a leftover postmaster.pid is still a running process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from queen.storage import pgcluster
from queen.storage.pgcluster import ClusterError, find_bindir
from tests.support import wait_until


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert pgcluster._alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not pgcluster._alive(sleeper.pid)


def test_a_zombie_is_not_alive() -> None:
    """An orphaned postmaster may stay a zombie for as long as PID 1 does not reap it."""
    child = subprocess.Popen(["true"])
    try:
        wait_until(lambda: _state(child.pid) == "Z", 5.0, "the child to exit unreaped")
        assert not pgcluster._alive(child.pid)
    finally:
        child.wait()


def test_a_process_that_is_not_the_postmaster_is_never_taken_for_it(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60", str(tmp_path)])
    try:
        assert not pgcluster._is_postmaster_of(sleeper.pid, tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_explicit_bindir_without_binaries_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="QUEEN_PG_BINDIR="):
        find_bindir(str(tmp_path))


def test_explicit_bindir_with_binaries_wins(tmp_path: Path) -> None:
    for name in ("initdb", "postgres"):
        (tmp_path / name).write_text("#!/bin/sh\n")
    assert find_bindir(str(tmp_path)) == tmp_path
