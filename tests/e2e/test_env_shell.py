"""`.env.example` as a POSIX shell reads it (`set -a; . ./.env`): the values python-dotenv reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / ".env.example"


def test_a_posix_shell_reads_the_same_values() -> None:
    """`set -a; . ./.env` in sh yields the values python-dotenv reads (no quoting traps)."""
    expected = {k: v for k, v in dotenv_values(EXAMPLE).items() if v is not None}
    seen = sourced_in_shell(EXAMPLE)
    assert {name: seen.get(name) for name in expected} == expected


def sourced_in_shell(path: Path) -> dict[str, str]:
    """The environment a POSIX shell has after `set -a; . path`."""
    result = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; set +a; env -0', "sh", str(path)],
        capture_output=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    return dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if item)
