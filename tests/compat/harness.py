"""Run a script under an official client's own virtualenv against a live `queen serve`.

The official clients are imported as `queen`, like our server package, so they cannot run inside
the pytest process: each story is a small script that the client venv's interpreter runs, talking
HTTP to the server under test. The script prints its observations as JSON on its last stdout line;
the test asserts on them here, in pytest.

Scripts live in `tests/compat/scripts/` (or are passed as source). They find `compat_runtime` there,
which builds the client, hands it to the script's `main(client, args)` and prints the result.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support import REPO, ServerProcess

SCRIPTS = Path(__file__).resolve().parent / "scripts"
COMPAT_ROOT = Path(os.environ.get("QUEEN_COMPAT_DIR", str(REPO / ".venv-compat")))
TAIL_CHARS = 6000


def unique_queue(prefix: str = "compat") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def script(name: str) -> Path:
    """A story script under tests/compat/scripts/, by name with or without `.py`."""
    path = SCRIPTS / (name if name.endswith(".py") else f"{name}.py")
    if not path.is_file():
        raise FileNotFoundError(f"no compat script {path}")
    return path


@dataclass(frozen=True)
class ClientVersion:
    """One official client release and the virtualenv `make compat-clients` installs it in."""

    label: str
    package_version: str
    root: Path = COMPAT_ROOT

    @property
    def venv(self) -> Path:
        return self.root / f"v{self.label}"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


CLIENT_015 = ClientVersion("0.15", "0.15.0")
CLIENT_26 = ClientVersion("2.6", "2.6.0")


def _script_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment, minus whatever could let our `queen` shadow the client's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }
    env.update(
        {
            "PYTHONPATH": str(SCRIPTS),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **extra,
        }
    )
    return env


@functools.cache
def _probe(version: ClientVersion) -> None:
    """Check once per session: the venv holds the expected client and `queen` resolves to it."""
    probe = (
        "import importlib.metadata as m, queen; print(m.version('queen-mq')); print(queen.__file__)"
    )
    with tempfile.TemporaryDirectory(prefix="queen-compat-probe-") as cwd:
        done = subprocess.run(
            [str(version.python), "-c", probe],
            cwd=cwd,
            env=_script_env({}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        pytest.fail(
            f"client venv {version.venv} is broken (exit {done.returncode}); "
            f"rebuild it with `rm -rf {version.venv} && make compat-clients`.\n{done.stderr}",
            pytrace=False,
        )
    installed, module_file = lines
    if installed != version.package_version:
        pytest.fail(
            f"{version.venv} holds queen-mq=={installed}, expected {version.package_version}",
            pytrace=False,
        )
    if not Path(module_file).resolve().is_relative_to(version.venv.resolve()):
        pytest.fail(
            f"`import queen` in {version.venv} resolved to {module_file}, not the installed client",
            pytrace=False,
        )


def require_venv(version: ClientVersion) -> Path:
    """The client's interpreter; a missing venv is a test failure, never a skip."""
    if not version.python.exists():
        pytest.fail(
            f"official client queen-mq=={version.package_version} is not installed: "
            f"{version.python} does not exist. Run `make compat-clients` (or `make test`, "
            f"which builds it) in {REPO}.",
            pytrace=False,
        )
    _probe(version)
    return version.python


def _tail(text: str, limit: int = TAIL_CHARS) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


@dataclass
class ScriptRun:
    """What one script invocation did, kept for failure reports."""

    name: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    reported: bool = False

    def describe(self) -> str:
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f}s"
        return f"exit code {self.returncode} after {self.duration_s:.1f}s"


@dataclass
class ClientRunner:
    """Runs compat scripts with one client version against one server."""

    version: ClientVersion
    server: ServerProcess
    runs: list[ScriptRun] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        return self.version.label

    def run(
        self,
        source: Path | str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> Any:
        """Run a script file (a `Path`) or script source (a `str`) and return its last JSON line.

        The script sees the server URL in `QUEEN_URL` and `args` as JSON in `QUEEN_COMPAT_ARGS`.
        Any failure (non-zero exit, timeout, no JSON) fails the test with the script's output and
        the server log.
        """
        python = require_venv(self.version)
        if isinstance(source, Path):
            name, argv = source.name, [str(python), str(source)]
        else:
            name, argv = "<inline script>", [str(python), "-c", source]
        script_env = _script_env(
            {
                "QUEEN_URL": self.server.url,
                "QUEEN_COMPAT_ARGS": json.dumps(dict(args or {})),
                "QUEEN_COMPAT_CLIENT": self.version.package_version,
                **(env or {}),
            }
        )
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="queen-compat-") as cwd:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=script_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            timed_out = False
            try:
                stdout, stderr = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
        run = ScriptRun(
            name=name,
            returncode=None if timed_out else process.returncode,
            stdout=stdout,
            stderr=stderr,
            duration_s=time.monotonic() - started,
            timed_out=timed_out,
        )
        self.runs.append(run)
        if timed_out or process.returncode != 0:
            self._fail(run, run.describe())
        lines = [line for line in stdout.splitlines() if line.strip()]
        if not lines:
            self._fail(run, "printed nothing on stdout (expected a JSON result line)")
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as error:
            self._fail(run, f"last stdout line is not JSON ({error})")

    def _fail(self, run: ScriptRun, what: str) -> NoReturn:
        run.reported = True
        pytest.fail(
            f"queen-mq=={self.version.package_version} script {run.name} {what}\n"
            + "".join(f"\n{title}\n{body}" for title, body in self._sections([run])),
            pytrace=False,
        )

    def _sections(self, runs: list[ScriptRun]) -> list[tuple[str, str]]:
        sections: list[tuple[str, str]] = []
        for run in runs:
            head = f"[client {self.label}] {run.name} ({run.describe()})"
            sections.append((f"{head} stdout", _tail(run.stdout) or "<empty>"))
            sections.append((f"{head} stderr", _tail(run.stderr) or "<empty>"))
        sections.append((f"server log ({self.server.log_path})", self.server.log() or "<empty>"))
        return sections

    def failure_sections(self) -> list[tuple[str, str]]:
        """Report sections for a test that failed on its own assertions after running scripts."""
        pending = [run for run in self.runs if not run.reported]
        if not pending:
            return []
        for run in pending:
            run.reported = True
        return self._sections(pending)
