"""The package's layers: the map below, enforced on every import, and no circle.

The tree is the drawing of ``docs/architecture.md``: each subpackage of ``broker`` sits in one
layer, and a module imports only its own layer and the layers below it. The development tools
(``broker_dev``, in ``devtools/``) sit beside the product: the product never imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BROKER = ROOT / "broker"

# Top to bottom. A module's layer is that of its longest prefix in this map.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry", ("broker.cli",)),
    ("edge", ("broker.web", "broker.openapi", "broker.check")),
    ("wiring", ("broker.services",)),
    ("rules", ("broker.rules",)),
    ("adapters", ("broker.cache", "broker.store", "broker.upstream", "broker.telemetry")),
    ("foundation", ("broker.config", "broker.errors", "broker.tasks", "broker")),
)
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}


def layer_of(module: str) -> int:
    """The rank of ``module``'s layer (0 is the top), by its longest prefix in :data:`LAYERS`."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in RANK:
            return RANK[prefix]
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


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


def climbs(graph: dict[str, set[str]]) -> list[str]:
    """Every import of ``graph`` that reaches a higher layer, as ``importer -> imported``."""
    return [
        f"{name} -> {target}"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) < layer_of(name)
    ]


def test_no_import_climbs_a_layer() -> None:
    """Every module of the product imports only its own layer and the layers below it."""
    assert climbs(module_graph()) == []


def test_every_module_has_a_layer() -> None:
    """Each module of the package falls in one layer of the map (a new package must be placed)."""
    for name in module_graph():
        layer_of(name)


def test_a_climbing_import_is_found() -> None:
    """The check reports an adapter importing the edge, and not the edge importing an adapter."""
    graph = {"broker.cache.cache": {"broker.web.app"}, "broker.web.app": {"broker.cache.cache"}}
    assert climbs(graph) == ["broker.cache.cache -> broker.web.app"]


def test_the_product_never_imports_the_development_tools() -> None:
    """No module of ``broker`` except the command line imports ``broker_dev``, at any depth (the
    command line starts ``broker dev``, ``broker sandbox`` and ``broker check`` when present)."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in imported(path) if n.startswith("broker_dev"))
        for path in sorted(BROKER.rglob("*.py"))
        if path.name != "cli.py"
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_check_finds_an_import_of_the_development_tools(tmp_path: Path) -> None:
    """The import reader sees both spellings of an import."""
    module = tmp_path / "bad.py"
    module.write_text("import broker_dev.sandbox\nfrom broker_dev.demo import create_demo_app\n")
    assert {"broker_dev.sandbox", "broker_dev.demo"} <= imported(module)


def test_the_development_tools_live_outside_the_product() -> None:
    """The sandbox, the demo and the docs generator are in devtools/, not broker/ (the check is
    an operator's command: it ships in broker/)."""
    tools = ROOT / "devtools" / "broker_dev"
    assert (tools / "sandbox" / "__init__.py").is_file() and (tools / "demo" / "static").is_dir()
    assert (tools / "settings_docs.py").is_file() and (BROKER / "check" / "checks.py").is_file()
    assert not {"sandbox", "demo", "settings_docs"} & {p.stem for p in BROKER.rglob("*")}


def test_no_module_is_over_400_lines() -> None:
    """A module past 400 lines holds two concerns: split it."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in [*BROKER.rglob("*.py"), *(ROOT / "devtools").rglob("*.py")]
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


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
