"""docs/recipes.md: the token minters run (Node, PHP, Python) and the broker accepts their
tokens; the React and Vue components parse."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.stack import READ_PATH, Broker
from tests.support import SECRET_A, SECRET_B, SHOP

ROOT = Path(__file__).resolve().parent.parent
RECIPES_MD = ROOT / "docs" / "recipes.md"
TYPESCRIPT = ROOT / "clients" / "js" / "node_modules" / "typescript"
RECIPE = re.compile(r"<!-- recipe: (\S+) -->\n```\w+\n(.*?)```", re.DOTALL)
EMAIL = "recipe.customer@example.com"

DRIVERS = {
    "mint-token.mjs": (
        "driver.mjs",
        'import { customerToken } from "./mint-token.mjs";\n'
        "const [shop, customerId, email, kid, secretBase64] = process.argv.slice(2);\n"
        "console.log(customerToken({ shop, customerId, email, kid, secretBase64 }));\n",
        ["node"],
    ),
    "mint-token.php": (
        "driver.php",
        "<?php\nrequire __DIR__ . '/mint-token.php';\n"
        "echo customer_token($argv[1], $argv[2], $argv[3], $argv[4], $argv[5]), PHP_EOL;\n",
        ["php"],
    ),
    "mint_token.py": (
        "driver.py",
        "import sys\nfrom mint_token import customer_token\n"
        "print(customer_token(*sys.argv[1:6]))\n",
        [sys.executable],
    ),
}


def recipes() -> dict[str, str]:
    return dict(RECIPE.findall(RECIPES_MD.read_text()))


def mint(tmp_path: Path, name: str, customer: str, secret: str = SECRET_A) -> str:
    """Run one minting recipe as the merchant's server would, and return its token."""
    driver, code, command = DRIVERS[name]
    program = shutil.which(command[0]) if command[0] != sys.executable else sys.executable
    assert program, f"{command[0]} is not installed: run bash scripts/setup --test"
    (tmp_path / name).write_text(recipes()[name])
    (tmp_path / driver).write_text(code)
    done = subprocess.run(
        [program, driver, SHOP, customer, EMAIL, "key-a", secret],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_every_recipe_is_extracted() -> None:
    """The five marked code blocks are found (a renamed marker would skip its checks)."""
    assert set(recipes()) == {
        "mint-token.mjs",
        "mint-token.php",
        "mint_token.py",
        "ReferralWidget.jsx",
        "ReferralWidget.vue",
    }


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_minted_token_is_accepted_by_the_broker(broker: Broker, tmp_path: Path, name: str) -> None:
    """Each recipe's token has the plugins' header and claims; the broker serves its customer."""
    customer = f"recipe-{name.split('.')[-1]}"
    token = mint(tmp_path, name, customer)
    assert segment(token, 0) == {"alg": "HS256", "typ": "JWT", "kid": "key-a"}
    claims = segment(token, 1)
    assert set(claims) == {"aud", "sub", "iat", "exp", "ce"}
    assert (claims["aud"], claims["sub"], claims["ce"]) == ("BH", f"{SHOP}/{customer}", EMAIL)
    assert claims["exp"] - claims["iat"] == 900
    identity = {"customer": {"shopid": customer, "email": EMAIL.upper()}}
    answer = broker.client.post(
        READ_PATH, json=identity, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["referrals"], list)


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_token_signed_with_another_secret_is_refused(
    broker: Broker, tmp_path: Path, name: str
) -> None:
    """The same recipe with a secret that is not key-a's gives a token the broker refuses."""
    token = mint(tmp_path, name, "recipe-wrong", secret=SECRET_B)
    answer = broker.client.post(READ_PATH, json={}, headers={"Authorization": f"Bearer {token}"})
    assert (answer.status_code, answer.json()["reason"]) == (401, "signature")


TRANSPILE = """
const ts = require(process.argv[1]);
const [fileName, source] = [process.argv[2], require("fs").readFileSync(0, "utf8")];
const out = ts.transpileModule(source, {
  fileName, reportDiagnostics: true,
  compilerOptions: {
    jsx: ts.JsxEmit.Preserve, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext,
  },
});
console.log(JSON.stringify({
  errors: out.diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, " ")),
  output: out.outputText,
}));
"""


def parse_js(file_name: str, source: str) -> dict[str, Any]:
    """TypeScript's parser over JavaScript or JSX: its syntax errors and its output."""
    node = shutil.which("node")
    assert node and TYPESCRIPT.exists(), "run bash scripts/setup --test"
    done = subprocess.run(
        [node, "-e", TRANSPILE, str(TYPESCRIPT), file_name],
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_react_component_parses() -> None:
    """The React recipe is valid JSX that renders <referral-widget> and imports the widget."""
    parsed = parse_js("ReferralWidget.jsx", recipes()["ReferralWidget.jsx"])
    assert parsed["errors"] == []
    assert '"@referral-broker/client/widget"' in parsed["output"]
    assert "<referral-widget ref={ref}" in parsed["output"]
    broken = parse_js("Broken.jsx", recipes()["ReferralWidget.jsx"].replace("/>;", ">;"))
    assert broken["errors"]  # the check does see JSX errors


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


def test_vue_component_parses() -> None:
    """The Vue recipe: its script parses, its template balances and binds the widget."""
    source = recipes()["ReferralWidget.vue"]
    script = re.search(r"<script setup>\n(.*?)</script>", source, re.DOTALL)
    template = re.search(r"<template>(.*)</template>", source, re.DOTALL)
    assert script and template
    parsed = parse_js("ReferralWidget.js", script.group(1))
    assert parsed["errors"] == []
    tags = Tags()
    tags.feed(template.group(1))
    assert tags.problems == [] and tags.open == []
    assert tags.widget is not None
    assert {":broker", ":shop", ":token-url", "@referral-sent", "@referral-error"} <= set(
        tags.widget
    )
