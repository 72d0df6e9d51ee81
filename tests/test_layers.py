"""The package's layering: the product never imports its development tools."""

from __future__ import annotations

import ast
from pathlib import Path

BROKER = Path(__file__).resolve().parents[1] / "broker"
DEV_TOOLS = ("broker.sandbox", "broker.demo")
# The command line starts the development tools (`broker dev`, `broker sandbox`); the tools
# (the subpackages broker/sandbox and broker/demo) may import each other and the product.
ENTRY = {"cli"}


def imported(path: Path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` of ``path`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def product_modules() -> list[Path]:
    """The service's modules: the package's own files, less the command line (the development
    tools are subpackages, so they are not among them)."""
    return [path for path in sorted(BROKER.glob("*.py")) if path.stem not in ENTRY]


def test_no_product_module_imports_the_sandbox_or_the_demo() -> None:
    """No module the service runs imports the sandbox or the demo, at any depth (every product
    module is checked, so a chain would have to pass through one of them)."""
    offenders = {
        path.name: sorted(n for n in imported(path) if n.startswith(DEV_TOOLS))
        for path in product_modules()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_check_finds_an_import_of_the_sandbox(tmp_path: Path) -> None:
    """The import reader sees both spellings of an import of the sandbox."""
    module = tmp_path / "bad.py"
    module.write_text("import broker_dev.sandbox\nfrom broker_dev.demo import create_demo_app\n")
    assert {"broker.sandbox", "broker.demo"} <= imported(module)


def test_product_modules_are_found() -> None:
    """The product list holds the service's modules and none of the development tools."""
    names = {path.stem for path in product_modules()}
    assert {"app", "api", "referrals", "cache", "upstream"} <= names
    assert not names & {"sandbox", "demo", "cli"}
    assert (BROKER / "sandbox" / "__init__.py").is_file() and (BROKER / "demo" / "static").is_dir()


def module_graph() -> dict[str, set[str]]:
    """``broker.x`` -> the ``broker`` modules it imports (type-only and late imports included)."""
    paths = {
        ".".join(path.relative_to(BROKER.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        ): path
        for path in BROKER.rglob("*.py")
    }
    return {
        name: {n for n in imported(path) if n in paths and n != name}
        for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of ``graph``, each once, found by a depth-first walk."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                circle = path[path.index(nxt) :]
                if frozenset(circle) not in seen:
                    seen.add(frozenset(circle))
                    found.append([*circle, nxt])
            elif len(path) < len(graph):
                walk(nxt, [*path, nxt])

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            walk(start, [start])
            done.add(start)
    return found


def test_the_import_graph_has_no_circle() -> None:
    """No module of the package imports, at any depth, a module that imports it back (a
    ``TYPE_CHECKING`` or function-level import counts: it is still a circle to a reader)."""
    assert cycles(module_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    """The walk reports a circle of three once, and nothing in a chain."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
