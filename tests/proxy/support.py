"""Helpers for the proxy tests: a real `queen proxy` process in front of a real broker, users made
with the real `queen proxy create-user` command, and a small fake identity provider (JWKS, OAuth
token endpoint) served over HTTP from a thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from queen.storage.pgcluster import PgCluster
from tests.support import ChildProcess, wait_until

SECRET = "proxy-test-secret-0123456789abcdef0123456789"
PASSWORD = "correct horse battery"


def proxy_env(cluster: PgCluster, database: str, upstream: str, **extra: str) -> dict[str, str]:
    parts = cluster.dsn_parts()
    return {
        "PG_HOST": str(parts["host"]),
        "PG_PORT": str(parts["port"]),
        "PG_USER": str(parts["user"]),
        "PG_PASSWORD": str(parts["password"]),
        "PG_DB": database,
        "JWT_SECRET": SECRET,
        "QUEEN_SERVER_URL": upstream,
        **extra,
    }


class ProxyProcess(ChildProcess):
    """`queen proxy`."""

    def start(self) -> ProxyProcess:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **self.env}
        self.spawn([sys.executable, "-m", "queen", "proxy"], env)

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/health/ready", timeout=3.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30.0, "the proxy to be ready", every_s=0.1)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_proxy(env: Mapping[str, str]) -> Iterator[ProxyProcess]:
    proxy = ProxyProcess(env).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def queen_proxy_command(
    env: Mapping[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queen", "proxy", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_user(env: Mapping[str, str], username: str, role: str, password: str = PASSWORD) -> None:
    done = queen_proxy_command(
        env,
        "create-user",
        "--username",
        username,
        "--role",
        role,
        "--expires",
        "skip",
        stdin=password + "\n",
    )
    assert done.returncode == 0, done.stderr


def create_token(env: Mapping[str, str], username: str, role: str) -> str:
    done = queen_proxy_command(env, "create-token", "--username", username, "--role", role)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[1].strip()


def login(proxy_url: str, username: str, password: str = PASSWORD) -> str:
    """The session cookie value of a successful password login."""
    answer = httpx.post(
        f"{proxy_url}/api/login", json={"username": username, "password": password}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return session_cookie(answer)


def session_cookie(answer: httpx.Response) -> str:
    """The `token` cookie an answer sets (read from Set-Cookie: it is Secure, so httpx's jar
    would not send it back over plain http)."""
    for header in answer.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == "token":
            return rest.split(";", 1)[0]
    raise AssertionError(f"no token cookie in {answer.headers}")


class FakeIdp:
    """An identity provider on a local port: a JWKS, an OAuth token endpoint that answers with
    whatever id_token the test queued for a code, and token signing for SSO passthrough. Any other
    path echoes the request as JSON, so the same server stands in for the broker when a test
    looks at what the proxy forwards."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key"
        self.codes: dict[str, str] = {}
        self.token_requests: list[dict[str, list[str]]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _echo(self, body: bytes) -> None:
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                self._answer(
                    200,
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": headers,
                        "size": len(body),
                    },
                )

            def do_GET(self) -> None:
                if self.path == "/jwks":
                    public = RSAAlgorithm.to_jwk(idp.key.public_key(), as_dict=True)
                    self._answer(200, {"keys": [{**public, "kid": idp.kid, "use": "sig"}]})
                else:
                    self._echo(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if self.path != "/token":
                    self._echo(body)
                    return
                form = parse_qs(body.decode())
                idp.token_requests.append(form)
                code = form.get("code", [""])[0]
                if code in idp.codes:
                    self._answer(200, {"id_token": idp.codes.pop(code)})
                else:
                    self._answer(400, {"error": "invalid_grant"})

        return Handler

    def sign(self, claims: dict[str, Any], lifetime_s: int = 300) -> str:
        now = int(time.time())
        payload = {"iat": now, "exp": now + lifetime_s, **claims}
        return jwt.encode(payload, self.key, "RS256", headers={"kid": self.kid})

    def __enter__(self) -> FakeIdp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
