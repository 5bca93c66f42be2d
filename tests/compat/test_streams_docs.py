"""The streaming example of docs/streams.md, run as a new user would: its code block, unchanged,
under queen-mq 0.15.0 against a live server, printing exactly the output the page shows."""

from __future__ import annotations

import pytest

from tests.compat.harness import ClientRunner
from tests.support import REPO

pytestmark = pytest.mark.compat

PAGE = REPO / "docs" / "streams.md"
# Runs the example's source with its prints captured, and hands them over as the JSON result line.
WRAPPER = """
import contextlib, io, json
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    exec(compile({source!r}, "docs/streams.md", "exec"), {{"__name__": "__main__"}})
print(json.dumps(printed.getvalue()))
"""


def blocks(language: str) -> list[str]:
    """The page's fenced blocks tagged `language` ("" for untagged ones), in order."""
    found: list[str] = []
    current: list[str] | None = None
    tag = ""
    for line in PAGE.read_text().splitlines(keepends=True):
        if line.startswith("```") and current is None:
            current, tag = [], line[3:].strip()
        elif line.startswith("```") and current is not None:
            if tag == language:
                found.append("".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return found


@pytest.mark.timeout(90)
def test_the_windowed_aggregation_example_prints_the_sums_the_page_shows(
    client015: ClientRunner,
) -> None:
    (example,) = blocks("python")
    shown = next(block for block in blocks("") if "orders, total" in block)
    printed = client015.run(WRAPPER.format(source=example), timeout_s=60)
    assert printed.startswith(shown), printed
