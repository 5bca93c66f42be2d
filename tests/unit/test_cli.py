"""The `queen` command as an operator meets it: a bad setting stops it at once with one line that
names the variable, before anything is started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from queen import __version__


def run_queen(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PORT", "NUM_WORKERS", "LOG_LEVEL")}
    return subprocess.run(
        [sys.executable, "-m", "queen", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "abc"), ("NUM_WORKERS", "0"), ("LOG_LEVEL", "loud"), ("PG_USE_SSL", "maybe")],
)
def test_serve_with_a_bad_setting_exits_2_with_one_line(variable: str, value: str) -> None:
    result = run_queen("serve", **{variable: value})
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("queen: configuration error: ")
    assert f"{variable}=" in lines[0]
    assert value in lines[0]


def test_bad_port_flag_is_refused_like_the_variable() -> None:
    result = run_queen("serve", "--port", "0")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "PORT=0" in result.stderr


def test_version_flag_prints_the_package_version() -> None:
    result = run_queen("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"queen {__version__}"


@pytest.mark.parametrize("args", [("serve", "--bogus"), ("--bogus",), ("serve", "--port", "x")])
def test_unknown_or_malformed_flag_exits_2(args: tuple[str, ...]) -> None:
    result = run_queen(*args)
    assert result.returncode == 2
    assert "usage: queen" in result.stderr


def test_missing_command_exits_2() -> None:
    assert run_queen().returncode == 2


def test_the_serve_parent_loads_neither_trio_nor_the_web_stack_nor_the_driver() -> None:
    """The parent lives as long as the server and only supervises: what only workers and
    migrations use would cost its memory for nothing (trio with ssl and attrs alone some 15 MB,
    the web stack and driver some 25 MB)."""
    probe = (
        "import sys, queen.cli, queen.serve, queen.supervise;"
        " print(' '.join(sorted(m for m in sys.modules if '.' not in m)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    loaded = set(result.stdout.split())
    heavy = {"trio", "ssl", "_ssl", "attr", "attrs", "prometheus_client", "asyncpg", "hypercorn"}
    heavy |= {"quart", "quart_trio", "trio_asyncio", "werkzeug", "jwt", "cryptography", "hashlib"}
    # Smaller, and as unneeded: orjson (with datetime) is for JSON logs, shutil (with its
    # compression modules) was only a PATH lookup.
    heavy |= {"orjson", "datetime", "shutil"}
    assert loaded & heavy == set()


def test_serve_with_an_unusable_jwt_key_exits_2_with_one_line() -> None:
    """Checked in a forked child (the parent must not load jwt and cryptography), answered as
    any other bad setting: before anything starts."""
    result = run_queen(
        "serve", JWT_ENABLED="true", JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY="not a key"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "queen: configuration error: JWT_PUBLIC_KEY is not a PEM public key"
    ]


def test_checking_the_jwt_key_for_serve_leaves_the_parent_without_jwt_and_ssl() -> None:
    probe = (
        "import sys; from queen.cli import _unusable_key_apart; from queen.config import Config;"
        " print(_unusable_key_apart(Config.from_env({'JWT_ENABLED': 'true', 'JWT_SECRET': 'x'})),"
        " sorted({'jwt', 'cryptography', 'ssl'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.split() == ["None", "[]"]


def test_migrate_without_a_database_exits_3_with_one_line() -> None:
    """`serve` runs `queen migrate` as a child and tries again on 3; an operator sees one line."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = run_queen(
        "migrate", PG_HOST="127.0.0.1", PG_PORT=str(port), DB_CONNECTION_TIMEOUT="1000"
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "[error]" in line]
    assert len(errors) == 1 and "database unreachable" in errors[0], result.stderr
