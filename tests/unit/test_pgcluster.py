"""The pieces of the embedded cluster that decide things without starting PostgreSQL: where the
binaries are, and whether the pid in a leftover postmaster.pid is still a running process."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# The embedded PostgreSQL's port is never the server's own: the kernel hands a just-released port
# out again, and a caller picking PORT that way releases it before queen's workers bind it, after
# PostgreSQL has started.
class _ScriptedProbe:
    """Stands in for the probing socket only: each bind(0) gets the next scripted port."""

    ports: Iterator[int]

    def __init__(self, *_: Any) -> None:
        self.port = 0

    def __enter__(self) -> _ScriptedProbe:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def bind(self, _address: tuple[str, int]) -> None:
        self.port = next(self.ports)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_free_port_is_never_the_one_to_avoid(monkeypatch: pytest.MonkeyPatch) -> None:
    _ScriptedProbe.ports = iter([55157, 55157, 41000])
    monkeypatch.setattr(pgcluster.socket, "socket", _ScriptedProbe)
    assert pgcluster.free_port(avoiding=55157) == 41000


def test_a_real_free_port_can_be_bound() -> None:
    port = pgcluster.free_port(avoiding=1)
    with pgcluster.socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
