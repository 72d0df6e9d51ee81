"""The npm package clients/js: node's own tests against a real broker, strict types, its tarball."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.web.clientfiles import NAMES
from tests.support import ISSUER_KEY, SHOP

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
# One tsc diagnostic without --pretty: "file(line,col): error TS1234: message".
DIAGNOSTIC = re.compile(r"(?P<file>[^(\s]+)\(\d+,\d+\): error (?P<code>TS\d+): ")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# The framework wrappers, published in the npm package only (the broker serves NAMES).
WRAPPERS = ("react.js", "react.d.ts", "vue.js", "vue.d.ts")
# The widget's budget on the wire, minified and bundled with the client: under 16 KB (16,000
# bytes) with gzip at level 9 as build.mjs measures it, and with brotli, which every supported
# browser accepts and the broker serves. Before the bundle, the widget and the client it imported
# came to 15.2 + 2.8 KB gzip in two requests.
WIDGET_BROTLI_BUDGET = 16_000
WIDGET_GZIP_BUDGET = 16_000


def tool(name: str) -> str:
    """A Node tool: node and npm from PATH, the rest from the package's node_modules."""
    if name in ("node", "npm"):
        found = shutil.which(name)
        assert found, f"{name} is not installed: run bash scripts/setup --test"
        return found
    local = CLIENT / "node_modules" / ".bin" / name
    assert local.exists(), f"{local.relative_to(ROOT)} is missing: run bash scripts/setup --test"
    return str(local)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args,
        cwd=CLIENT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return done


def test_node_suite_against_a_real_broker(wire_broker: Any) -> None:
    """clients/js/test/*.test.mjs (node --test) pass against this broker and sandbox."""
    tests = sorted(str(p.relative_to(CLIENT)) for p in (CLIENT / "test").glob("*.test.mjs"))
    assert len(tests) >= 2
    done = run(
        tool("node"),
        "--test",
        *tests,
        env={"BROKER_URL": wire_broker.url, "BROKER_SHOP": SHOP, "BROKER_ISSUER_KEY": ISSUER_KEY},
    )
    assert "# fail 0" in done.stdout
    assert "# pass 0" not in done.stdout


# A storefront's file that reads a member of share_action without the type guard.
OPAQUE_MISUSE = (
    'import { createReferralsClient } from "@referral-broker/client";\n'
    'const c = createReferralsClient({ baseUrl: "b", shop: "s", getToken: () => "t" });\n'
    "export async function f(): Promise<string> {\n"
    '  const answer = await c.sendReferral({ channel: "sms" });\n'
    "  const url: string = answer.share_action!.url;\n"
    "  return url;\n"
    "}\n"
)


@dataclass(frozen=True)
class TypeCheck:
    """One tsc run over test/tsconfig.json's files plus the misuse file: its exit code and its
    diagnostics, by file."""

    returncode: int
    misuse: str
    errors: dict[str, list[str]]


@pytest.fixture(scope="module")
def typecheck() -> TypeCheck:
    """tsc, once for the module, over the package's strict test project and the misuse file
    (a config extending test/tsconfig.json, so the same compiler options hold for both)."""
    misuse = f"opaque-{os.getpid()}.ts"
    project = CLIENT / "test" / f"tsconfig-{os.getpid()}.json"
    base = json.loads((CLIENT / "test" / "tsconfig.json").read_text())
    (CLIENT / "test" / misuse).write_text(OPAQUE_MISUSE)
    project.write_text(
        json.dumps({"extends": "./tsconfig.json", "files": [*base["files"], misuse]})
    )
    try:
        done = subprocess.run(
            [tool("tsc"), "-p", str(project.relative_to(CLIENT)), "--pretty", "false"],
            cwd=CLIENT,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        project.unlink()
        (CLIENT / "test" / misuse).unlink()
    errors: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        found = DIAGNOSTIC.match(line)
        assert found or line.startswith(" "), f"not a tsc diagnostic: {line!r}"
        if found:
            errors.setdefault(found["file"], []).append(found["code"])
    return TypeCheck(done.returncode, f"test/{misuse}", errors)


def test_types_compile_under_strict(typecheck: TypeCheck) -> None:
    """tsc --strict accepts both .d.ts files and a storefront's consumer file using them."""
    config = json.loads((CLIENT / "test" / "tsconfig.json").read_text())
    assert config["compilerOptions"]["strict"] is True
    assert {"../referrals.d.ts", "../referral-widget.d.ts", "consumer.ts"} <= set(config["files"])
    assert {name for name in typecheck.errors if name != typecheck.misuse} == set(), (
        typecheck.errors
    )


def test_share_action_is_opaque_to_typescript(typecheck: TypeCheck) -> None:
    """Reading a member of share_action without the type guard is a compile error."""
    assert typecheck.returncode != 0
    assert "TS2322" in typecheck.errors[typecheck.misuse]  # 'unknown' is not assignable to 'string'


def test_npm_pack_holds_the_files_at_the_brokers_version() -> None:
    """npm pack of clients/js publishes the four files and the framework wrappers (plus
    package.json, README) at the broker's version."""
    done = run(tool("npm"), "pack", "--dry-run", "--json", "--offline", "--ignore-scripts")
    (packed,) = json.loads(done.stdout)
    assert packed["version"] == VERSION
    files = {entry["path"] for entry in packed["files"]}
    assert files == {*NAMES, *WRAPPERS, "package.json", "README.md"}


@pytest.mark.parametrize("name", [*NAMES, *WRAPPERS])
def test_package_exports_every_file(name: str) -> None:
    """package.json's exports and types point at files that exist; no runtime dependencies."""
    package = json.loads((CLIENT / "package.json").read_text())
    assert "dependencies" not in package
    targets = json.dumps(package["exports"])
    assert f"./{name}" in targets
    assert (CLIENT / name).exists()
    assert (CLIENT / package["types"]).exists()


BUILT = (
    "referrals.js",
    "referrals.js.map",
    "referral-widget.js",
    "referral-widget.js.map",
    "referrals.d.ts",
    "referral-widget.d.ts",
)


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """build.mjs run once into a fresh directory: the directory and the build's report."""
    outdir = tmp_path_factory.mktemp("dist")
    done = run(tool("node"), "build.mjs", str(outdir))
    report: dict[str, Any] = json.loads(done.stdout)
    return outdir, report


def test_committed_dist_is_what_the_sources_build(rebuilt: tuple[Path, dict[str, Any]]) -> None:
    """Rebuilding from the sources gives the committed clients/js/dist byte for byte, so what
    the broker serves never drifts from clients/js (after a change: node build.mjs, commit)."""
    outdir, report = rebuilt
    assert sorted(p.name for p in outdir.iterdir()) == sorted(report["files"]) == sorted(BUILT)
    assert sorted(p.name for p in (CLIENT / "dist").iterdir()) == sorted(BUILT)
    stale = [n for n in BUILT if (outdir / n).read_bytes() != (CLIENT / "dist" / n).read_bytes()]
    assert stale == [], f"clients/js/dist is stale: run node clients/js/build.mjs ({stale})"


def test_build_writes_minified_files_with_source_maps(rebuilt: tuple[Path, dict[str, Any]]) -> None:
    """build.mjs writes both modules minified, each naming its map, whose sources are the
    package's files (relative, so the bytes do not depend on where the build ran)."""
    outdir, _ = rebuilt
    for name, sources in (
        ("referrals.js", ["../referrals.js"]),
        ("referral-widget.js", ["../referrals.js", "../referral-widget.js"]),
    ):
        built = (outdir / name).read_text()
        assert built.rstrip().endswith(f"//# sourceMappingURL={name}.map")
        source_map = json.loads((outdir / f"{name}.map").read_text())
        assert source_map["sources"] == sources
        assert len(built) < sum(len(text) for text in source_map["sourcesContent"]) * 0.7
        assert source_map["sourcesContent"][-1] == (CLIENT / name).read_text()
    assert str(ROOT) not in "".join(p.read_text() for p in outdir.iterdir())


# Imports the built widget alone (nothing beside it to import) and lists what it exports.
IMPORT_ALONE = """
const widget = await import(process.argv[1]);
console.log(JSON.stringify({
  exports: Object.keys(widget).sort(),
  languages: Object.keys(widget.MESSAGES).length,
  qr: widget.qrModules("https://shop.example/r/abc").length,
}));
"""


def test_published_widget_is_one_self_contained_module(
    rebuilt: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The built widget carries the client inside it: it imports nothing, so the integrity of
    its one <script> tag covers everything it runs; it works with no referrals.js beside it."""
    outdir, _ = rebuilt
    alone = tmp_path / "referral-widget.js"
    alone.write_bytes((outdir / "referral-widget.js").read_bytes())
    done = run(tool("node"), "--input-type=module", "-e", IMPORT_ALONE, str(alone))
    loaded = json.loads(done.stdout)
    assert loaded["exports"] == ["MESSAGES", "ReferralWidget", "addMessages", "qrModules"]
    assert loaded["languages"] == 7
    assert loaded["qr"] == 25  # a version 2 code
    assert "referrals.js" not in alone.read_text().replace("referral-widget.js.map", "")


def test_widget_within_its_budget(rebuilt: tuple[Path, dict[str, Any]]) -> None:
    """The bundled widget (client included) stays within its budget on the wire: brotli, what
    the broker sends every supported browser, and gzip for anything else."""
    _, report = rebuilt
    sizes = report["sizes"]["referral-widget.js"]
    assert sizes["br"] < WIDGET_BROTLI_BUDGET, sizes
    assert sizes["gzip"] < WIDGET_GZIP_BUDGET, sizes


# A storefront on TypeScript's older resolution (moduleResolution "node"), which reads
# typesVersions rather than exports, importing every subpath.
NODE10_CONSUMER = """
import { createReferralsClient } from "@referral-broker/client";
import { ReferralWidget, addMessages } from "@referral-broker/client/widget";
import { ReferralWidget as ForReact } from "@referral-broker/client/react";
import { ReferralWidget as ForVue } from "@referral-broker/client/vue";
const widget: ReferralWidget = document.createElement("referral-widget");
addMessages("pl", { send: "Wyslij" });
console.log(createReferralsClient, widget.scheme, ForReact, ForVue);
"""


def test_typings_resolve_under_module_resolution_node(tmp_path: Path) -> None:
    """Under moduleResolution "node" every subpath (widget, react, vue) finds its types."""
    scope = tmp_path / "node_modules" / "@referral-broker"
    scope.mkdir(parents=True)
    (scope / "client").symlink_to(CLIENT, target_is_directory=True)
    (tmp_path / "consumer.ts").write_text(NODE10_CONSUMER)
    frameworks = CLIENT / "test" / "standins" / "frameworks.d.ts"
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "ES2022",
            "module": "ESNext",
            "moduleResolution": "node",
            "lib": ["ES2022", "DOM"],
            "types": [],
        },
        "files": ["consumer.ts", str(frameworks)],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    done = subprocess.run(
        [tool("tsc"), "-p", str(tmp_path / "tsconfig.json"), "--pretty", "false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout
