"""SQL lives in sql/ and in queen/db only: routes and actors call typed functions, never strings
(issue 12). Every string literal in queen/ outside queen/db is scanned for SQL; docstrings are
prose and are skipped."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

QUEEN = Path(__file__).resolve().parents[2] / "queen"

# The migration runner applies the numbered files of sql/ and keeps its own bookkeeping table;
# it is the one reader of sql/ that is not a procedure call (owned by queen/storage).
ALLOWED = {QUEEN / "storage" / "migrations.py"}

SQL = re.compile(
    r"\bSELECT\s.+|\bINSERT\s+INTO\b|\bUPDATE\s+\S+\s+SET\b|\bDELETE\s+FROM\b|\bCALL\s+\w+\."
    r"|\b(?:CREATE|ALTER|DROP)\s+(?:TABLE|FUNCTION|PROCEDURE|INDEX|SCHEMA|DATABASE)\b"
    r"|\bqueen\.\w+\s*\(",
    re.DOTALL,
)


def _docstrings(tree: ast.Module) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_literals(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each string literal in `source` that reads as SQL."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and SQL.search(node.value)
        ):
            yield node.lineno, node.value


def test_the_scan_sees_sql_in_the_forms_queen_wrote_it() -> None:
    source = '''
"""A module docstring may say SELECT 1 in prose."""
a = "SELECT queen.list_queues($1::jsonb)"
b = ("INSERT INTO queen.system_state (key) VALUES ($1) "
     "ON CONFLICT (key) DO UPDATE SET value = 1")
c = "CALL queen.retention_round($1, NULL)"
d = f"DELETE FROM queen.messages WHERE id = {1}"
e = "Select the queue to clear"
'''
    assert [line for line, _ in sql_literals(source)] == [3, 4, 6, 7]


def test_no_sql_text_outside_queen_db() -> None:
    found = [
        f"{path.relative_to(QUEEN.parent)}:{line}: {text[:60]!r}"
        for path in sorted(QUEEN.rglob("*.py"))
        if path not in ALLOWED and (QUEEN / "db") not in path.parents
        for line, text in sql_literals(path.read_text())
    ]
    assert found == []
