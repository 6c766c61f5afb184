"""The layers' imports point down only (docs/ARCHITECTURE.md): read from the source, not from what happens to be
imported at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "fedsecure"

#: What each package may import of fedsecure's own packages (besides itself and the top-level helpers).
ALLOWED = {
    "crypto": set(),
    "encoding": set(),
    "protocols": {"crypto", "encoding"},
    "dp": {"crypto", "encoding"},
    "pipeline": {"crypto", "encoding", "protocols", "dp"},
    "runtime": {"crypto", "encoding", "protocols", "dp", "pipeline"},
    "fl": {"crypto", "encoding", "protocols", "dp", "pipeline", "runtime"},
    "flower": {"crypto", "encoding", "protocols", "dp", "pipeline", "runtime"},
}


def _imported_packages(path: Path) -> set[str]:
    """The fedsecure packages a module imports (absolute or relative), at any depth of its code."""
    package_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package_parts[: len(package_parts) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{alias.name}" for alias in node.names]
            elif node.module:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fedsecure" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(package: str) -> None:
    top_level = {path.stem for path in PACKAGE.glob("*.py")} | {"_errors", "_io"}
    wrong = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        imported = _imported_packages(path) - {package} - top_level - ALLOWED[package]
        if imported:
            wrong[str(path.relative_to(PACKAGE))] = sorted(imported)
    assert not wrong, wrong
