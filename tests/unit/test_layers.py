"""The production packages never import the local runtime (infra/) or the CLI: infra/ is a leaf
that only the CLI and the tests use."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import REPO_ROOT

PRODUCTION = ("core", "schemas", "producers", "kafka_ops", "consumers", "gateway")
FORBIDDEN = ("infra", "cli")


def modules(package: str) -> Iterator[Path]:
    yield from sorted((REPO_ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module an import statement of `path` names, relative imports resolved."""
    package = list(path.relative_to(REPO_ROOT).parts[:-1])  # the package the module is in
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def test_the_walk_sees_imports() -> None:
    """The walk itself works: it finds what a known module imports."""
    control = REPO_ROOT / "core" / "adapters" / "triton_control.py"
    assert "core.adapters.triton_repository" in imported(control)
    assert "infra.process" in imported(REPO_ROOT / "infra" / "kafka.py")


@pytest.mark.parametrize("package", PRODUCTION)
def test_production_code_does_not_import_the_local_runtime(package: str) -> None:
    offending = {
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for path in modules(package)
        for name in imported(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offending, "production code imports infra/ or cli/:\n" + "\n".join(sorted(offending))
