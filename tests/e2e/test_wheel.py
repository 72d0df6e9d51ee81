"""The wheel carries the built client files the broker serves (spec 3.7), and nothing else of
clients/js."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from broker.web.clientfiles import SERVED

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "clients" / "js" / "dist"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ORIGIN = "https://shop.example"  # allowed by the test settings


def test_build_holds_exactly_the_package_files(tmp_path: Path) -> None:
    """setuptools' build (what goes into the wheel) has the built files of clients/js/dist (the
    four of the manifest and their source maps), no more."""
    # build_py is the step that lays the package out for the wheel; building the wheel itself
    # would need the `wheel` package, which the test environment does not otherwise need.
    subprocess.run(
        [
            *(sys.executable, "-c", "from setuptools import setup; setup()"),
            *("-q", "build_py", "--build-lib", str(tmp_path)),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    published = tmp_path / "broker" / "clientjs"
    assert not published.is_symlink()
    assert [p.name for p in published.iterdir()] == ["dist"]
    assert sorted(p.name for p in (published / "dist").iterdir()) == sorted(SERVED)
    for name in SERVED:
        assert (published / "dist" / name).read_bytes() == (DIST / name).read_bytes()
