"""Imports point down only: queen/http -> queen/actors -> queen/db -> sql/. The database layer
never reaches up to an actor, a route, or the HTTP error table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

QUEEN = Path(__file__).resolve().parents[2] / "queen"
ABOVE_DB = ("queen.actors", "queen.http", "queen.errors", "queen.worker", "queen.cli")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((QUEEN / "db").glob("*.py")), ids=lambda p: p.name)
def test_the_database_layer_imports_nothing_above_it(path: Path) -> None:
    upward = {name for name in imported_modules(path) if name.startswith(ABOVE_DB)}
    assert upward == set()
