"""Named statements in sql/queries/*.sql (queen/db/queries.py): each file reads as blocks under
`-- name:` lines, and a file that could be misread is refused instead."""

from __future__ import annotations

from importlib import resources

import pytest

from queen.db import queries

FILE = """-- What this file is for.

-- name: first
-- comment kept with the statement
SELECT 1;

-- name: second
INSERT INTO t (a)
VALUES ($1)
"""


def test_blocks_are_read_by_name_without_the_header_or_the_semicolon() -> None:
    assert queries.parse(FILE) == {
        "first": "-- comment kept with the statement\nSELECT 1",
        "second": "INSERT INTO t (a)\nVALUES ($1)",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;", "defined twice"),
        ("-- name: a\n\n-- name: b\nSELECT 2;", "has no statement"),
        ("-- name: Read-Flags\nSELECT 1;", "not a lower-case identifier"),
    ],
)
def test_ambiguous_files_are_refused(text: str, problem: str) -> None:
    with pytest.raises(queries.QueryFileError, match=problem):
        queries.parse(text)


def test_every_shipped_file_parses_and_a_missing_name_is_an_error() -> None:
    folder = resources.files("queen.sql").joinpath("queries")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    assert names, "the queries ship inside the package"
    for name in names:
        assert queries.parse(folder.joinpath(name).read_text())
    assert queries.named("health", "ping").endswith("SELECT 1")
    with pytest.raises(queries.QueryFileError, match="no query 'nope'"):
        queries.named("health", "nope")
