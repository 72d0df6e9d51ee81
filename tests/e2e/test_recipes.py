"""docs/recipes.md: the token minters run (Node, PHP, Python) and the broker accepts their
tokens; the React and Vue components parse; the platform files it links exist (their checks:
test_recipes_shopify.py, test_recipes_magento.py)."""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.servers import RunningServer
from tests.stack import READ_PATH, Broker, Sandbox, running_broker
from tests.support import SECRET_A, SECRET_B, SHOP

ROOT = Path(__file__).resolve().parents[2]
RECIPES_MD = ROOT / "docs" / "recipes.md"
TYPESCRIPT = ROOT / "clients" / "js" / "node_modules" / "typescript"
RECIPE = re.compile(r"<!-- recipe: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)
EMAIL = "recipe.customer@example.com"

DRIVERS = {
    "mint-token.mjs": (
        "driver.mjs",
        'import { customerToken } from "./mint-token.mjs";\n'
        "const [shop, email, kid, ...pairs] = process.argv.slice(2);\n"
        "for (let i = 0; i < pairs.length; i += 2) {\n"
        "  const [customerId, secretBase64] = [pairs[i], pairs[i + 1]];\n"
        "  console.log(customerToken({ shop, customerId, email, kid, secretBase64 }));\n"
        "}\n",
        ["node"],
    ),
    "mint-token.php": (
        "driver.php",
        "<?php\nrequire __DIR__ . '/mint-token.php';\n"
        "for ($i = 4; $i < $argc; $i += 2) {\n"
        "  echo customer_token($argv[1], $argv[$i], $argv[2], $argv[3], $argv[$i + 1]), PHP_EOL;\n"
        "}\n",
        ["php"],
    ),
    "mint_token.py": (
        "driver.py",
        "import sys\nfrom mint_token import customer_token\n"
        "shop, email, kid, *pairs = sys.argv[1:]\n"
        "for customer, secret in zip(pairs[::2], pairs[1::2]):\n"
        "    print(customer_token(shop, customer, email, kid, secret))\n",
        [sys.executable],
    ),
}


def recipes() -> dict[str, str]:
    return dict(RECIPE.findall(RECIPES_MD.read_text()))


def mint(directory: Path, name: str, wanted: list[tuple[str, str]]) -> list[str]:
    """Run one minting recipe as the merchant's server would (one process for every
    ``(customer, secret)`` in ``wanted``), and return its tokens in that order."""
    driver, code, command = DRIVERS[name]
    program = shutil.which(command[0]) if command[0] != sys.executable else sys.executable
    assert program, f"{command[0]} is not installed: run bash scripts/setup --test"
    (directory / name).write_text(recipes()[name])
    (directory / driver).write_text(code)
    pairs = [part for customer_and_secret in wanted for part in customer_and_secret]
    done = subprocess.run(
        [program, driver, SHOP, EMAIL, "key-a", *pairs],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    tokens = done.stdout.split()
    assert len(tokens) == len(wanted), done.stdout
    return tokens


def customer_of(name: str) -> str:
    return f"recipe-{name.split('.')[-1]}"


@pytest.fixture(scope="module")
def minted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[str, str]]:
    """A recipe's tokens, minted by one run of it when first asked for: its customer's token
    signed with key-a's secret, and one for ``recipe-wrong`` signed with another secret."""

    @functools.cache
    def tokens(name: str) -> tuple[str, str]:
        good, wrong = mint(
            tmp_path_factory.mktemp("recipe"),
            name,
            [(customer_of(name), SECRET_A), ("recipe-wrong", SECRET_B)],
        )
        return good, wrong

    return tokens


@pytest.fixture(scope="module")
def recipe_broker(sandbox_server: RunningServer) -> Iterator[Broker]:
    """One broker for the module, in front of the shared sandbox (reset once): each test reads
    its own customer, so none sees another's state."""
    Sandbox(sandbox_server.url).reset()
    with running_broker(sandbox_server.url) as running:
        yield running


def segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_every_recipe_is_extracted() -> None:
    """Every marked code block is found (a renamed marker would skip its checks); the
    BigCommerce snippet runs in Chromium in test_bigcommerce_store.py."""
    assert set(recipes()) == {
        "mint-token.mjs",
        "mint-token.php",
        "mint_token.py",
        "ReferralWidget.jsx",
        "ReferralWidget.vue",
        "bigcommerce-script-manager.html",
    }


def test_recipes_link_every_platform_file() -> None:
    """docs/recipes.md links every file under docs/recipes/, so none is left undocumented."""
    text = RECIPES_MD.read_text()
    docs = ROOT / "docs"
    files = sorted(p.relative_to(docs) for p in (docs / "recipes").rglob("*") if p.is_file())
    assert len(files) >= 12
    missing = [str(path) for path in files if f"]({path})" not in text]
    assert missing == []


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_minted_token_is_accepted_by_the_broker(
    recipe_broker: Broker, minted: Callable[[str], tuple[str, str]], name: str
) -> None:
    """Each recipe's token has the plugins' header and claims; the broker serves its customer."""
    customer = customer_of(name)
    token = minted(name)[0]
    assert segment(token, 0) == {"alg": "HS256", "typ": "JWT", "kid": "key-a"}
    claims = segment(token, 1)
    assert set(claims) == {"aud", "sub", "iat", "exp", "ce"}
    assert (claims["aud"], claims["sub"], claims["ce"]) == ("BH", f"{SHOP}/{customer}", EMAIL)
    assert claims["exp"] - claims["iat"] == 900
    identity = {"customer": {"shopid": customer, "email": EMAIL.upper()}}
    answer = recipe_broker.client.post(
        READ_PATH, json=identity, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["referrals"], list)


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_token_signed_with_another_secret_is_refused(
    recipe_broker: Broker, minted: Callable[[str], tuple[str, str]], name: str
) -> None:
    """The same recipe with a secret that is not key-a's gives a token the broker refuses."""
    token = minted(name)[1]
    answer = recipe_broker.client.post(
        READ_PATH, json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert (answer.status_code, answer.json()["reason"]) == (401, "signature")


TRANSPILE = """
const ts = require(process.argv[1]);
const sources = JSON.parse(require("fs").readFileSync(0, "utf8"));
const parsed = {};
for (const [fileName, source] of Object.entries(sources)) {
  const out = ts.transpileModule(source, {
    fileName, reportDiagnostics: true,
    compilerOptions: {
      jsx: ts.JsxEmit.Preserve, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext,
    },
  });
  parsed[fileName] = {
    errors: out.diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, " ")),
    output: out.outputText,
  };
}
console.log(JSON.stringify(parsed));
"""


def vue_script() -> str:
    found = re.search(r"<script setup>\n(.*?)</script>", recipes()["ReferralWidget.vue"], re.DOTALL)
    assert found, "the Vue recipe has no <script setup>"
    return found.group(1)


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    """TypeScript's parser over the recipes' JavaScript and JSX (and a broken copy of the JSX,
    to show the check sees errors), in one node run: each file's syntax errors and output."""
    node = shutil.which("node")
    assert node and TYPESCRIPT.exists(), "run bash scripts/setup --test"
    react = recipes()["ReferralWidget.jsx"]
    sources = {
        "ReferralWidget.jsx": react,
        "Broken.jsx": react.replace("/>;", ">;"),
        "ReferralWidget.js": vue_script(),
    }
    done = subprocess.run(
        [node, "-e", TRANSPILE, str(TYPESCRIPT)],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return results


def test_react_component_parses(parsed: dict[str, dict[str, Any]]) -> None:
    """The React recipe is valid JSX that renders <referral-widget> and imports the widget."""
    react = parsed["ReferralWidget.jsx"]
    assert react["errors"] == []
    assert '"@referral-broker/client/widget"' in react["output"]
    assert "<referral-widget ref={ref}" in react["output"]
    assert parsed["Broken.jsx"]["errors"]  # the check does see JSX errors


class Tags(HTMLParser):
    """Every start and end tag of a Vue template, to check that they balance."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.problems: list[str] = []
        self.widget: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open.append(tag)
        if tag == "referral-widget":
            self.widget = dict(attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.problems.append(tag)


def test_vue_component_parses(parsed: dict[str, dict[str, Any]]) -> None:
    """The Vue recipe: its script parses, its template balances and binds the widget."""
    template = re.search(r"<template>(.*)</template>", recipes()["ReferralWidget.vue"], re.DOTALL)
    assert template
    assert parsed["ReferralWidget.js"]["errors"] == []
    tags = Tags()
    tags.feed(template.group(1))
    assert tags.problems == [] and tags.open == []
    assert tags.widget is not None
    assert {":broker", ":shop", ":token-url", "@referral-sent", "@referral-error"} <= set(
        tags.widget
    )
