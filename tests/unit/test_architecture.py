"""Imports point one way: cli/scheduler/web → services → db → domain → errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"

# Which top-level parts of the package each part may import.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "clock": set(),
    "config": {"errors"},
    "domain": {"domain", "errors"},
    "db": {"db", "domain", "errors", "config"},
    "remote": {"remote", "domain", "errors", "config"},
    # The image store does local disk I/O only: no database, services or HTTP.
    "imagestore": {"imagestore", "domain", "errors"},
    "services": {"services", "db", "domain", "errors", "clock", "config", "remote", "imagestore"},
    "scheduler": {"scheduler", "services", "domain", "errors", "clock", "config"},
    "web": {"web", "services", "domain", "errors", "clock", "config", "__init__"},
    "cli": {
        "cli",
        "services",
        "domain",
        "errors",
        "clock",
        "config",
        "scheduler",
        "web",
        "__init__",
    },
    "__main__": {"cli"},
    "__init__": set(),
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "orchestrator":
                names = [
                    f"orchestrator.{a.name}"
                    if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()
                    else "orchestrator"
                    for a in node.names
                ]
        for name in names:
            if name == "orchestrator" or name.startswith("orchestrator."):
                parts = name.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_the_layers_below_it(path: Path) -> None:
    part = _part(path)
    assert part in ALLOWED, f"{part} is a new part of the package: give it a place in ALLOWED"
    illegal = _imported_parts(path) - ALLOWED[part] - {part}
    assert not illegal, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(illegal)}"


def test_the_domain_does_no_io_and_reads_no_clock() -> None:
    forbidden = ("open(", "datetime.now(", "date.today(", "time.time(", "sqlalchemy", "sqlmodel")
    for path in (PACKAGE / "domain").rglob("*.py"):
        text = path.read_text()
        for word in forbidden:
            assert word not in text, f"{path.name} uses {word}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every module of the package ``path`` imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found & known


def _loop_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        here, path = stack.pop()
        for there in graph[here]:
            if there == start:
                return [*path, start]
            if there not in seen:
                seen.add(there)
                stack.append((there, [*path, there]))
    return None


def test_no_module_imports_itself_back_not_even_at_call_time() -> None:
    paths = {_module_name(p): p for p in MODULES}
    graph = {name: _imported_modules(p, set(paths)) - {name} for name, p in paths.items()}
    loops = [loop for name in sorted(graph) if (loop := _loop_through(graph, name))]
    assert not loops, "import loops: " + "; ".join(" -> ".join(loop) for loop in loops)
