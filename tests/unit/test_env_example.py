""".env.example and the docs' variable tables: made from the settings table, and still current.

.env.example lists every variable of broker.config.table.VARIABLES, in order, commented, not live;
the README's and the runbook's tables are generated between markers. A file that differs from what
the table makes fails here, naming the command that rewrites it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

from broker.config.refusals import PLACEHOLDERS
from broker.config.settings import VARIABLES, ConfigError, deployment_problems, parse
from broker.config.table import TABLE
from broker_dev import settings_docs

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


def commented_assignments() -> dict[str, str]:
    """The broker's commented assignments, but BROKER_SHOPS_FILE: the alternative to the
    single-shop variables set here (tests/unit/test_shops.py has its own)."""
    return {
        name: value
        for _, name, commented, value in assignments(split_at_sandbox()[0])
        if commented and name != "BROKER_SHOPS_FILE"
    }


def test_commented_defaults_are_valid() -> None:
    """Every documented default, uncommented, passes the broker's own validation."""
    documented = commented_assignments()
    parse(
        {
            **documented,
            "BROKER_SHOP": "example-shop",
            "BROKER_SIGNING_KEYS": "k1:" + "QUJD" * 11,
            "BROKER_ISSUER_KEYS": "an-issuer-key-for-tests-only-0123456",
        }
    )


def test_commented_defaults_pass_the_production_refusals() -> None:
    """The documented examples (Redis, upstream, limits) are fit for `broker serve`; the
    placeholders of secrets to be made (metrics token, Shopify and BigCommerce apps) are refused
    instead (tests/e2e/test_refusals.py)."""
    documented = commented_assignments()
    placeholders = {
        name
        for name, value in documented.items()
        if any(marker in value.lower() for marker in PLACEHOLDERS)
    }
    assert placeholders == {
        "BROKER_METRICS_TOKEN",
        "BROKER_SHOPIFY_SECRET",
        "BROKER_SHOPIFY_SHOP",
        "BROKER_BIGCOMMERCE_CLIENT_SECRET",
    }
    # A platform is set whole or not at all: with its secret left out, so is the rest of it.
    platforms = ("BROKER_SHOPIFY_", "BROKER_BIGCOMMERCE_")
    documented = {
        k: v for k, v in documented.items() if k not in placeholders and not k.startswith(platforms)
    }
    settings = parse(
        {
            **documented,
            "BROKER_SHOP": "example-shop",
            "BROKER_SIGNING_KEYS": "k1:" + "QUJD" * 11,
            "BROKER_ISSUER_KEYS": "an-issuer-key-for-tests-only-0123456",
            "WEB_CONCURRENCY": "2",
        }
    )
    assert deployment_problems(settings) == []


# -- made from the table -----------------------------------------------------------------------

GENERATED = (settings_docs.ENV_EXAMPLE, *settings_docs.TABLE_DOCUMENTS)


@pytest.mark.parametrize("name", GENERATED)
def test_generated_file_is_what_the_table_makes(name: str) -> None:
    """.env.example, README.md and deploy/README.md hold exactly what the settings table makes."""
    expected = settings_docs.expected(ROOT)[name]
    actual = (ROOT / name).read_text(encoding="utf-8")
    assert actual == expected, (
        f"{name} differs from broker/settings_table.py: run `{settings_docs.COMMAND}` "
        "from the repository's root and commit the result"
    )


def copy_generated(root: Path) -> None:
    for name in GENERATED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text((ROOT / name).read_text(encoding="utf-8"), encoding="utf-8")


def test_check_names_a_stale_file_and_the_command_rewrites_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check exits 1 naming a hand-edited file; the command rewrites only the tables."""
    copy_generated(tmp_path)
    runbook = tmp_path / "deploy" / "README.md"
    original = runbook.read_text(encoding="utf-8")
    runbook.write_text(
        original.replace("| `BROKER_SHOP` | required |", "| `BROKER_SHOP` | optional |")
        + "Prose after the table stays.\n",
        encoding="utf-8",
    )
    assert settings_docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "deploy/README.md: differs" in capsys.readouterr().err
    assert settings_docs.main(["--root", str(tmp_path)]) == 0
    assert "wrote deploy/README.md" in capsys.readouterr().out
    assert runbook.read_text(encoding="utf-8") == original + "Prose after the table stays.\n"
    assert settings_docs.main(["--check", "--root", str(tmp_path)]) == 0


def test_check_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m broker_dev.settings_docs --check` run at the root finds nothing to rewrite."""
    assert settings_docs.main(["--check", "--root", str(ROOT)]) == 0
    assert capsys.readouterr().err == ""


def test_a_document_without_markers_is_refused() -> None:
    """A Markdown file that lost its BEGIN/END markers is an error, not a silent skip."""
    with pytest.raises(ValueError, match="BEGIN variables"):
        settings_docs.with_table("# Variables\n\n| name | default |\n")


def table_rows(text: str) -> list[list[str]]:
    """The cells of the rows between the markers, header and rule left out."""
    inside = text.split(settings_docs.BEGIN, 1)[1].split(settings_docs.END, 1)[0]
    rows = [line for line in inside.strip().splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


@pytest.mark.parametrize("name", settings_docs.TABLE_DOCUMENTS)
def test_doc_tables_give_every_variable_its_default_and_secrecy(name: str) -> None:
    """Each row names a variable of the table, in order, with its default and whether secret."""
    rows = table_rows((ROOT / name).read_text(encoding="utf-8"))
    broker_rows = rows[: len(TABLE)]
    assert [row[0] for row in broker_rows] == [f"`{v.name}`" for v in TABLE]
    for row, variable in zip(broker_rows, TABLE, strict=True):
        if variable.required is not None:
            assert row[1] == "required"
        elif variable.default:
            assert row[1] == f"`{variable.default}`"
        else:
            assert row[1] == ("empty" if variable.default == "" else "unset")
        assert row[2] == ("yes" if variable.secret else "no"), variable.name
    assert [row[0] for row in rows[len(TABLE) :]] == ["`FORWARDED_ALLOW_IPS`"]


def test_commented_defaults_are_the_tables() -> None:
    """Each optional variable's "# Default:" line and (without an example) its value are the
    table's default."""
    text_lines = lines()
    found = {name: (index, value) for index, name, commented, value in assignments(text_lines)}
    for variable in TABLE:
        if variable.required is not None:
            continue
        index, value = found[variable.name]
        shown = "unset" if variable.default is None else variable.default or "empty"
        assert text_lines[index - 1] == f"# Default: {shown}", variable.name
        if variable.example is None:
            assert value == variable.default, variable.name


def sandbox_names_read() -> set[str]:
    """The SANDBOX_* names the sandbox and the command line read, from their source."""
    sources = [
        *(ROOT / "devtools" / "broker_dev" / "sandbox").glob("*.py"),
        ROOT / "broker" / "cli.py",
    ]
    return {
        name
        for path in sources
        for name in re.findall(r"[\"'](SANDBOX_[A-Z_]+)[\"']", path.read_text(encoding="utf-8"))
    }


def test_every_sandbox_variable_read_is_documented() -> None:
    """The sandbox section documents exactly the SANDBOX_* names the code reads."""
    _, sandbox_part = split_at_sandbox()
    documented = {name for _, name, _, _ in assignments(sandbox_part)}
    assert sandbox_names_read() == documented


def test_a_root_without_the_documents_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run outside the repository, the command writes nothing and says where to run it."""
    assert settings_docs.main(["--root", str(tmp_path)]) == 2
    assert "repository's root" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
