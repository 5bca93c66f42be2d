"""Named statements kept in `sql/queries/<concern>.sql`, for what is not a stored-procedure call
(reading and writing the cluster switches, the health probe, plain counts).

A file holds blocks that each start with a `-- name: <name>` line; the text up to the next such
line is the statement. Modules load the statements they use once, at import, by name, so a
statement missing from its file fails at start-up rather than on the first request that needs it.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from pathlib import Path


def _queries_directory() -> Path:
    """The `queen.sql` package's own directory (sql/ in a checkout, queen/sql in a wheel), found
    through its module: importlib.resources would find the same, and bring zipfile and its readers
    into every worker, ~0.4 MB of RSS each."""
    package = importlib.import_module("queen.sql")
    assert package.__file__ is not None, "queen.sql is a regular package"
    return Path(package.__file__).parent / "queries"


_QUERIES = _queries_directory()

_NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)
_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class QueryFileError(Exception):
    """A queries file that cannot be read as named statements."""


def parse(text: str) -> dict[str, str]:
    """Statements by name; text before the first name line (a file's header comment) is not
    part of any statement."""
    names = list(_NAME_LINE.finditer(text))
    statements: dict[str, str] = {}
    for index, match in enumerate(names):
        name = match.group(1)
        end = names[index + 1].start() if index + 1 < len(names) else len(text)
        sql = text[match.end() : end].strip().rstrip(";").strip()
        if not _VALID_NAME.match(name):
            raise QueryFileError(f"query name {name!r} is not a lower-case identifier")
        if name in statements:
            raise QueryFileError(f"query {name!r} is defined twice")
        if not sql:
            raise QueryFileError(f"query {name!r} has no statement")
        statements[name] = sql
    return statements


@cache
def _load(concern: str) -> dict[str, str]:
    text = (_QUERIES / f"{concern}.sql").read_text()
    return parse(text)


def named(concern: str, name: str) -> str:
    """The statement `name` of `sql/queries/<concern>.sql`."""
    try:
        return _load(concern)[name]
    except KeyError:
        raise QueryFileError(f"no query {name!r} in sql/queries/{concern}.sql") from None
