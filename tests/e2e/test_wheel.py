"""The production wheel: the broker and its four client files, and none of the development
tools (sandbox, demo, check, docs generator) nor what only they need."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from broker.web.clientfiles import SERVED

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "clients" / "js" / "dist"


# One worker builds the wheel, once for the module (a build takes seconds).
pytestmark = pytest.mark.xdist_group("wheel")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, built once for the module."""
    return build(tmp_path_factory.mktemp("wheel"))


def build(tmp_path: Path) -> tuple[Path, str]:
    """The wheel, built by the pinned build backend of pyproject.toml in pip's isolated build
    environment, and what the build printed. It builds a copy of the checkout (what git does not
    ignore), so a build/ or .egg-info left by an earlier build cannot leak into it."""
    source = tmp_path / "source"
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        origin, copy = ROOT / name, source / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            copy.symlink_to(origin.readlink())
        elif origin.is_file():
            shutil.copyfile(origin, copy)
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "-v"),
            *("--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("referral_broker-*.whl")
    return wheel, built.stdout + built.stderr


def test_the_wheel_holds_no_development_tool(built: tuple[Path, str]) -> None:
    """The wheel holds the broker package alone (`broker check` included, an operator's
    command): no sandbox, demo or docs generator."""
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        files = [n for n in archive.namelist() if ".dist-info/" not in n]
    assert {f.split("/")[0] for f in files} == {"broker"}
    assert not [f for f in files if any(w in f for w in ("sandbox", "demo", "docs"))]
    assert "broker/web/app.py" in files and "broker/rules/functions.py" in files
    assert "broker/check/checks.py" in files and "broker/check/customer.py" in files


def test_the_product_needs_nothing_only_the_tools_need() -> None:
    """httpx2 (the demo's and the tests' client) is a dev extra, not a product dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("httpx")]
    assert any(d.startswith("httpx2") for d in project["optional-dependencies"]["dev"])
    assert "httpx2" not in (ROOT / "requirements.lock").read_text()


def test_the_cli_names_the_missing_tools() -> None:
    """Without the development tools (as in the production image), `broker dev` and `sandbox`
    say what is missing and exit 2 instead of failing with a traceback."""
    for command in ("dev", "sandbox"):
        # The child process cannot import broker_dev, as where only the wheel is installed.
        hide = "import sys; sys.modules['broker_dev'] = None; from broker.cli import main; "
        done = subprocess.run(
            [sys.executable, "-c", f"{hide}sys.exit(main([{command!r}]))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "development tools are not installed" in done.stderr


def test_build_holds_exactly_the_package_files(built: tuple[Path, str]) -> None:
    """The wheel has the built files of clients/js/dist (the four of the manifest and their
    source maps), no more, and the build warns of nothing deprecated (the license is an SPDX
    expression) or undeclared (the folder of those files is declared)."""
    wheel, printed = built
    assert "DeprecationWarning" not in printed
    assert "absent from the `packages` configuration" not in printed  # each folder declared
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        published = sorted(n for n in names if n.startswith("broker/clientjs/"))
        assert published == sorted(f"broker/clientjs/dist/{name}" for name in SERVED)
        for name in SERVED:
            assert archive.read(f"broker/clientjs/dist/{name}") == (DIST / name).read_bytes()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: LicenseRef-Proprietary" in archive.read(metadata).decode()
