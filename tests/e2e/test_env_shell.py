""".env.example and the docs' variable tables: made from the settings table, and still current.

.env.example lists every variable of broker.config.table.VARIABLES, in order, commented, not live;
the README's and the runbook's tables are generated between markers. A file that differs from what
the table makes fails here, naming the command that rewrites it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / ".env.example"

# "NAME=value" (read) or "# NAME=value" (documented default, not read).
ASSIGNMENT = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
SANDBOX_HEADING = "development sandbox"
SANDBOX_VARIABLES = ("SANDBOX_DELAY", "SANDBOX_FAST")
GROUPS = (
    "Required",
    "Upstream",
    "Redis",
    "Browser",
    "Tokens",
    "Cache",
    "Limits",
    "Observability",
    "Server",
    "Development sandbox",
)


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
