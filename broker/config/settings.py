"""Configuration: read once from the environment (and ``.env``), validated, frozen.

The variables, their defaults and readers are declared once, in :data:`broker.config.table.
TABLE`; :func:`parse` reads each variable of it, then applies the few rules that join two
variables. Every problem is reported at once, one line each, naming the variable and never its
value. Secrets are wrapped in :class:`Secret` so that no repr, log line or traceback shows them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.config import refusals
from broker.config import shops as shop_config
from broker.config.refusals import DEV_ISSUER_KEY
from broker.config.shops import Shop, Shops
from broker.config.storefronts import BIGCOMMERCE_VARIABLES
from broker.config.table import TABLE, VARIABLES
from broker.config.values import (
    ConfigError,
    Invalid,
    RateLimit,
    Secret,
    SigningKey,
    parse_rate_limit,
)

__all__ = [
    "DEV_ISSUER_KEY",
    "VARIABLES",
    "ConfigError",
    "RateLimit",
    "Secret",
    "Settings",
    "Shop",
    "Shops",
    "SigningKey",
    "deployment_problems",
    "parse",
    "parse_rate_limit",
    "unknown_variables",
]


@dataclass(frozen=True)
class Settings:
    """The broker's configuration, one attribute per variable of the table (:func:`parse`
    builds it; the defaults are the table's, so none is written here), except the single-shop
    variables, which make the one entry of ``shops`` when ``BROKER_SHOPS_FILE`` is unset."""

    shops: Shops  # every shop served: from BROKER_SHOPS_FILE, or the single-shop variables
    shops_file: str | None
    upstream_url: str
    api_versions: tuple[str, ...]
    redis_url: Secret[str] | None
    token_ttl: int
    token_max_ttl: int
    clock_leeway: int
    cache_ttl: int
    cache_stale_ttl: int
    rate_limit_read: RateLimit | None
    rate_limit_write: RateLimit | None
    rate_limit_issuer: RateLimit | None
    rate_limit_sync: float  # seconds between pushes of local counts; 0: strict
    near_cache_mb: int  # process-local tier of referral lists; 0: off
    upstream_timeout: float
    # Circuit breaker and per-customer back-off (broker.upstream.circuit).
    circuit_failure_rate: float
    circuit_min_calls: int
    circuit_window: float
    circuit_cooldown: float
    upstream_backoff: float
    metrics_token: Secret[str] | None
    port: int
    host: str
    max_connections: int  # per worker process (broker.web.connections)
    web_concurrency: int
    log_level: str
    log_format: str
    # BROKER_* names in the environment that the broker does not know (never their values).
    unknown_variables: tuple[str, ...] = field(default=(), compare=False)
    # The shops file's text as it was checked: what workers parse, never the file read again.
    shops_text: str | None = field(default=None, compare=False, repr=False)

    @property
    def first_shop(self) -> Shop:
        """The first shop (the only one without a shops file): the development tools' shop."""
        return self.shops.first

    def named_shop(self, given: str | None) -> Shop | None:
        """The shop a command's ``--shop`` names, or the only one when it names none; None when
        it names no configured shop, or none among several."""
        if given is None:
            return self.first_shop if len(self.shops) == 1 else None
        return self.shops.get(given)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
        *,
        strict: bool = True,
        shops_text: str | None = None,
    ) -> Settings:
        """Read a deployment's environment, under which a ``.env`` file fills the gaps.

        Beyond :func:`parse`, refuses what must never run in production
        (:func:`deployment_problems`). An unknown ``BROKER_*`` name is a problem when ``strict``
        (``broker check``); otherwise it is only listed in ``unknown_variables`` for the caller
        to warn about (``broker serve``). ``shops_text`` is the shops file's text when the
        caller read it already (a worker gets the text its supervisor checked).
        """
        merged: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            from dotenv import dotenv_values

            merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        merged.update(os.environ if environ is None else environ)
        unknown = unknown_variables(merged)
        problems: list[str] = []
        if strict:
            problems = [
                f"{name}: not a variable the broker knows (misspelt? see .env.example)"
                for name in unknown
            ]
        try:
            settings = parse(merged, shops_text=shops_text)
        except ConfigError as exc:
            raise ConfigError([*exc.problems, *problems]) from None
        problems = [*deployment_problems(settings), *problems]
        if problems:
            raise ConfigError(problems)
        return replace(settings, unknown_variables=unknown)


def deployment_problems(settings: Settings) -> list[str]:
    """What a valid configuration must still not run in production (``broker dev`` may): the
    shops' (:func:`broker.config.shops.deployment_problems`) and the rest's
    (:func:`broker.config.refusals.deployment_problems`)."""
    return [
        *shop_config.deployment_problems(settings.shops),
        *refusals.deployment_problems(settings),
    ]


def unknown_variables(env: Mapping[str, str]) -> tuple[str, ...]:
    """The ``BROKER_*`` names of ``env`` that are not in :data:`VARIABLES`, sorted; the
    variables the kubelet writes for a Service whose name starts with ``broker-``
    (:func:`kubelet_service_link`) are not the operator's and are left out."""
    known = frozenset(VARIABLES)
    return tuple(
        sorted(
            name
            for name, value in env.items()
            if name.startswith("BROKER_")
            and name not in known
            and not kubelet_service_link(name, value)
        )
    )


_PROTOCOL = r"(?:TCP|UDP|SCTP)"
# Kubernetes' service links (docker-link style variables), by suffix of the Service's name, and
# the shape of the value the kubelet writes for each.
_HOST = "host"
_NUMBER = re.compile(r"[0-9]{1,5}")
_LINK_URL = re.compile(r"(?:tcp|udp|sctp)://[0-9A-Fa-f.:\[\]]+:[0-9]{1,5}")
_SERVICE_LINKS: tuple[tuple[re.Pattern[str], re.Pattern[str] | str], ...] = (
    (re.compile(r"[A-Z0-9_]+_SERVICE_HOST"), _HOST),
    (re.compile(r"[A-Z0-9_]+_SERVICE_PORT(?:_[A-Z0-9_]+)?"), _NUMBER),
    (re.compile(rf"[A-Z0-9_]+_PORT(?:_[0-9]{{1,5}}_{_PROTOCOL})?"), _LINK_URL),
    (re.compile(rf"[A-Z0-9_]+_PORT_[0-9]{{1,5}}_{_PROTOCOL}_ADDR"), _HOST),
    (re.compile(rf"[A-Z0-9_]+_PORT_[0-9]{{1,5}}_{_PROTOCOL}_PORT"), _NUMBER),
    (re.compile(rf"[A-Z0-9_]+_PORT_[0-9]{{1,5}}_{_PROTOCOL}_PROTO"), re.compile("tcp|udp|sctp")),
)


def kubelet_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` is one of the variables the kubelet injects for a Service (with
    ``enableServiceLinks``, its default): ``<SVC>_SERVICE_HOST``, ``<SVC>_SERVICE_PORT[_<x>]``,
    ``<SVC>_PORT``, ``<SVC>_PORT_<n>_<PROTO>`` and its ``_ADDR``, ``_PORT`` and ``_PROTO``, each
    with the value the kubelet writes (an address, a port, a ``tcp://`` link), so that a typo
    such as ``BROKER_PORT=8000`` is still reported."""
    for pattern, shape in _SERVICE_LINKS:
        if pattern.fullmatch(name):
            if shape == _HOST:
                return _is_address(value)
            if isinstance(shape, re.Pattern) and shape.fullmatch(value):
                return True
    return False


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# The table's attributes that describe the one shop of a configuration without a shops file.
SINGLE_SHOP_ATTRIBUTES = (
    "shop",
    "signing_keys",
    "issuer_keys",
    "cors_origins",
    "shopify_secret",
    "shopify_shop",
    "bigcommerce_client_id",
    "bigcommerce_client_secret",
    "bigcommerce_store_hash",
)


def parse(env: Mapping[str, str], *, shops_text: str | None = None) -> Settings:
    """Validate a mapping of variables into :class:`Settings`; raise :class:`ConfigError`.

    Each variable of the table is read on its own (unset or blank: its default); then the rules
    that join two variables are checked. Every problem is one line naming the variable. With
    ``BROKER_SHOPS_FILE``, the shops come from that file (``shops_text``, when given, is its
    text) and the single-shop variables must be unset; without it, they make the one shop.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    given: set[str] = set()
    from_file = bool((env.get(shop_config.FILE_VARIABLE) or "").strip())
    for variable in TABLE:
        raw = (env.get(variable.name) or "").strip()
        if from_file and variable.attribute in SINGLE_SHOP_ATTRIBUTES:
            continue  # refused below when set
        if raw:
            given.add(variable.name)
        elif variable.required is not None:
            problems.append(f"{variable.name}: {variable.required}")
            continue
        try:
            values[variable.attribute] = variable.read(raw) if raw else variable.default_value()
        except Invalid as exc:
            problems.extend(f"{variable.name}: {message}" for message in exc.messages)
    problems.extend(_joint_problems(values, given))
    text = None
    if from_file:
        text, shops = _file_shops(env, values.get("shops_file"), shops_text, problems)
    else:
        shops = _single_shop(values)
    if problems or shops is None:
        raise ConfigError(problems)
    for attribute in SINGLE_SHOP_ATTRIBUTES:
        values.pop(attribute, None)
    return Settings(**values, shops=shops, shops_text=text)


def _file_shops(
    env: Mapping[str, str], path: str | None, text: str | None, problems: list[str]
) -> tuple[str | None, Shops | None]:
    """The shops of the file (its text read now unless given), or None with the problems."""
    both = [name for name in shop_config.SINGLE_SHOP_VARIABLES if (env.get(name) or "").strip()]
    if both:
        problems.append(
            f"{shop_config.FILE_VARIABLE}: set together with {', '.join(both)}; with a shops "
            "file every shop is described in the file: unset the single-shop variables"
        )
    if path is None:
        return None, None
    try:
        text = shop_config.read_file(path) if text is None else text
        return text, shop_config.parse_shops(text)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return text, None


BIGCOMMERCE_PARTS = ("store_hash", "client_id", "client_secret")  # BigCommerceApp's order


def _single_shop(values: Mapping[str, Any]) -> Shops | None:
    """The one shop of the single-shop variables (None when one of them has a problem)."""
    if any(values.get(name) is None for name in ("shop", "signing_keys", "issuer_keys")):
        return None
    shopify = None
    if values.get("shopify_secret") is not None and values.get("shopify_shop") is not None:
        shopify = shop_config.ShopifyApp(values["shopify_shop"], values["shopify_secret"])
    bigcommerce = None
    if all(values.get(f"bigcommerce_{name}") is not None for name in BIGCOMMERCE_PARTS):
        bigcommerce = shop_config.BigCommerceApp(
            *(values[f"bigcommerce_{name}"] for name in BIGCOMMERCE_PARTS)
        )
    shop = Shop(
        values["shop"],
        values["signing_keys"],
        values["issuer_keys"],
        values.get("cors_origins") or (),
        shopify,
        bigcommerce,
    )
    return Shops((shop,))


def _joint_problems(values: Mapping[str, Any], given: set[str]) -> list[str]:
    """The rules that join two variables, checked once each has been read on its own."""
    problems: list[str] = []
    ttl, max_ttl = values.get("token_ttl"), values.get("token_max_ttl")
    if ttl is not None and max_ttl is not None and ttl > max_ttl:
        problems.append("BROKER_TOKEN_TTL: must not exceed BROKER_TOKEN_MAX_TTL")
    shopify = ("BROKER_SHOPIFY_SECRET", "BROKER_SHOPIFY_SHOP")
    if len(given.intersection(shopify)) == 1:
        missing = next(name for name in shopify if name not in given)
        problems.append(f"{missing}: required with the other BROKER_SHOPIFY_ variable")
    missing_bigcommerce = [name for name in BIGCOMMERCE_VARIABLES if name not in given]
    if len(missing_bigcommerce) in (1, 2):
        problems.append(
            f"{', '.join(missing_bigcommerce)}: required with the other BROKER_BIGCOMMERCE_ "
            "variables (set all three, or none)"
        )
    return problems
