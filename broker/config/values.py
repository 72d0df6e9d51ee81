"""The values of the configuration: their types, and the readers that turn one variable's text
into one value.

A reader takes the variable's text (already stripped, never empty) and returns the value, or
raises :class:`Invalid` with one or more messages. A message says what is wrong and never
repeats the value: :func:`broker.config.settings.parse` prefixes it with the variable's name.
Secrets are wrapped in :class:`Secret` so that no repr, log line or traceback shows them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from broker.config.refusals import wildcard_on_public_suffix

T = TypeVar("T")

MIN_SECRET_BYTES = 32
MIN_ISSUER_KEY = 32  # spec 6: each issuer key at least 32 characters
MIN_SHOPIFY_SECRET = 16
MIN_BIGCOMMERCE_SECRET = 16

SHOP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
KID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
VERSION_RE = re.compile(r"^v[0-9A-Za-z]{1,32}$")
LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh]?)\s*$")
SHOPIFY_SHOP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\.myshopify\.com$")
BIGCOMMERCE_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
BIGCOMMERCE_STORE_HASH_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")
ORIGIN_RE = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis-cluster")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console")
SIGNING_KEYS_FORM = "required, as kid:base64secret[,kid:base64secret]"


class Secret(Generic[T]):
    """A value that never shows itself in a repr or a string."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: Secret[bytes]


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` requests per ``window`` seconds."""

    limit: int
    window: int

    @property
    def policy(self) -> str:
        return f"{self.limit};w={self.window}"


class ConfigError(Exception):
    """Configuration problems, one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Invalid(ValueError):
    """What is wrong with one variable's value, one message per problem, never the value."""

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        self.messages = messages


def csv(raw: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated list."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def whole(low: int, high: int) -> Callable[[str], int]:
    """A reader of whole numbers from ``low`` to ``high``."""

    def read(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise Invalid("must be a whole number") from None
        if not low <= value <= high:
            raise Invalid(f"must be between {low} and {high}")
        return value

    return read


def number(low: float, high: float, message: str = "") -> Callable[[str], float]:
    """A reader of numbers from ``low`` to ``high`` (``message`` says so in the reader's words)."""
    refusal = message or f"must be a number between {low:g} and {high:g}"

    def read(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise Invalid(refusal) from None
        if math.isnan(value) or not low <= value <= high:
            raise Invalid(refusal)
        return value

    return read


def choice(options: tuple[str, ...], message: str) -> Callable[[str], str]:
    """A reader of one of ``options``, in any case."""

    def read(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise Invalid(message)
        return value

    return read


def secret(raw: str) -> Secret[str]:
    return Secret(raw)


def shop(raw: str) -> str:
    if not SHOP_RE.fullmatch(raw) or "/" in raw:
        raise Invalid("must be a shop slug (letters, digits, '.', '_', '-')")
    return raw


def signing_keys(raw: str) -> tuple[SigningKey, ...]:
    """``kid:base64secret[,kid:base64secret...]``: one message per bad key."""
    keys: list[SigningKey] = []
    problems: list[str] = []
    seen: set[str] = set()
    for position, item in enumerate(csv(raw), start=1):
        kid, sep, encoded = item.partition(":")
        kid = kid.strip()
        where = f"key #{position}"
        if not sep or not KID_RE.fullmatch(kid):
            problems.append(f"{where}: must be written kid:base64secret")
            continue
        if kid in seen:
            problems.append(f"{where}: kid {kid!r} appears twice")
            continue
        seen.add(kid)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{where} (kid {kid!r}): the secret is not valid base64")
            continue
        if len(decoded) < MIN_SECRET_BYTES:
            problems.append(
                f"{where} (kid {kid!r}): the decoded secret is {len(decoded)} bytes; "
                f"at least {MIN_SECRET_BYTES} are required"
            )
            continue
        keys.append(SigningKey(kid, Secret(decoded)))
    if problems:
        raise Invalid(*problems)
    if not keys:
        raise Invalid(SIGNING_KEYS_FORM)
    return tuple(keys)


def issuer_keys(raw: str) -> tuple[Secret[str], ...]:
    keys = csv(raw)
    if not keys:
        raise Invalid("required (comma-separated keys for POST /tokens)")
    if any(len(key) < MIN_ISSUER_KEY for key in keys):
        raise Invalid(f"every issuer key must be at least {MIN_ISSUER_KEY} characters")
    return tuple(Secret(key) for key in keys)


def path(raw: str) -> str:
    """A file's path, as given (read by its user)."""
    if "\x00" in raw:
        raise Invalid("must be a file's path")
    return raw


def base_url(raw: str) -> str:
    url = raw.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise Invalid("must be an http(s) base URL")
    return url


def api_versions(raw: str) -> tuple[str, ...]:
    versions = csv(raw)
    if not versions or not all(VERSION_RE.fullmatch(v) for v in versions):
        raise Invalid("must be comma-separated versions such as v2023061")
    return tuple(versions)


def redis_url(raw: str) -> Secret[str]:
    if urlsplit(raw).scheme not in REDIS_SCHEMES:
        raise Invalid("must be redis://, rediss://, unix:// or a cluster URL (redis+cluster://)")
    return Secret(raw)


def cors_origins(raw: str) -> tuple[str, ...]:
    origins = [o.rstrip("/") for o in csv(raw)]
    if not all(ORIGIN_RE.fullmatch(o) for o in origins):
        raise Invalid(
            "every entry must be an origin such as https://shop.example or https://*.shop.example"
        )
    if any(wildcard_on_public_suffix(o) for o in origins):
        raise Invalid(
            "a wildcard must not cover a public suffix (such as *.com or *.co.uk): "
            "name the shop's own domain, as in https://*.shop.example"
        )
    return tuple(origins)


def parse_rate_limit(raw: str) -> RateLimit | None:
    """``N/Ss`` (also ``N/s``, ``N/Sm``, ``N/Sh``); ``0`` disables."""
    if raw.strip() == "0":
        return None
    match = LIMIT_RE.fullmatch(raw)
    if not match:
        raise Invalid("expected N/Ss, for example 20/10s, or 0 to disable")
    count, span, unit = int(match[1]), int(match[2] or 1), match[3] or "s"
    window = span * {"s": 1, "m": 60, "h": 3600}[unit]
    if count < 1 or window < 1:
        raise Invalid("expected a positive count and window, or 0 to disable")
    return RateLimit(count, window)


def sync_interval(raw: str) -> float:
    """Seconds between pushes of local limit counts, or 0 for strict."""
    value = number(0, 10, "must be seconds between 0.01 and 10, or 0 for strict")(raw)
    if 0 < value < 0.01:
        raise Invalid("must be seconds between 0.01 and 10, or 0 for strict")
    return value


def shopify_secret(raw: str) -> Secret[str]:
    if len(raw) < MIN_SHOPIFY_SECRET:
        raise Invalid(f"must be the app's shared secret ({MIN_SHOPIFY_SECRET}+ characters)")
    return Secret(raw)


def shopify_shop(raw: str) -> str:
    value = raw.lower()
    if not SHOPIFY_SHOP_RE.fullmatch(value):
        raise Invalid("must be the shop's <name>.myshopify.com domain")
    return value


def bigcommerce_client_id(raw: str) -> str:
    if not BIGCOMMERCE_CLIENT_ID_RE.fullmatch(raw):
        raise Invalid("must be the app's client id (letters, digits, '_' and '-')")
    return raw


def bigcommerce_client_secret(raw: str) -> Secret[str]:
    if len(raw) < MIN_BIGCOMMERCE_SECRET or not raw.isascii() or not raw.isprintable():
        raise Invalid(f"must be the app's client secret ({MIN_BIGCOMMERCE_SECRET}+ characters)")
    return Secret(raw)


def bigcommerce_store_hash(raw: str) -> str:
    if not BIGCOMMERCE_STORE_HASH_RE.fullmatch(raw):
        raise Invalid("must be the store hash (letters and digits, as in stores/<hash>/)")
    return raw


HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def host(raw: str) -> str:
    """A listen address: an IPv4 or IPv6 literal, or a host name."""
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        pass
    if not HOST_RE.fullmatch(raw):
        raise Invalid("must be an IP address (0.0.0.0, ::, 127.0.0.1) or a host name")
    return raw


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One variable the broker reads.

    ``default`` is the text the variable has when unset (``None``: no value, or, with
    ``required``, the problem reported when it is missing); ``example`` is what ``.env.example``
    shows instead of the default. ``summary`` is one Markdown line for the tables; ``help`` the
    comment of ``.env.example`` (each line wrapped, a line that starts with spaces kept as is).
    """

    name: str
    attribute: str
    read: Callable[[str], T]
    section: str
    summary: str
    help: str
    default: str | None = None
    required: str | None = None
    example: str | None = None
    secret: bool = False

    def default_value(self) -> T | None:
        """The value the broker uses when the variable is unset (not for required ones)."""
        return None if self.default is None else self.read(self.default)
