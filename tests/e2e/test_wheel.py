"""The published client files over HTTP (spec 3.7): manifest, versioned and plain paths."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from broker.web.clientfiles import NAMES

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ORIGIN = "https://shop.example"  # allowed by the test settings


def test_build_holds_exactly_the_package_files(tmp_path: Path) -> None:
    """setuptools' build (what goes into the wheel) has the four files of clients/js, no more."""
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
    assert sorted(p.name for p in published.iterdir()) == sorted(NAMES)
    for name in NAMES:
        assert (published / name).read_bytes() == (CLIENT / name).read_bytes()
