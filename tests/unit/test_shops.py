"""The shops file (BROKER_SHOPS_FILE, spec 2.1): parsing, problems named per shop and key,
the single-shop variables as one shop, and the look-ups requests select a shop with."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from broker.config.settings import ConfigError, Settings, deployment_problems, parse
from broker.config.shops import FILE_VARIABLE, parse_shops
from broker.errors import InvalidToken
from broker.rules.tokens import TokenMinter, TokenVerifier
from tests.support import ISSUER_KEY, SECRET_A, SECRET_B, broker_env

ROOT = Path(__file__).resolve().parents[2]
KEY_NORTH = "north-issuer-key-0123456789abcdef0123"
KEY_SOUTH = "south-issuer-key-0123456789abcdef0123"
SHORT_SECRET = base64.b64encode(b"sixteen-bytes-xx").decode()

TWO_SHOPS = f"""
[shops.north]
signing_keys = ["n2:{SECRET_A}", "n1:{SECRET_B}"]
issuer_keys = ["{KEY_NORTH}"]
cors_origins = ["https://north.example"]
shopify = {{ shop = "north-store.myshopify.com", secret = "shpss_north_0123456789abcdef" }}

[shops.south]
signing_keys = ["s1:{SECRET_B}"]
issuer_keys = ["{KEY_SOUTH}"]
cors_origins = ["https://south.example"]

[shops.south.bigcommerce]
store_hash = "abc123"
client_id = "south-client"
client_secret = "south-0123456789ab"
"""


def file_env(tmp_path: Path, text: str, **overrides: str) -> dict[str, str]:
    """An environment whose shops come from a file holding ``text``."""
    path = tmp_path / "shops.toml"
    path.write_text(text)
    env = {
        "BROKER_SHOPS_FILE": str(path),
        "BROKER_UPSTREAM_URL": "http://127.0.0.1:9",
        "LOG_LEVEL": "info",
    }
    env.update(overrides)
    return env


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        parse_shops(text)
    return refused.value.problems


def test_two_shops_parse_with_their_own_keys_origins_and_platforms(tmp_path: Path) -> None:
    """Each [shops.<slug>] table becomes one shop with its keys (first signs), issuer keys,
    origins and optional Shopify and BigCommerce settings."""
    settings = parse(file_env(tmp_path, TWO_SHOPS))
    assert [shop.slug for shop in settings.shops] == ["north", "south"]
    north, south = settings.shops.get("north"), settings.shops.get("south")
    assert north is not None and south is not None
    assert north.signing_key.kid == "n2" and [k.kid for k in north.signing_keys] == ["n2", "n1"]
    assert north.cors_origins == ("https://north.example",)
    assert north.shopify is not None and north.shopify.shop == "north-store.myshopify.com"
    assert north.bigcommerce is None and south.shopify is None
    assert south.bigcommerce is not None and south.bigcommerce.client_id == "south-client"
    assert settings.shops.origins() == ("https://north.example", "https://south.example")
    assert settings.shops_file == str(tmp_path / "shops.toml")


def test_lookups_select_the_shop_by_slug_issuer_key_shopify_domain_and_store_hash(
    tmp_path: Path,
) -> None:
    """A slug, an issuer key, a Shopify domain and a store hash each select their one shop."""
    shops = parse(file_env(tmp_path, TWO_SHOPS)).shops
    assert "north" in shops and "west" not in shops and shops.get("west") is None
    assert shops.by_issuer_key(KEY_NORTH) is shops.get("north")
    assert shops.by_issuer_key(KEY_SOUTH) is shops.get("south")
    assert shops.by_issuer_key(KEY_NORTH[:-1]) is None and shops.by_issuer_key(None) is None
    assert shops.for_shopify("NORTH-STORE.myshopify.com") is shops.get("north")
    assert shops.for_shopify("south-store.myshopify.com") is None
    assert shops.shop_for_bigcommerce("abc123") is shops.get("south")
    assert shops.shop_for_bigcommerce("zzz") is None


def test_the_single_shop_variables_make_exactly_one_shop() -> None:
    """Without BROKER_SHOPS_FILE, the single-shop variables describe one shop, as before."""
    settings = parse(
        broker_env(
            BROKER_SHOPIFY_SECRET="shpss_0123456789abcdef",
            BROKER_SHOPIFY_SHOP="test-store.myshopify.com",
        )
    )
    assert len(settings.shops) == 1 and settings.shops_file is None
    shop = settings.first_shop
    assert shop.slug == "test-shop" and shop.signing_key.kid == "key-a"
    assert settings.shops.by_issuer_key(ISSUER_KEY) is shop
    assert shop.shopify is not None and shop.shopify.shop == "test-store.myshopify.com"


def test_a_file_beside_the_single_shop_variables_is_one_line_naming_both(tmp_path: Path) -> None:
    """Setting the file and single-shop variables is refused at start, in one line naming both."""
    env = file_env(
        tmp_path,
        TWO_SHOPS,
        BROKER_SHOP="north",
        BROKER_ISSUER_KEYS=ISSUER_KEY,
        BROKER_BIGCOMMERCE_STORE_HASH="abc123",
    )
    with pytest.raises(ConfigError) as refused:
        parse(env)
    assert len(refused.value.problems) == 1
    line = refused.value.problems[0]
    assert line.startswith(f"{FILE_VARIABLE}: set together with BROKER_SHOP")
    assert "BROKER_ISSUER_KEYS" in line and "BROKER_BIGCOMMERCE_STORE_HASH" in line
    assert ISSUER_KEY not in line


def test_a_file_that_does_not_parse_is_one_line_without_its_text(tmp_path: Path) -> None:
    """TOML that does not parse is one problem, saying where, never repeating the text."""
    secret_text = 'issuer_keys = ["a-secret-value-that-must-not-leak-0123'
    problems = problems_of(f"[shops.north]\n{secret_text}\n")
    assert len(problems) == 1 and problems[0].startswith(f"{FILE_VARIABLE}: not valid TOML")
    assert "a-secret-value" not in problems[0]
    with pytest.raises(ConfigError) as missing:
        parse(file_env(tmp_path, "") | {"BROKER_SHOPS_FILE": str(tmp_path / "absent.toml")})
    assert missing.value.problems == [f"{FILE_VARIABLE}: the file does not exist"]


def test_every_problem_is_one_line_naming_shop_and_key_never_a_value() -> None:
    """Each problem names its shop and key; secrets and keys never appear in the lines."""
    text = f"""
[other]
x = 1

[shops.north]
signing_keys = ["n1:{SHORT_SECRET}", "bad"]
issuer_keys = ["too-short-issuer-key"]
cors_origins = ["https://*.com"]
colour = "blue"
shopify = {{ shop = "north.example.com", secret = "tiny" }}

[shops."bad slug"]
signing_keys = ["b1:{SECRET_A}"]
issuer_keys = ["{KEY_SOUTH}"]

[shops.south]
issuer_keys = "{KEY_NORTH}"
bigcommerce = {{ store_hash = "ABC", client_id = "x" }}
"""
    problems = problems_of(text)
    expected_prefixes = [
        f"{FILE_VARIABLE}: [other]: unknown table",
        f"{FILE_VARIABLE}: [shops.north] colour: unknown key",
        f"{FILE_VARIABLE}: [shops.north] signing_keys: key #1 (kid 'n1'): the decoded secret",
        f"{FILE_VARIABLE}: [shops.north] signing_keys: key #2: must be written kid:base64",
        f"{FILE_VARIABLE}: [shops.north] issuer_keys: every issuer key must be at least 32",
        f"{FILE_VARIABLE}: [shops.north] cors_origins: a wildcard must not cover a public suffix",
        f"{FILE_VARIABLE}: [shops.north] shopify.shop: must be the shop's <name>.myshopify.com",
        f"{FILE_VARIABLE}: [shops.north] shopify.secret: must be the app's shared secret",
        f"{FILE_VARIABLE}: [shops.bad slug]: the slug must be letters, digits",
        f"{FILE_VARIABLE}: [shops.south] signing_keys: required",
        f"{FILE_VARIABLE}: [shops.south] issuer_keys: must be a list of strings",
        f"{FILE_VARIABLE}: [shops.south] bigcommerce.client_secret: required",
    ]
    assert len(problems) == len(expected_prefixes), problems
    for prefix in expected_prefixes:
        assert any(line.startswith(prefix) for line in problems), prefix
    for value in (SHORT_SECRET, "too-short-issuer-key", "tiny", KEY_NORTH, KEY_SOUTH, SECRET_A):
        assert not any(value in line for line in problems), value


def test_an_issuer_key_in_two_shops_is_a_problem_naming_both_shops() -> None:
    """A key belongs to exactly one shop; a Shopify store or a store hash too."""
    text = f"""
[shops.north]
signing_keys = ["n1:{SECRET_A}"]
issuer_keys = ["{KEY_NORTH}"]
bigcommerce = {{ store_hash = "abc123", client_id = "c1", client_secret = "secret-0123456789ab" }}

[shops.south]
signing_keys = ["s1:{SECRET_B}"]
issuer_keys = ["{KEY_SOUTH}", "{KEY_NORTH}"]
bigcommerce = {{ store_hash = "abc123", client_id = "c2", client_secret = "secret-0123456789cd" }}
"""
    problems = problems_of(text)
    assert len(problems) == 2
    assert problems[0].startswith(f"{FILE_VARIABLE}: [shops.south] issuer_keys: key #2")
    assert "'north'" in problems[0] and KEY_NORTH not in problems[0]
    assert problems[1].startswith(f"{FILE_VARIABLE}: [shops.south] bigcommerce.store_hash")


def test_an_empty_file_names_no_shop() -> None:
    """A file without a [shops.<slug>] table is refused: a broker serves at least one shop."""
    assert problems_of("") == [f"{FILE_VARIABLE}: no shop: add at least one [shops.<slug>] table"]


def test_the_example_file_is_refused_by_broker_serve(tmp_path: Path) -> None:
    """config/shops.example.toml parses as TOML, and every shop in it is refused until filled in."""
    text = (ROOT / "config" / "shops.example.toml").read_text()
    env = file_env(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env, env_file=None)
    problems = refused.value.problems
    assert problems and all(line.startswith(f"{FILE_VARIABLE}: [shops.") for line in problems)
    assert {line.split("]")[0] for line in problems} == {
        f"{FILE_VARIABLE}: [shops.your-shop-slug-us",
        f"{FILE_VARIABLE}: [shops.your-shop-slug-eu",
    }


def test_placeholders_and_the_development_key_in_a_file_name_the_shop(tmp_path: Path) -> None:
    """broker serve's refusals of a shop in a file name the shop and key."""
    text = TWO_SHOPS.replace(KEY_SOUTH, "dev-issuer-key-not-a-secret-anywhere")
    text = text.replace("shpss_north_0123456789abcdef", "change-me-shopify-app-secret")
    problems = deployment_problems(parse(file_env(tmp_path, text)))
    assert problems == [
        f"{FILE_VARIABLE}: [shops.north] shopify.secret: still holds the placeholder of the "
        "example file; set the real value",
        f"{FILE_VARIABLE}: [shops.south] issuer_keys: holds the published development key of "
        "`broker dev`; make a real one (see .env.example)",
    ]


def test_a_token_of_one_shop_never_verifies_for_another(tmp_path: Path) -> None:
    """Tokens are signed with their shop's first key and verified only with the path's shop's
    keys, even where two shops share a key id and secret."""
    text = TWO_SHOPS.replace(f"s1:{SECRET_B}", f"n1:{SECRET_B}")  # same kid and secret as north
    settings = parse(file_env(tmp_path, text))
    minter, verifier = TokenMinter(settings), TokenVerifier(settings)
    north = minter.customer_token("alice", shop="north").token
    south = minter.customer_token("alice", shop="south").token
    assert verifier.verify(north, shop="north").shop == "north"
    assert verifier.verify(south, shop="south").shop == "south"
    with pytest.raises(InvalidToken) as unknown:
        verifier.verify(north, shop="south")  # north signs with n2: south has no such key
    assert unknown.value.reason == "unknown_key"
    old_north = TokenMinter(
        parse(file_env(tmp_path, text.replace(f'"n2:{SECRET_A}", ', "")))
    ).customer_token("alice", shop="north")
    with pytest.raises(InvalidToken) as subject:
        verifier.verify(old_north.token, shop="south")  # south's n1 verifies; sub names north
    assert subject.value.reason == "subject"
