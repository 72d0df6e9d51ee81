"""The documents made from the settings table: ``.env.example`` and the variable tables of
README.md and the runbook (deploy/README.md).

``python -m broker_dev.settings_docs`` rewrites the three from :data:`broker.config.table.TABLE`
(run it from the repository's root after changing a variable); ``--check`` only names those that
differ, and exits 1. In the Markdown files only the lines between :data:`BEGIN` and :data:`END`
are generated. The few variables that other programs read (uvicorn, ``broker sandbox``) are
declared here, documented beside the broker's and never parsed by it.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.config.table import TABLE, Variable

COMMAND = "python -m broker_dev.settings_docs"
ENV_EXAMPLE = ".env.example"
TABLE_DOCUMENTS = ("README.md", "deploy/README.md")
BEGIN = f"<!-- BEGIN variables: made from broker/config/table.py by `{COMMAND}` -->"
END = "<!-- END variables -->"
WIDTH = 96
RULE = "# " + "=" * (WIDTH - 2)
SANDBOX_SECTION = "Development sandbox (`broker sandbox`) - not read by the broker itself"

PREAMBLE = f"""\
# The referral broker's configuration, one variable per entry. Copy this file to .env (which git
# ignores) and fill it in; the real environment wins over .env. Lines starting with "# NAME="
# show the default or an example and are not read.
#
# Every value below is a fake placeholder. The required ones are written so that the broker
# refuses to start until they are replaced: run `broker check` to see what is still wrong.
# Keep values free of spaces, quotes and inline comments, so that this file also works with
# `set -a; . ./.env; set +a` and with docker compose's env_file.
#
# A BROKER_* variable not listed here is a typo to the broker: `broker serve` logs a warning
# naming it and `broker check` fails.
#
# This file is made from broker/config/table.py: change a variable there, then run
# `{COMMAND}` (tests/unit/test_env_example.py fails while the two differ).
"""


@dataclass(frozen=True)
class Documented:
    """A variable documented with the broker's but read by another program."""

    name: str
    default: str
    summary: str = ""
    help: str = ""


# Read by uvicorn from the process environment (never from .env): in the tables only.
SERVER: tuple[Documented, ...] = (
    Documented(
        "FORWARDED_ALLOW_IPS",
        "127.0.0.1",
        "read by uvicorn, from the process environment only: the reverse proxy's address or "
        "range (e.g. `10.0.0.0/8`, the ingress pods' network) whose `X-Forwarded-For` becomes "
        "the client address. Never `*`: then any client can write its own `X-Forwarded-For`, "
        "get a fresh failed-issuer-key bucket for every guess, and `broker serve` logs "
        "`config.forwarded_allow_ips_any` at start",
    ),
)

# Read by `broker sandbox` (broker/sandbox/config.py): in .env.example's last section only.
SANDBOX: tuple[Documented, ...] = (
    Documented(
        "SANDBOX_DELAY",
        "0",
        help="Seconds (0 to 60) the sandbox adds to every API answer, to try slow-upstream "
        "behaviour (timeouts, stale cache).",
    ),
    Documented(
        "SANDBOX_FAST",
        "0",
        help="Benchmark mode (1/true/yes/on): CustomerReferrals2 answers a fixed body WITHOUT "
        "verifying the token's signature. For load tests only, never for correctness tests.",
    ),
    Documented(
        "SANDBOX_SEED",
        "1",
        help="0/false/no/off starts the sandbox without its demo referrals.",
    ),
    Documented(
        "SANDBOX_PORT",
        "8001",
        help="Port of `broker sandbox` (it also reads PORT).",
    ),
    Documented(
        "SANDBOX_CUSTOMERS",
        "any",
        help="Day-one behaviour of the real service (all also changeable with PUT "
        "/_sandbox/settings). `synced`: only seeded customers and those posted to "
        "/_sandbox/customers exist, others get 404 no_customers_match_customer_identity, as on "
        "Bubblehouse before the shop's platform syncs them. `any`: every customer token's "
        "customer exists from first use.",
    ),
    Documented(
        "SANDBOX_CHECK_EMAIL",
        "0",
        help="1/true/yes/on: a token email (ce) that disagrees with the sandbox's record of the "
        "customer gets 404 customer_identity_partially_mismatches_matched_customer.",
    ),
    Documented(
        "SANDBOX_RATE_LIMIT_READ",
        "0",
        help="Reads (CustomerReferrals2, Status2) per second per customer before 429 "
        "rate_limit_exceeded, like Bubblehouse's limits; 0 for no limit.",
    ),
    Documented(
        "SANDBOX_RATE_LIMIT_WRITE",
        "0",
        help="Writes (Refer2) per second per customer before 429 rate_limit_exceeded; 0 for no "
        "limit.",
    ),
)


def _comment(text: str) -> list[str]:
    """``text`` as comment lines: each line wrapped, a line that starts with spaces kept."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(" "):
            lines.append(f"# {line}")
        else:
            wrapped = textwrap.wrap(line, WIDTH - 2, break_long_words=False, break_on_hyphens=False)
            lines.extend(f"# {part}" for part in wrapped)
    return lines


def _shown(default: str | None) -> str:
    """A default as the documents write it."""
    if default is None:
        return "unset"
    return default or "empty"


def _heading(title: str) -> list[str]:
    return [RULE, f"# {title}", RULE, ""]


def _entry(variable: Variable[Any]) -> list[str]:
    lines = _comment(variable.help)
    if variable.required is not None:
        return [*lines, f"{variable.name}={variable.example or ''}", ""]
    shown = variable.example if variable.example is not None else variable.default
    return [*lines, f"# Default: {_shown(variable.default)}", f"# {variable.name}={shown}", ""]


def env_example() -> str:
    """The text of ``.env.example``: every variable of the table, then the sandbox's."""
    lines = [PREAMBLE]
    section = ""
    for variable in TABLE:
        if variable.section != section:
            section = variable.section
            lines.extend(_heading(section))
        lines.extend(_entry(variable))
    lines.extend(_heading(SANDBOX_SECTION))
    for documented in SANDBOX:
        lines.extend(_comment(documented.help))
        lines.extend(
            [f"# Default: {documented.default}", f"# {documented.name}={documented.default}", ""]
        )
    return "\n".join(lines).rstrip("\n") + "\n"


def variables_table() -> str:
    """The Markdown table of every variable the broker reads, then those uvicorn reads."""
    rows = ["| variable | default | secret | meaning |", "|---|---|---|---|"]
    for variable in TABLE:
        default = "required" if variable.required is not None else _code(variable.default)
        secret = "yes" if variable.secret else "no"
        rows.append(f"| `{variable.name}` | {default} | {secret} | {variable.summary} |")
    for documented in SERVER:
        rows.append(f"| `{documented.name}` | `{documented.default}` | no | {documented.summary} |")
    return "\n".join(rows) + "\n"


def _code(default: str | None) -> str:
    return f"`{default}`" if default else _shown(default)


def with_table(document: str) -> str:
    """``document`` with the lines between its markers replaced by :func:`variables_table`."""
    before, begin, rest = document.partition(BEGIN + "\n")
    _, end, after = rest.partition(END + "\n")
    if not begin or not end:
        raise ValueError(f"the document has no {BEGIN!r} ... {END!r} lines")
    return f"{before}{BEGIN}\n{variables_table()}{END}\n{after}"


def expected(root: Path) -> dict[str, str]:
    """What each generated file under ``root`` should hold, by its path relative to ``root``."""
    documents = {ENV_EXAMPLE: env_example()}
    for name in TABLE_DOCUMENTS:
        documents[name] = with_table((root / name).read_text(encoding="utf-8"))
    return documents


def stale(root: Path) -> list[str]:
    """The generated files under ``root`` that differ from what the table makes."""
    return [
        name
        for name, text in expected(root).items()
        if not (root / name).is_file() or (root / name).read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check`` compare) the files made from the settings table."""
    parser = argparse.ArgumentParser(
        prog=COMMAND, description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--check", action="store_true", help="only name the files that differ")
    parser.add_argument("--root", type=Path, default=Path(), help="the repository (default: .)")
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        differing = stale(root)
    except (OSError, ValueError) as exc:
        print(
            f"{COMMAND}: {exc} (run it from the repository's root, or pass --root)", file=sys.stderr
        )
        return 2
    if args.check:
        for name in differing:
            print(f"{name}: differs from broker/config/table.py; run `{COMMAND}`", file=sys.stderr)
        return 1 if differing else 0
    for name, text in expected(root).items():
        if name in differing:
            (root / name).write_text(text, encoding="utf-8")
            print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
