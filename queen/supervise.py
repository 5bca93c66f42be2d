"""The process tree under `queen serve`: a `queen migrate` child, then NUM_WORKERS `queen worker`
children, kept running until a signal stops them. Plain synchronous code around one blocking
select(): the parent lives as long as the server and only waits on its children, so it does
not carry trio (with ssl and attrs some 15 MB of RSS) for that.

Policy, in one place:
- Migrations: a `queen migrate` exiting EXIT_UNREACHABLE is tried again (0.25 s doubling to
  MIGRATION_RETRY_S) while the workers start and answer 503; any other failure is a refusal,
  raised before the workers start, or stopping the server when found later.
- Workers: one that exits is started again after 0.5 s doubling to 30 s, the backoff starting
  afresh for one that served HEALTHY_RUN_S first; one exiting EXIT_CONFIG (it refused the
  configuration) stops the server, as restarting it would only repeat the refusal.
- The embedded PostgreSQL (when PG_HOST is unset): a postmaster that exits while the server runs
  is started again, on its port, after the workers' backoff (their connections come back by
  themselves). Its start blocks this loop for up to its ready timeout; a signal arriving
  meanwhile waits on the pipe and is acted on after.
- Stopping: the first SIGINT/SIGTERM (or a refusal above) sends SIGTERM to every child and kills
  one still running after WORKER_STOP_TIMEOUT_S; a second signal kills them all at once. Every
  child is reaped before `run` returns, whatever ends it.

Children run in sessions of their own: a Ctrl-C at a terminal reaches only this process, which
decides what the children get.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from queen.backoff import backoff_delays
from queen.config import Config
from queen.ids import uuid7_str
from queen.storage.pgcluster import ClusterError

log = logging.getLogger("queen")

EXIT_CONFIG = 2  # a command refused its configuration
EXIT_UNREACHABLE = 3  # `queen migrate` found no database to migrate; tried again
WORKER_STOP_TIMEOUT_S = 15.0
HEALTHY_RUN_S = 60.0
MIGRATION_RETRY_S = 2.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class MigrationRefused(RuntimeError):
    """The schema cannot be brought to this release (queen.storage.migrations says why)."""


def _note_signal(signum: int, frame: FrameType | None) -> None:
    """Nothing to do here: the wake-up fd already carries the signal to the loop."""


@contextlib.contextmanager
def signals_as_wakeups() -> Iterator[Wakeups]:
    """From here on SIGINT, SIGTERM and SIGCHLD are bytes on a pipe, read by `Wakeups.wait`; a
    signal arriving before the loop first waits (during the embedded PostgreSQL's start, say)
    is kept there, not lost, and never interrupts that start half-way."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {
        signum: signal.signal(signum, _note_signal) for signum in (*_STOP_SIGNALS, signal.SIGCHLD)
    }
    selector = selectors.DefaultSelector()
    selector.register(read_fd, selectors.EVENT_READ)
    try:
        yield Wakeups(read_fd, selector)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        selector.close()
        os.close(read_fd)
        os.close(write_fd)


@dataclass
class Wakeups:
    """The read end of the wake-up pipe: one byte per signal, its number. The loop blocks on it
    (no polling), the deadline of the next restart or kill as its timeout."""

    read_fd: int
    selector: selectors.BaseSelector

    def wait(self, timeout_s: float | None) -> list[int]:
        """The signals received, waiting up to `timeout_s` (None: until one comes) for any."""
        self.selector.select(None if timeout_s is None else max(timeout_s, 0.0))
        received = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read_fd, 512):
                received += chunk
        return list(received)


@dataclass
class Child:
    """One place in the tree, filled by successive processes (a worker's restarts, the
    migration's attempts). `due_at` is when the next one starts; `kill_at`, when a process
    asked to stop is killed instead."""

    name: str
    argv: list[str]
    backoff: Callable[[int], float]
    env: dict[str, str] | None = None
    log_extra: dict[str, Any] = field(default_factory=dict)
    stop_timeout_s: float = WORKER_STOP_TIMEOUT_S
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    due_at: float | None = None
    kill_at: float | None = None
    failures: int = 0

    def start(self, now: float) -> None:
        self.due_at = None
        self.started_at = now
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)

    def exit_code(self) -> int | None:
        """The exit code once the running process has ended (and is reaped), else None."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None:
            self.process, self.kill_at = None, None
        return code

    def terminate(self, now: float) -> None:
        self.due_at = None
        if self.process is not None:
            self.process.terminate()
            self.kill_at = now + self.stop_timeout_s

    def kill(self) -> None:
        self.due_at, self.kill_at = None, None
        if self.process is not None:
            self.process.kill()


class Postmaster(Protocol):
    """What the tree needs of the embedded PostgreSQL (queen.storage.pgcluster.PgCluster)."""

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...


@dataclass
class Database:
    """The embedded PostgreSQL's place in the tree. Its process is the cluster's own: the tree
    only notices that it ended and when to start it again."""

    cluster: Postmaster
    backoff: Callable[[int], float] = field(default_factory=lambda: backoff_delays(0.5, 30.0))
    started_at: float = field(default_factory=time.monotonic)
    due_at: float | None = None
    failures: int = 0


class Restartable(Protocol):
    """A place in the tree that is started again after it ends (a worker, the postmaster)."""

    started_at: float
    due_at: float | None
    failures: int

    @property
    def backoff(self) -> Callable[[int], float]: ...


def _restart_later(place: Restartable) -> float:
    """Make `place` due again after its backoff, counted afresh once it had run HEALTHY_RUN_S;
    the delay."""
    now = time.monotonic()
    if now - place.started_at >= HEALTHY_RUN_S:
        place.failures = 0
    delay = place.backoff(place.failures)
    place.due_at = now + delay
    place.failures += 1
    return delay


class ProcessTree:
    """The migration and worker children of one `queen serve`, and the loop that tends them."""

    def __init__(
        self,
        wakeups: Wakeups,
        migration: Child,
        workers: Sequence[Child],
        database: Database | None = None,
    ) -> None:
        self._wakeups = wakeups
        self._migration = migration
        self._workers = list(workers)
        self._database = database
        self._workers_started = False
        self._stopping = False
        self.fatal = False

    @classmethod
    def of_server(
        cls, config: Config, wakeups: Wakeups, postmaster: Postmaster | None = None
    ) -> ProcessTree:
        """The children of `queen serve`: this interpreter running queen's own commands, and
        the embedded PostgreSQL's postmaster when there is one."""
        env = _child_env(config)
        command = [sys.executable, "-m", "queen"]
        migration = Child(
            "migration", [*command, "migrate"], backoff_delays(0.25, MIGRATION_RETRY_S), env
        )
        # Drawn per start: instances sharing a database never take each other's leases back.
        instance = ["--parent", str(os.getpid()), "--instance", uuid7_str()]
        workers = [
            Child(
                "worker",
                [*command, "worker", "--index", str(index), *instance],
                backoff_delays(0.5, 30.0),
                env,
                {"worker_id": index},
            )
            for index in range(config.num_workers)
        ]
        database = Database(postmaster) if postmaster is not None else None
        return cls(wakeups, migration, workers, database)

    @property
    def _children(self) -> list[Child]:
        return [self._migration, *self._workers]

    def run(self) -> None:
        """Until stopped and every child is reaped. Raises MigrationRefused when the schema is
        refused before any worker started."""
        self._migration.due_at = time.monotonic()
        try:
            while not (self._stopping and all(c.process is None for c in self._children)):
                for signum in self._wakeups.wait(self._until_next_deadline()):
                    if signum in _STOP_SIGNALS:
                        self._on_stop_signal()
                self._reap()
                self._watch_database()
                self._act_on_deadlines()
        finally:
            self._kill_and_reap()

    def _until_next_deadline(self) -> float | None:
        deadlines = [
            moment
            for child in self._children
            for moment in (child.kill_at, child.due_at)
            if moment is not None
        ]
        if self._database is not None and self._database.due_at is not None:
            deadlines.append(self._database.due_at)
        return min(deadlines) - time.monotonic() if deadlines else None

    def _on_stop_signal(self) -> None:
        if self._stopping:
            for child in self._children:
                child.kill()
            return
        log.info("shutting down")
        self._stop()

    def _stop(self) -> None:
        self._stopping = True
        now = time.monotonic()
        for child in self._children:
            child.terminate(now)

    def _reap(self) -> None:
        code = self._migration.exit_code()
        if code is not None and not self._stopping:
            self._migration_ended(code)
        for worker in self._workers:
            code = worker.exit_code()
            if code is not None and not self._stopping:
                self._worker_ended(worker, code)

    def _migration_ended(self, code: int) -> None:
        if code == EXIT_UNREACHABLE:
            self._migration.due_at = time.monotonic() + self._migration.backoff(
                self._migration.failures
            )
            self._migration.failures += 1  # and the workers start meanwhile, answering 503
        elif code != 0:
            refused = MigrationRefused(f"`queen migrate` exited with {code}")
            if not self._workers_started:
                raise refused
            log.error("migration refused: %s", refused)
            self.fatal = True
            self._stop()
            return
        if not self._workers_started:
            self._workers_started = True
            now = time.monotonic()
            for worker in self._workers:
                worker.start(now)

    def _worker_ended(self, worker: Child, code: int) -> None:
        if code == EXIT_CONFIG:
            log.error("worker rejected the configuration; stopping", extra=worker.log_extra)
            self.fatal = True
            self._stop()
            return
        delay = _restart_later(worker)
        log.error(
            "worker exited; restarting",
            extra={**worker.log_extra, "exit_code": code, "restart_in_s": delay},
        )

    def _watch_database(self) -> None:
        """A postmaster that ended while the server runs is due to start again."""
        database = self._database
        if database is None or self._stopping or database.due_at is not None:
            return
        if database.cluster.running:
            return
        delay = _restart_later(database)
        log.error("embedded PostgreSQL exited; restarting", extra={"restart_in_s": delay})

    def _restart_database(self, now: float) -> None:
        database = self._database
        if database is None or database.due_at is None or database.due_at > now:
            return
        database.due_at = None
        database.started_at = now
        try:
            database.cluster.start()
        except (ClusterError, OSError) as error:
            log.error("embedded PostgreSQL did not start", extra={"error": str(error)})
            self._watch_database()

    def _act_on_deadlines(self) -> None:
        now = time.monotonic()
        if not self._stopping:
            self._restart_database(now)
        for child in self._children:
            if child.kill_at is not None and child.kill_at <= now:
                log.warning(
                    "%s did not stop in time; killing it", child.name, extra=child.log_extra
                )
                child.kill()
            if child.due_at is not None and child.due_at <= now and not self._stopping:
                child.start(now)

    def _kill_and_reap(self) -> None:
        """No child may outlive the loop, whatever ended it."""
        for child in self._children:
            if child.process is not None:
                child.process.kill()
                child.process.wait()
                child.process = None


def _child_env(config: Config) -> dict[str, str]:
    """The children's environment: the parent's, with what the parent resolved (the embedded
    database, the --port/--host/--dev flags) written into the variables they read."""
    env = dict(os.environ)
    env.update(
        {
            "PORT": str(config.port),
            "HOST": config.host,
            "LOG_LEVEL": config.log_level,
            "PG_HOST": config.pg_host or "",
            "PG_PORT": str(config.pg_port),
            "PG_USER": config.pg_user,
            "PG_PASSWORD": config.pg_password,
            "PG_DB": config.pg_db,
        }
    )
    return env
