"""The login page in headless Chromium: a wrong password shows the error, the right one lands on
the broker's `/` through the proxy with a working session, and logging out revokes it."""

from __future__ import annotations

import httpx
from playwright.sync_api import sync_playwright

from tests.proxy.support import PASSWORD, ProxyProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_sign_in_and_out_in_a_browser(proxy: ProxyProcess) -> None:
    # localhost is a secure context for Chromium, so the proxy's Secure cookie is kept over http.
    base = f"http://localhost:{proxy.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{base}/")
            assert page.url == f"{base}/login"  # not signed in: sent to the login page

            page.fill("#username", "read_only")
            page.fill("#password", "not the password")
            page.click("#submit")
            page.wait_for_function(
                "document.getElementById('error').textContent === 'Invalid credentials'"
            )
            assert page.url == f"{base}/login"

            page.fill("#password", PASSWORD)
            page.click("#submit")
            page.wait_for_url(f"{base}/")
            listing = page.evaluate("fetch('/api/v1/resources/queues').then(r => r.status)")
            assert listing == 200  # the session cookie reaches the broker through the proxy
            cookie = next(c for c in page.context.cookies() if c["name"] == "token")
            assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"

            logout = page.evaluate("fetch('/api/logout', {method: 'POST'}).then(r => r.status)")
            assert logout == 200
            stale = httpx.get(
                f"{proxy.url}/api/me", headers={"Cookie": f"token={cookie['value']}"}, timeout=10
            )
            assert stale.status_code == 401
        finally:
            browser.close()
