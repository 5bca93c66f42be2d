"""The login page driven in headless Chromium, in a process of its own: Playwright runs an asyncio
loop, which trio-asyncio (imported by the test suite) does not let run in the test process.

Usage: python -m tests.proxy.browser_story BASE_URL USERNAME PASSWORD
Prints one JSON object of what the browser saw.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from playwright.sync_api import sync_playwright

from tests.chromium import CHROMIUM, CHROMIUM_FLAGS


def story(base: str, username: str, password: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{base}/")
            seen["anonymous_lands_on"] = page.url

            page.fill("#username", username)
            page.fill("#password", "not the password")
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent !== ''")
            seen["error_shown"] = page.text_content("#error")
            seen["after_wrong_password"] = page.url

            page.fill("#password", password)
            page.click("#submit")
            page.wait_for_url(f"{base}/")
            seen["signed_in_lands_on"] = page.url
            seen["listing_status"] = page.evaluate(
                "fetch('/api/v1/resources/queues').then(r => r.status)"
            )
            seen["cookie"] = next(c for c in page.context.cookies() if c["name"] == "token")
            seen["logout_status"] = page.evaluate(
                "fetch('/api/logout', {method: 'POST'}).then(r => r.status)"
            )
        finally:
            browser.close()
    return seen


if __name__ == "__main__":
    print(json.dumps(story(*sys.argv[1:4])))
