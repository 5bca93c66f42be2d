"""One headless Debian chromium per test module, driven by Playwright (its own browser download
cannot work here, so it is pointed at the system's binary), and pages that record every console
error and uncaught exception so a test can require there were none.

Playwright's sync API runs an asyncio loop of its own, which trio-asyncio (imported by any test
module that imports the server) would replace with one of its loops: the browser lives on a
thread of its own with the standard loop, and a test hands it the browser part of its story
(`BrowserThread.run`).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright, sync_playwright

from queen.storage.pgcluster import PgCluster
from tests.chromium import CHROMIUM, CHROMIUM_FLAGS
from tests.support import ServerProcess, running_server

VIEWPORT = {"width": 1400, "height": 900}
T = TypeVar("T")


@dataclass
class WatchedPage:
    page: Page
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")


class BrowserThread:
    """Chromium and every call to it on one thread (Playwright's objects belong to the thread
    that made them)."""

    def __init__(self) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser")
        self.playwright: Playwright | None = None
        self.browser: Browser | None = None

    def start(self) -> None:
        self.thread.submit(self._start).result()

    def _start(self) -> None:
        # trio-asyncio (imported by any module that imports the server) makes every new asyncio
        # loop one of its own, which cannot host Playwright's; a policy set outside trio holds
        # for this thread only.
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS
        )

    def run(self, story: Callable[[WatchedPage], T]) -> T:
        """`story` on the browser's thread, with a fresh page (its own context) watched for
        console errors; its result or exception comes back here."""
        return self.thread.submit(self._run, story).result()

    def _run(self, story: Callable[[WatchedPage], T]) -> T:
        assert self.browser is not None
        context = self.browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        page = context.new_page()
        page.set_default_timeout(10_000)
        watched = WatchedPage(page)
        page.on("console", watched.on_console)
        page.on("pageerror", watched.on_page_error)
        try:
            return story(watched)
        finally:
            context.close()

    def close(self) -> None:
        def stop() -> None:
            if self.browser is not None:
                self.browser.close()
            if self.playwright is not None:
                self.playwright.stop()

        try:
            self.thread.submit(stop).result()
        finally:
            self.thread.shutdown()


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    """Workers write their metric rows every second (not every minute), so the system page has
    workers and CPU samples to show while the test runs."""
    with running_server(pg_cluster, database, METRICS_AGGREGATE_INTERVAL_S="1") as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserThread]:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} not found: `make chromium` (or apt-get install chromium)")
    browser = BrowserThread()
    try:
        browser.start()
        yield browser
    finally:
        browser.close()
