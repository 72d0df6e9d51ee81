""".env.example: every variable of broker.settings.VARIABLES, in order, commented, not live."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

from broker.settings import VARIABLES, ConfigError, deployment_problems, parse

ROOT = Path(__file__).resolve().parents[1]
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


def lines() -> list[str]:
    return EXAMPLE.read_text(encoding="utf-8").splitlines()


def assignments(text_lines: list[str]) -> list[tuple[int, str, bool, str]]:
    """(line index, name, commented out, value) for every assignment line."""
    found = []
    for index, line in enumerate(text_lines):
        match = ASSIGNMENT.match(line.strip())
        if match:
            found.append((index, match["name"], bool(match["commented"]), match["value"]))
    return found


def split_at_sandbox() -> tuple[list[str], list[str]]:
    text_lines = lines()
    for index, line in enumerate(text_lines):
        if line.startswith("#") and SANDBOX_HEADING in line.lower():
            return text_lines[:index], text_lines[index:]
    raise AssertionError(".env.example has no development sandbox section")


def test_lists_every_variable_in_settings_order() -> None:
    """The broker's section names each variable of VARIABLES once, in the same order."""
    broker_part, _ = split_at_sandbox()
    names = [name for _, name, _, _ in assignments(broker_part)]
    assert names == list(VARIABLES)


def test_every_variable_has_a_comment_above_it() -> None:
    """Each variable is preceded by a comment line explaining it, not by another variable."""
    text_lines = lines()
    for index, name, _, _ in assignments(text_lines):
        above = text_lines[index - 1].strip() if index else ""
        assert above.startswith("#"), f"{name} has no comment above it"
        assert not ASSIGNMENT.match(above), f"{name} shares its comment with another variable"


def comment_above(text_lines: list[str], index: int) -> str:
    """The comment block directly above line ``index``, joined."""
    block: list[str] = []
    cursor = index - 1
    while cursor >= 0 and text_lines[cursor].startswith("#"):
        block.insert(0, text_lines[cursor])
        cursor -= 1
    return " ".join(block)


def test_optional_variables_state_their_default() -> None:
    """Each commented-out (optional) variable's comment says its default."""
    broker_part, _ = split_at_sandbox()
    for index, name, commented, _ in assignments(broker_part):
        if commented:
            assert "default" in comment_above(broker_part, index).lower(), name


def test_set_variables_are_exactly_the_required_ones() -> None:
    """Only the three required variables are uncommented, under the Required heading."""
    text_lines = lines()
    heading = text_lines.index("# Required")
    end = next(i for i in range(heading + 2, len(text_lines)) if text_lines[i].startswith("# ="))
    active = [(i, n) for i, n, commented, _ in assignments(text_lines) if not commented]
    assert [n for _, n in active] == ["BROKER_SHOP", "BROKER_SIGNING_KEYS", "BROKER_ISSUER_KEYS"]
    assert all(heading < i < end for i, _ in active)


def test_groups_appear_in_order() -> None:
    """The sections run required, upstream, Redis, browser, tokens, cache, limits, ..., sandbox."""
    headings = [line[2:].strip() for line in lines() if line.startswith("# ")]
    positions = []
    for group in GROUPS:
        matching = [i for i, heading in enumerate(headings) if heading.startswith(group)]
        assert matching, f"no section heading starting with {group!r}"
        positions.append(matching[0])
    assert positions == sorted(positions)


def test_only_known_variables_are_set() -> None:
    """Every uncommented assignment is a variable the broker reads."""
    active = [name for _, name, commented, _ in assignments(lines()) if not commented]
    assert active
    assert set(active) <= set(VARIABLES)


def test_sandbox_section_is_separate_and_commented_out() -> None:
    """SANDBOX_DELAY, SANDBOX_FAST (and other SANDBOX_*) sit apart, commented out."""
    broker_part, sandbox_part = split_at_sandbox()
    assert not {name for _, name, _, _ in assignments(broker_part)} & set(SANDBOX_VARIABLES)
    sandbox = assignments(sandbox_part)
    names = [name for _, name, _, _ in sandbox]
    assert set(SANDBOX_VARIABLES) <= set(names)
    assert all(name.startswith("SANDBOX_") for name in names)
    assert all(commented for _, _, commented, _ in sandbox)


def test_python_dotenv_reads_exactly_the_uncommented_assignments() -> None:
    """The broker's own .env reader sees the same variables as the line parser."""
    active = {name: value for _, name, commented, value in assignments(lines()) if not commented}
    assert dotenv_values(EXAMPLE) == active


def sourced_in_shell(path: Path) -> dict[str, str]:
    """The environment a POSIX shell has after `set -a; . path`."""
    result = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; set +a; env -0', "sh", str(path)],
        capture_output=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    return dict(item.split("=", 1) for item in result.stdout.decode().split("\0") if item)


def test_a_posix_shell_reads_the_same_values() -> None:
    """`set -a; . ./.env` in sh yields the values python-dotenv reads (no quoting traps)."""
    expected = {k: v for k, v in dotenv_values(EXAMPLE).items() if v is not None}
    seen = sourced_in_shell(EXAMPLE)
    assert {name: seen.get(name) for name in expected} == expected


def test_no_value_carries_an_inline_comment_or_quotes() -> None:
    """Values are bare: compose, the shell and python-dotenv treat quotes and # differently."""
    for _, name, _, value in assignments(lines()):
        assert "#" not in value, f"{name} has an inline comment"
        assert not re.search(r"[\"'`$\\\s;&|<>]", value), f"{name} needs quoting"


def test_example_cannot_go_live_as_is() -> None:
    """Loaded unchanged, the placeholders fail validation for the signing and issuer keys."""
    values = {k: v for k, v in dotenv_values(EXAMPLE).items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        parse(values)
    failing = {problem.split(":", 1)[0] for problem in caught.value.problems}
    assert {"BROKER_SIGNING_KEYS", "BROKER_ISSUER_KEYS"} <= {
        name.split(" ", 1)[0] for name in failing
    }


def test_commented_defaults_are_valid() -> None:
    """Every documented default, uncommented, passes the broker's own validation."""
    documented = {
        name: value for _, name, commented, value in assignments(split_at_sandbox()[0]) if commented
    }
    parse(
        {
            **documented,
            "BROKER_SHOP": "example-shop",
            "BROKER_SIGNING_KEYS": "k1:" + "QUJD" * 11,
            "BROKER_ISSUER_KEYS": "an-issuer-key-for-tests-only",
        }
    )


def test_commented_defaults_pass_the_production_refusals() -> None:
    """The documented examples (Redis, metrics token, upstream) are fit for `broker serve`."""
    documented = {
        name: value for _, name, commented, value in assignments(split_at_sandbox()[0]) if commented
    }
    settings = parse(
        {
            **documented,
            "BROKER_SHOP": "example-shop",
            "BROKER_SIGNING_KEYS": "k1:" + "QUJD" * 11,
            "BROKER_ISSUER_KEYS": "an-issuer-key-for-tests-only",
            "WEB_CONCURRENCY": "2",
        }
    )
    assert deployment_problems(settings) == []
