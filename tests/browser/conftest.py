"""One headless Debian chromium per test module, driven by Playwright (its own browser download
cannot work here, so it is pointed at the system's binary), and a page that records every console
error and uncaught exception so a test can require there were none."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from queen.storage.pgcluster import PgCluster
from tests.support import ServerProcess, running_server

CHROMIUM = os.environ.get("QUEEN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    """Workers write their metric rows every second (not every minute), so the system page has
    workers and CPU samples to show while the test runs."""
    with running_server(pg_cluster, database, METRICS_AGGREGATE_INTERVAL_S="1") as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} not found: `make install` (or apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class WatchedPage:
    page: Page
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
def watched(browser: Browser) -> Iterator[WatchedPage]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(10_000)
    watched = WatchedPage(page)
    page.on("console", watched.on_console)
    page.on("pageerror", watched.on_page_error)
    try:
        yield watched
    finally:
        context.close()
