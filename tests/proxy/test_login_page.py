"""The login page in headless Chromium: a wrong password shows the error, the right one lands on
the broker's `/` through the proxy with a working session, and logging out revokes it."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.proxy.support import PASSWORD, ProxyProcess
from tests.support import REPO


def test_sign_in_and_out_in_a_browser(proxy: ProxyProcess) -> None:
    # localhost is a secure context for Chromium, so the proxy's Secure cookie is kept over http.
    base = f"http://localhost:{proxy.port}"
    done = subprocess.run(
        [sys.executable, "-m", "tests.proxy.browser_story", base, "read_only", PASSWORD],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["anonymous_lands_on"] == f"{base}/login"
    assert seen["error_shown"] == "Invalid credentials"
    assert seen["after_wrong_password"] == f"{base}/login"
    assert seen["signed_in_lands_on"] == f"{base}/"
    assert seen["listing_status"] == 200  # the session cookie reaches the broker via the proxy
    cookie = seen["cookie"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
    assert seen["logout_status"] == 200
    stale = httpx.get(
        f"{proxy.url}/api/me", headers={"Cookie": f"token={cookie['value']}"}, timeout=10
    )
    assert stale.status_code == 401
