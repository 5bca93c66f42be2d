"""Writes docs/configuration.md from the Config fields, so names, defaults and meanings have one
source of truth; a test fails when the committed file drifts from the code."""

from __future__ import annotations

import sys
from pathlib import Path

from queen.config import documentation_table

HEADER = """# Configuration

queen reads its configuration from environment variables, once, at start-up. Names and defaults
are the original Queen MQ server's; a value that cannot be parsed stops start-up with one line
naming the variable (exit code 2). An empty value counts as unset.

This file is generated from `queen/config.py` by `python -m queen.docs`; do not edit it by hand.

Command-line flags of `queen serve` override their variables: `--port` (PORT), `--host` (HOST),
`--dev` (LOG_LEVEL=debug).

"""


def render() -> str:
    return HEADER + documentation_table()


def main() -> int:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/configuration.md")
    target.write_text(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
