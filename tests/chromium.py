"""Debian's chromium as the browser tests drive it (Playwright's own browser download cannot
reach its host here): where it is, and the flags that keep it from calling out at start."""

from __future__ import annotations

import os

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
