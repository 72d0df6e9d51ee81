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
    module.write_text("import broker.sandbox\nfrom broker.demo import create_demo_app\n")
    assert {"broker.sandbox", "broker.demo"} <= imported(module)


def test_product_modules_are_found() -> None:
    """The product list holds the service's modules and none of the development tools."""
    names = {path.stem for path in product_modules()}
    assert {"app", "api", "referrals", "cache", "upstream"} <= names
    assert not names & {"sandbox", "demo", "cli"}
    assert (BROKER / "sandbox" / "__init__.py").is_file() and (BROKER / "demo" / "static").is_dir()
