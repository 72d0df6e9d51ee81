"""Settings: defaults, validation with one line per problem, secrets never shown."""

from __future__ import annotations

import base64
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from broker.cli import dev_environment
from broker.config.settings import (
    DEV_ISSUER_KEY,
    SINGLE_SHOP_ATTRIBUTES,
    VARIABLES,
    ConfigError,
    RateLimit,
    Secret,
    Settings,
    Shop,
    deployment_problems,
    parse,
    parse_rate_limit,
    unknown_variables,
)
from broker.config.shops import BigCommerceApp, ShopifyApp
from broker.config.table import TABLE
from tests.support import ISSUER_KEY, SECRET_A, broker_env


def problems(**overrides: str) -> list[str]:
    env = broker_env(**overrides)
    for name, value in overrides.items():
        if value == "<unset>":
            env.pop(name)
    with pytest.raises(ConfigError) as caught:
        parse(env)
    return caught.value.problems


def test_defaults_follow_the_spec() -> None:
    """Unset variables take the defaults of spec section 6."""
    settings = parse(
        {
            "BROKER_SHOP": "s",
            "BROKER_SIGNING_KEYS": f"k:{SECRET_A}",
            "BROKER_ISSUER_KEYS": ISSUER_KEY,
        }
    )
    assert settings.upstream_url == "https://app.bubblehouse.com"
    assert settings.api_versions == ("v2023061",)
    assert settings.redis_url is None and settings.first_shop.cors_origins == ()
    assert (settings.token_ttl, settings.token_max_ttl, settings.clock_leeway) == (900, 3600, 30)
    assert (settings.cache_ttl, settings.cache_stale_ttl) == (60, 600)
    assert settings.upstream_timeout == 5.0 and settings.metrics_token is None
    assert (settings.port, settings.web_concurrency) == (8000, 1)
    assert (settings.log_level, settings.log_format) == ("info", "json")


def test_required_variables_are_named_when_missing() -> None:
    """Each missing required variable gets its own line naming it."""
    found = problems(
        BROKER_SHOP="<unset>", BROKER_SIGNING_KEYS="<unset>", BROKER_ISSUER_KEYS="<unset>"
    )
    assert [p.split(":")[0] for p in found] == [
        "BROKER_SHOP",
        "BROKER_SIGNING_KEYS",
        "BROKER_ISSUER_KEYS",
    ]


def test_short_secret_is_refused_without_showing_it() -> None:
    """A signing secret under 32 decoded bytes is refused; the message never holds the value."""
    short = base64.b64encode(b"only-twenty-bytes-xx").decode()
    found = problems(BROKER_SIGNING_KEYS=f"k1:{short}")
    assert len(found) == 1 and "32" in found[0] and "BROKER_SIGNING_KEYS" in found[0]
    assert short not in found[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROKER_SIGNING_KEYS", "no-colon-here"),
        ("BROKER_SIGNING_KEYS", "k:not base64!!"),
        ("BROKER_SIGNING_KEYS", f"k:{SECRET_A},k:{SECRET_A}"),
        ("BROKER_SHOP", "bad/shop"),
        ("BROKER_UPSTREAM_URL", "ftp://example.com"),
        ("BROKER_API_VERSIONS", "2023"),
        ("REDIS_URL", "http://localhost"),
        ("REDIS_URL", "redis+sentinel://localhost:26379/mymaster"),
        ("BROKER_CORS_ORIGINS", "storefront.test"),
        ("BROKER_CORS_ORIGINS", "https://shop.example/path"),
        ("BROKER_TOKEN_TTL", "abc"),
        ("BROKER_TOKEN_TTL", "7200"),
        ("BROKER_CLOCK_LEEWAY", "-1"),
        ("BROKER_CACHE_TTL", "1.5"),
        ("BROKER_RATE_LIMIT_READ", "lots"),
        ("BROKER_RATE_LIMIT_WRITE", "0/10s"),
        ("BROKER_UPSTREAM_TIMEOUT", "0"),
        ("PORT", "70000"),
        ("WEB_CONCURRENCY", "0"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("BROKER_ISSUER_KEYS", "short"),
    ],
)
def test_bad_values_name_the_variable_not_the_value(name: str, value: str) -> None:
    """A bad value gives one line that starts with the variable's name and omits the value."""
    found = problems(**{name: value})
    assert len(found) == 1
    assert found[0].startswith(name)
    if len(value) > 4:
        assert value not in found[0]


@pytest.mark.parametrize("length", [16, 31])
def test_issuer_keys_under_32_characters_are_refused_naming_the_variable(length: int) -> None:
    """An issuer key of 16 or 31 characters stops start-up; the line names the variable only."""
    short = "k" * (length - 1) + "Z"
    found = problems(BROKER_ISSUER_KEYS=f"{ISSUER_KEY},{short}")
    assert len(found) == 1 and found[0].startswith("BROKER_ISSUER_KEYS")
    assert "32" in found[0] and short not in found[0] and ISSUER_KEY not in found[0]
    assert (
        len(ISSUER_KEY) >= 32
        and parse(broker_env(BROKER_ISSUER_KEYS="k" * 32)).first_shop.issuer_keys
    )


def test_all_problems_are_reported_at_once() -> None:
    """Several problems give several lines, not just the first."""
    assert len(problems(PORT="x", LOG_LEVEL="x", BROKER_CACHE_TTL="x")) == 3


def test_rate_limit_forms() -> None:
    """N/Ss, N/s, minutes and 0 (disabled) are understood."""
    assert parse_rate_limit("20/10s") == RateLimit(20, 10)
    assert parse_rate_limit("5/s") == RateLimit(5, 1)
    assert parse_rate_limit("100/2m") == RateLimit(100, 120)
    assert parse_rate_limit("0") is None
    assert parse(broker_env(BROKER_RATE_LIMIT_READ="0")).rate_limit_read is None


def test_first_signing_key_signs_and_all_verify() -> None:
    """The first key of BROKER_SIGNING_KEYS is the signing key."""
    settings = parse(broker_env())
    assert settings.first_shop.signing_key.kid == "key-a"
    assert [k.kid for k in settings.first_shop.signing_keys] == ["key-a", "key-b"]


def test_secrets_are_masked_in_every_repr() -> None:
    """No secret value appears in the repr of the settings."""
    settings = parse(
        broker_env(BROKER_METRICS_TOKEN="metrics-token-123", REDIS_URL="redis://:pw123@h:6379/0")
    )
    text = repr(settings) + str(settings)
    for secret in (ISSUER_KEY, "metrics-token-123", "pw123", SECRET_A):
        assert secret not in text
    assert repr(Secret("x")) == "Secret('**********')"


def test_dotenv_file_fills_gaps_and_environment_wins(tmp_path: Path) -> None:
    """A .env file supplies variables, but the environment overrides it."""
    env_file = tmp_path / ".env"
    env_file.write_text("BROKER_SHOP=from-file\nBROKER_CACHE_TTL=5\n")
    env = broker_env()
    env.pop("BROKER_SHOP")
    env["BROKER_CACHE_TTL"] = "7"
    settings = Settings.from_env(env, env_file=env_file)
    assert settings.first_shop.slug == "from-file"
    assert settings.cache_ttl == 7


def test_wildcard_origin_is_accepted() -> None:
    """Sub-domain wildcards are valid CORS origins."""
    settings = parse(
        broker_env(BROKER_CORS_ORIGINS="https://*.shop.example, http://localhost:3000")
    )
    assert settings.first_shop.cors_origins == ("https://*.shop.example", "http://localhost:3000")


@pytest.mark.parametrize(
    "origins",
    ["https://*.com", "https://*.co.uk", "https://shop.example,https://*.github.io", "http://*.uk"],
)
def test_wildcard_on_a_public_suffix_is_refused(origins: str) -> None:
    """A CORS wildcard covering a whole public suffix is refused, judged by the shipped list."""
    found = problems(BROKER_CORS_ORIGINS=origins)
    assert [p.split(":")[0] for p in found] == ["BROKER_CORS_ORIGINS"]
    assert origins not in found[0]


def from_env_problems(**overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(broker_env(**overrides), env_file=None)
    return caught.value.problems


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("BROKER_ISSUER_KEYS", f"{ISSUER_KEY},{DEV_ISSUER_KEY}", "BROKER_ISSUER_KEYS"),
        ("BROKER_UPSTREAM_URL", "http://bubblehouse.internal.example", "BROKER_UPSTREAM_URL"),
        ("BROKER_UPSTREAM_URL", "http://10.0.0.8:8001", "BROKER_UPSTREAM_URL"),
        ("BROKER_METRICS_TOKEN", "fifteen-chars-x", "BROKER_METRICS_TOKEN"),
        ("WEB_CONCURRENCY", "2", "REDIS_URL"),
    ],
)
def test_deployment_refusals_name_the_variable_never_the_value(
    name: str, value: str, named: str
) -> None:
    """What must not run in production is refused by from_env, naming the variable only."""
    found = from_env_problems(**{name: value})
    assert len(found) == 1 and found[0].startswith(f"{name}:") and named in found[0]
    assert value not in found[0]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8001", "http://localhost:8001", "http://[::1]:8001", "https://x.io"]
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    """Plain http is fine for an upstream on loopback (the sandbox), and https anywhere."""
    assert Settings.from_env(broker_env(BROKER_UPSTREAM_URL=url), env_file=None).upstream_url


def test_several_workers_with_redis_and_a_long_metrics_token_pass() -> None:
    """WEB_CONCURRENCY > 1 is fine with REDIS_URL; a 16-character metrics token is enough."""
    settings = Settings.from_env(
        broker_env(
            WEB_CONCURRENCY="3", REDIS_URL="redis://127.0.0.1:6379/0", BROKER_METRICS_TOKEN="x" * 16
        ),
        env_file=None,
    )
    assert settings.web_concurrency == 3


def test_unknown_broker_variable_fails_strict_and_is_listed_otherwise(tmp_path: Path) -> None:
    """A misspelt BROKER_ name is a problem for check (strict) and a listed name for serve."""
    env = broker_env(BROKER_CACHE_TTTL="5", SOMETHING_ELSE="1")
    found = from_env_problems(BROKER_CACHE_TTTL="5")
    assert found == [
        "BROKER_CACHE_TTTL: not a variable the broker knows (misspelt? see .env.example)"
    ]
    env_file = tmp_path / ".env"
    env_file.write_text("BROKER_RATE_LIMT_READ=1/s\n")
    settings = Settings.from_env(env, env_file=env_file, strict=False)
    assert settings.unknown_variables == ("BROKER_CACHE_TTTL", "BROKER_RATE_LIMT_READ")


def test_every_known_name_comes_from_variables() -> None:
    """The known set is VARIABLES: each listed BROKER_ name is accepted without complaint."""
    env = {name: "" for name in VARIABLES}
    assert unknown_variables({**env, "BROKER_NEW_THING": "1"}) == ("BROKER_NEW_THING",)


def test_broker_dev_settings_keep_working() -> None:
    """broker dev's own environment parses (its published key included), serve would refuse it."""
    env = dev_environment({}, 8000, 8001, 8002, "127.0.0.1")
    assert parse(env).first_shop.issuer_keys[0].reveal() == DEV_ISSUER_KEY
    refused = [p.split(":")[0] for p in deployment_problems(parse(env))]
    assert refused == ["BROKER_ISSUER_KEYS", "BROKER_BIGCOMMERCE_CLIENT_SECRET"]


# -- the table is the one declaration ----------------------------------------------------------


# Settings' attributes that no variable fills alone: the shops (from the single-shop variables
# or the shops file), the file's checked text, the unknown names.
NOT_VARIABLES = ("unknown_variables", "shops", "shops_text")


def held(settings: Settings, attribute: str) -> object:
    """What Settings holds for the variable of ``attribute``: the one shop's, for the single-shop
    variables."""
    if attribute not in SINGLE_SHOP_ATTRIBUTES:
        return getattr(settings, attribute)
    shop = settings.first_shop
    shopify, bigcommerce = shop.shopify, shop.bigcommerce
    return {
        "shop": shop.slug,
        "signing_keys": shop.signing_keys,
        "issuer_keys": shop.issuer_keys,
        "cors_origins": shop.cors_origins,
        "shopify_secret": shopify.secret if shopify else None,
        "shopify_shop": shopify.shop if shopify else None,
        "bigcommerce_client_id": bigcommerce.client_id if bigcommerce else None,
        "bigcommerce_client_secret": bigcommerce.client_secret if bigcommerce else None,
        "bigcommerce_store_hash": bigcommerce.store_hash if bigcommerce else None,
    }[attribute]


def hints_of_variables() -> dict[str, Any]:
    """The type each variable's attribute holds (the single-shop ones: in the shop's record)."""
    hints = typing.get_type_hints(Settings)
    shop = typing.get_type_hints(Shop)
    app = typing.get_type_hints(ShopifyApp)
    store = typing.get_type_hints(BigCommerceApp)
    return {
        **hints,
        "shop": shop["slug"],
        "signing_keys": shop["signing_keys"],
        "issuer_keys": shop["issuer_keys"],
        "cors_origins": shop["cors_origins"],
        "shopify_secret": app["secret"] | None,
        "shopify_shop": app["shop"] | None,
        "bigcommerce_client_id": store["client_id"] | None,
        "bigcommerce_client_secret": store["client_secret"] | None,
        "bigcommerce_store_hash": store["store_hash"] | None,
    }


def test_settings_attributes_are_the_tables_in_its_order() -> None:
    """Every variable of the table fills one Settings attribute (the single-shop ones the one
    shop's record), and every attribute but the shops has one."""
    attributes = [f.name for f in fields(Settings) if f.name not in NOT_VARIABLES]
    table = [v.attribute for v in TABLE if v.attribute not in SINGLE_SHOP_ATTRIBUTES]
    assert table == attributes
    assert {v.attribute for v in TABLE} >= set(SINGLE_SHOP_ATTRIBUTES)


def test_settings_writes_no_default_of_its_own() -> None:
    """The dataclass holds no second copy of a default: only the table has them."""
    defaulted = [
        f.name
        for f in fields(Settings)
        if f.default is not MISSING or f.default_factory is not MISSING
    ]
    assert defaulted == ["unknown_variables", "shops_text"]


def test_unset_variables_take_the_tables_defaults() -> None:
    """Each unset variable holds what its reader makes of the table's default (None if unset)."""
    settings = parse(
        {
            "BROKER_SHOP": "s",
            "BROKER_SIGNING_KEYS": f"k:{SECRET_A}",
            "BROKER_ISSUER_KEYS": ISSUER_KEY,
        }
    )
    for variable in TABLE:
        if variable.required is None:
            assert held(settings, variable.attribute) == variable.default_value(), variable.name
    assert settings.rate_limit_read == RateLimit(60, 10)
    assert settings.rate_limit_write == RateLimit(20, 60)
    assert settings.rate_limit_issuer == RateLimit(10, 60)
    assert (settings.rate_limit_sync, settings.near_cache_mb) == (0.1, 8)


def conforms(value: object, hint: object) -> bool:
    """Whether ``value`` has the type ``hint`` (the forms Settings uses), items included."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(conforms(item, args[0]) for item in value)
    if origin is Secret:
        return isinstance(value, Secret) and conforms(value.reveal(), args[0])
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, float)
    assert isinstance(hint, type), hint
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def test_each_reader_makes_the_attributes_type() -> None:
    """What a variable's reader makes of its default and its example has the attribute's type
    (the required variables' examples are placeholders refused on purpose: a valid value then)."""
    hints = hints_of_variables()
    valid = broker_env()
    for variable in TABLE:
        example = valid[variable.name] if variable.required else variable.example
        for text in (variable.default, example):
            if text is not None:
                value = variable.read(text)
                assert conforms(value, hints[variable.attribute]), (variable.name, text)


def test_secret_variables_are_exactly_those_held_masked() -> None:
    """A variable is marked secret in the table when, and only when, Settings masks its value."""
    hints = hints_of_variables()
    for variable in TABLE:
        masked = any(kind in str(hints[variable.attribute]) for kind in ("Secret", "SigningKey"))
        assert variable.secret == masked, variable.name


def problems_or_none(env: dict[str, str]) -> list[str]:
    """The problems ``parse`` reports for ``env``; none when it is valid."""
    try:
        parse(env)
    except ConfigError as exc:
        return exc.problems
    return []


def test_a_bad_value_of_any_variable_never_shows_in_a_problem() -> None:
    """Whatever one variable is given, each problem names that variable, never the value."""
    full = broker_env(
        BROKER_SHOPIFY_SECRET="s" * 32,
        BROKER_SHOPIFY_SHOP="x.myshopify.com",
        BROKER_BIGCOMMERCE_CLIENT_ID="client",
        BROKER_BIGCOMMERCE_CLIENT_SECRET="s" * 32,
        BROKER_BIGCOMMERCE_STORE_HASH="abc123",
    )
    refused = 0
    for value in ("<<not-a-value-7f3a>>", "-99999999999999999999", "nan", "x" * 300):
        for variable in TABLE:
            found = problems_or_none({**full, variable.name: value})
            refused += bool(found)
            for problem in found:
                assert problem.startswith(f"{variable.name}:"), problem
                assert value not in problem, variable.name
    assert refused > len(TABLE) * 2


def test_joint_rules_run_after_each_variable_is_read() -> None:
    """TTL over MAX_TTL is one line; a TTL that is not a number is not compared as well."""
    assert problems(BROKER_TOKEN_TTL="600", BROKER_TOKEN_MAX_TTL="300") == [
        "BROKER_TOKEN_TTL: must not exceed BROKER_TOKEN_MAX_TTL"
    ]
    assert problems(BROKER_TOKEN_TTL="soon", BROKER_TOKEN_MAX_TTL="300") == [
        "BROKER_TOKEN_TTL: must be a whole number"
    ]


def test_a_bad_shopify_secret_and_a_missing_shop_are_both_reported() -> None:
    """Every problem at once: the short secret and the missing other variable, one line each."""
    assert problems(BROKER_SHOPIFY_SECRET="short") == [
        "BROKER_SHOPIFY_SECRET: must be the app's shared secret (16+ characters)",
        "BROKER_SHOPIFY_SHOP: required with the other BROKER_SHOPIFY_ variable",
    ]


def test_each_bad_signing_key_is_its_own_line() -> None:
    """Two bad keys of BROKER_SIGNING_KEYS give two lines, each naming the key's position."""
    found = problems(BROKER_SIGNING_KEYS=f"k1:{SECRET_A},broken,k1:{SECRET_A}")
    assert found == [
        "BROKER_SIGNING_KEYS: key #2: must be written kid:base64secret",
        "BROKER_SIGNING_KEYS: key #3: kid 'k1' appears twice",
    ]
