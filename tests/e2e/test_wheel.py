"""The published client files over HTTP (spec 3.7): manifest, versioned and plain paths."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from broker.web.clientfiles import NAMES

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ORIGIN = "https://shop.example"  # allowed by the test settings


def test_build_holds_exactly_the_package_files(tmp_path: Path) -> None:
    """The wheel, built by the pinned build backend of pyproject.toml in pip's isolated build
    environment, has the four files of clients/js, no more, and the build warns of nothing
    deprecated (the license is an SPDX expression)."""
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "-v"),
            *("--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(ROOT)),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "DeprecationWarning" not in built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("referral_broker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        published = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("broker/clientjs/"))
        assert published == sorted(NAMES)
        for name in NAMES:
            assert archive.read(f"broker/clientjs/{name}") == (CLIENT / name).read_bytes()
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: LicenseRef-Proprietary" in archive.read(metadata).decode()
