"""Imports point down: entry points → http → actors (and the client-facing errors) →
db/storage/sync → leaves. Built from the import statements of queen/ itself, so a new upward
import fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import queen

PACKAGE = Path(queen.__file__).parent

# Higher layers may import lower ones and their own; never the other way round.
LAYERS = {
    "queen.cli": 4,
    "queen.serve": 4,
    "queen.supervise": 4,
    "queen.worker": 4,
    "queen.__main__": 4,
    "queen.docs": 4,
    "queen.http": 3,
    # The auth proxy is an HTTP app of its own; it applies http's route level table.
    "queen.proxy": 3,
    "queen.actors": 2,
    # Client-facing error types, and the table turning database failures into them: actors raise
    # them, the database layer must not know them.
    "queen.errors": 2,
    "queen.db": 1,
    "queen.storage": 1,
    "queen.sync": 1,
    "queen.security": 1,
    "queen.config": 0,
    "queen.ids": 0,
    "queen.logs": 0,
    "queen.backoff": 0,
    "queen": 0,
}


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        if prefix in LAYERS:
            return prefix, LAYERS[prefix]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "queen" or name.startswith("queen.")}


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        importer_group, importer_layer = layer_of(importer)
        for imported in imports_of(path):
            _, imported_layer = layer_of(imported)
            if imported_layer > importer_layer:
                upward.append(f"{importer} ({importer_group}) imports {imported}")
    assert upward == []


def test_every_package_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))
