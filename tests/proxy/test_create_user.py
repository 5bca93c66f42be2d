"""`queen proxy create-user` on a terminal, as an operator runs it: prompts, the password read
without echo and asked twice, the role and expiry menus, and a token that opens a session
(spec §4.13, D-P14)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from collections.abc import Mapping

import httpx

from tests.proxy.support import ProxyProcess, queen_proxy_command

PASSWORD = "typed on a terminal"


def _converse(env: Mapping[str, str], answers: list[tuple[str, str]], timeout_s: float) -> str:
    """Run create-user on a pseudo-terminal, answering each prompt; return everything shown."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: exec the command with the terminal as its controlling tty
        os.execve(
            sys.executable,
            [sys.executable, "-m", "queen", "proxy", "create-user"],
            {**os.environ, **env},
        )
    shown = b""
    deadline = time.monotonic() + timeout_s
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:
                    break  # the child closed the terminal: it is done
                if not chunk:
                    break
                shown += chunk
            if pending and shown.rstrip().endswith(pending[0][0].encode()):
                os.write(terminal, pending.pop(0)[1].encode() + b"\n")
        else:
            raise TimeoutError(f"create-user did not finish; it showed:\n{shown.decode()}")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, shown.decode()
    return shown.decode()


def test_interactive_create_user_prints_a_working_token(proxy: ProxyProcess) -> None:
    shown = _converse(
        proxy.env,
        [
            ("Username:", "terminal_user"),
            ("Password:", PASSWORD),
            ("Password again:", PASSWORD),
            ("Choice [3]:", "2"),
            ("Choice [1]:", "2"),
        ],
        timeout_s=60,
    )
    assert PASSWORD not in shown  # never echoed
    assert "created with role read-write" in shown
    token = shown.split("Authorization: Bearer ", 1)[1].split()[0]
    me = httpx.get(f"{proxy.url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert me.json() == {"username": "terminal_user", "role": "read-write"}


def test_short_passwords_and_duplicates_are_refused(proxy: ProxyProcess) -> None:
    args = ("create-user", "--username", "shorty", "--role", "read-only", "--expires", "skip")
    short = queen_proxy_command(proxy.env, *args, stdin="too short\n")
    assert short.returncode == 1
    assert "at least 12 characters" in short.stderr
    again = queen_proxy_command(
        proxy.env, "create-user", "--username", "admin", "--role", "admin", stdin=PASSWORD + "\n"
    )
    assert again.returncode == 1
    assert "Username already exists" in again.stderr
