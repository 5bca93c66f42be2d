"""What a worker imports at start-up (issue 20): PyJWT and cryptography cost some 12 MB per
worker, so only a worker with JWT on or an encryption key loads them (queen/security/
key_loading.py, keyring.py). The running worker's side is in test_encryption and
test_access_gate."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def test_importing_the_worker_loads_neither_pyjwt_nor_cryptography() -> None:
    probe = (
        "import sys, queen.worker; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jwt', 'cryptography'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


def test_importing_the_worker_loads_neither_the_web_framework_nor_hypercorn() -> None:
    """quart and hypercorn load with the first request that needs them
    (queen/http/lazy_app.py, serving.py); the running worker's side is test_lazy_loading."""
    deferred = {"quart", "quart_trio", "flask", "werkzeug", "jinja2", "click", "hypercorn", "h11"}
    deferred |= {"zipfile"}  # importlib.resources' readers: the SQL files are read without them
    probe = (
        "import sys, queen.worker; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {deferred!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"
