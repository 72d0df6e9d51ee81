"""Configuration: read once from the environment (and ``.env``), validated, frozen.

Every problem is reported at once, one line each, naming the variable and never its value.
Secrets are wrapped in :class:`Secret` so that no repr, log line or traceback shows them.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from broker.refusals import DEV_ISSUER_KEY, deployment_problems, wildcard_on_public_suffix

__all__ = [
    "DEV_ISSUER_KEY",
    "VARIABLES",
    "ConfigError",
    "RateLimit",
    "Secret",
    "Settings",
    "SigningKey",
    "deployment_problems",
    "parse",
    "parse_rate_limit",
    "unknown_variables",
]

T = TypeVar("T")

MIN_SECRET_BYTES = 32

# Every variable the broker reads, in the order .env.example documents them. This is the one list
# of known names: a BROKER_* variable that is not here is reported as unknown (a likely typo) by
# `broker serve` (a warning) and `broker check` (a failure), so a new setting is added here.
VARIABLES: tuple[str, ...] = (
    "BROKER_SHOP",
    "BROKER_SIGNING_KEYS",
    "BROKER_ISSUER_KEYS",
    "BROKER_UPSTREAM_URL",
    "BROKER_API_VERSIONS",
    "REDIS_URL",
    "BROKER_CORS_ORIGINS",
    "BROKER_TOKEN_TTL",
    "BROKER_TOKEN_MAX_TTL",
    "BROKER_CLOCK_LEEWAY",
    "BROKER_CACHE_TTL",
    "BROKER_CACHE_STALE_TTL",
    "BROKER_RATE_LIMIT_READ",
    "BROKER_RATE_LIMIT_WRITE",
    "BROKER_RATE_LIMIT_ISSUER",
    "BROKER_RATE_LIMIT_SYNC",
    "BROKER_NEAR_CACHE_MB",
    "BROKER_UPSTREAM_TIMEOUT",
    # Circuit breaker and per-customer back-off (broker.circuit).
    "BROKER_CIRCUIT_FAILURE_RATE",
    "BROKER_CIRCUIT_MIN_CALLS",
    "BROKER_CIRCUIT_WINDOW",
    "BROKER_CIRCUIT_COOLDOWN",
    "BROKER_UPSTREAM_BACKOFF",
    "BROKER_METRICS_TOKEN",
    "BROKER_SHOPIFY_SECRET",
    "BROKER_SHOPIFY_SHOP",
    "PORT",
    "WEB_CONCURRENCY",
    "LOG_LEVEL",
    "LOG_FORMAT",
)

SHOP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
KID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
VERSION_RE = re.compile(r"^v[0-9A-Za-z]{1,32}$")
LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh]?)\s*$")
SHOPIFY_SHOP_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\.myshopify\.com$")
ORIGIN_RE = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console")


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


@dataclass(frozen=True)
class Settings:
    shop: str
    signing_keys: tuple[SigningKey, ...]
    issuer_keys: tuple[Secret[str], ...]
    upstream_url: str = "https://app.bubblehouse.com"
    api_versions: tuple[str, ...] = ("v2023061",)
    redis_url: Secret[str] | None = None
    cors_origins: tuple[str, ...] = ()
    token_ttl: int = 900
    token_max_ttl: int = 3600
    clock_leeway: int = 30
    cache_ttl: int = 60
    cache_stale_ttl: int = 600
    rate_limit_read: RateLimit | None = field(default_factory=lambda: RateLimit(60, 10))
    rate_limit_write: RateLimit | None = field(default_factory=lambda: RateLimit(20, 60))
    rate_limit_issuer: RateLimit | None = field(default_factory=lambda: RateLimit(10, 60))
    upstream_timeout: float = 5.0
    rate_limit_sync: float = 0.1  # seconds between pushes of local counts; 0: strict
    near_cache_mb: int = 8  # process-local tier of referral lists; 0: off
    # Circuit breaker and per-customer back-off (broker.circuit).
    circuit_failure_rate: float = 0.5
    circuit_min_calls: int = 20
    circuit_window: float = 30.0
    circuit_cooldown: float = 10.0
    upstream_backoff: float = 5.0
    metrics_token: Secret[str] | None = None
    shopify_secret: Secret[str] | None = None  # GET /shopify/token only when both are set
    shopify_shop: str | None = None
    port: int = 8000
    web_concurrency: int = 1
    log_level: str = "info"
    log_format: str = "json"
    # BROKER_* names in the environment that the broker does not know (never their values).
    unknown_variables: tuple[str, ...] = field(default=(), compare=False)

    @property
    def signing_key(self) -> SigningKey:
        """The key that signs; every configured key verifies."""
        return self.signing_keys[0]

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
        *,
        strict: bool = True,
    ) -> Settings:
        """Read a deployment's environment, under which a ``.env`` file fills the gaps.

        Beyond :func:`parse`, refuses what must never run in production
        (:func:`deployment_problems`). An unknown ``BROKER_*`` name is a problem when ``strict``
        (``broker check``); otherwise it is only listed in ``unknown_variables`` for the caller
        to warn about (``broker serve``).
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
            settings = parse(merged)
        except ConfigError as exc:
            raise ConfigError([*exc.problems, *problems]) from None
        problems = [*deployment_problems(settings), *problems]
        if problems:
            raise ConfigError(problems)
        return replace(settings, unknown_variables=unknown)


def unknown_variables(env: Mapping[str, str]) -> tuple[str, ...]:
    """The ``BROKER_*`` names of ``env`` that are not in :data:`VARIABLES`, sorted."""
    known = frozenset(VARIABLES)
    return tuple(sorted(n for n in env if n.startswith("BROKER_") and n not in known))


def _csv(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_rate_limit(raw: str) -> RateLimit | None:
    """``N/Ss`` (also ``N/s``, ``N/Sm``, ``N/Sh``); ``0`` disables."""
    if raw.strip() == "0":
        return None
    match = LIMIT_RE.fullmatch(raw)
    if not match:
        raise ValueError("expected N/Ss, for example 20/10s, or 0 to disable")
    count, span, unit = int(match[1]), int(match[2] or 1), match[3] or "s"
    window = span * {"s": 1, "m": 60, "h": 3600}[unit]
    if count < 1 or window < 1:
        raise ValueError("expected a positive count and window, or 0 to disable")
    return RateLimit(count, window)


def parse(env: Mapping[str, str]) -> Settings:
    """Validate a mapping of variables into :class:`Settings`; raise :class:`ConfigError`."""
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value is not None and value.strip() != "" else None

    def integer(name: str, default: int, low: int, high: int) -> int:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            problems.append(f"{name}: must be a whole number")
            return default
        if not low <= value <= high:
            problems.append(f"{name}: must be between {low} and {high}")
            return default
        return value

    shop = get("BROKER_SHOP") or ""
    if not shop:
        problems.append("BROKER_SHOP: required (the Bubblehouse shop slug)")
    elif not SHOP_RE.fullmatch(shop) or "/" in shop:
        problems.append("BROKER_SHOP: must be a shop slug (letters, digits, '.', '_', '-')")

    signing: list[SigningKey] = []
    raw_signing = get("BROKER_SIGNING_KEYS")
    if raw_signing is None:
        problems.append("BROKER_SIGNING_KEYS: required, as kid:base64secret[,kid:base64secret]")
    else:
        seen: set[str] = set()
        for position, item in enumerate(_csv(raw_signing), start=1):
            kid, sep, encoded = item.partition(":")
            kid = kid.strip()
            where = f"BROKER_SIGNING_KEYS: key #{position}"
            if not sep or not KID_RE.fullmatch(kid):
                problems.append(f"{where}: must be written kid:base64secret")
                continue
            if kid in seen:
                problems.append(f"{where}: kid {kid!r} appears twice")
                continue
            seen.add(kid)
            try:
                secret = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                problems.append(f"{where} (kid {kid!r}): the secret is not valid base64")
                continue
            if len(secret) < MIN_SECRET_BYTES:
                problems.append(
                    f"{where} (kid {kid!r}): the decoded secret is {len(secret)} bytes; "
                    f"at least {MIN_SECRET_BYTES} are required"
                )
                continue
            signing.append(SigningKey(kid, Secret(secret)))
        if not signing and not any(p.startswith("BROKER_SIGNING_KEYS") for p in problems):
            problems.append("BROKER_SIGNING_KEYS: required, as kid:base64secret[,kid:base64secret]")

    issuer = [Secret(key) for key in _csv(get("BROKER_ISSUER_KEYS") or "")]
    if not issuer:
        problems.append("BROKER_ISSUER_KEYS: required (comma-separated keys for POST /tokens)")
    elif any(len(key.reveal()) < 16 for key in issuer):
        problems.append("BROKER_ISSUER_KEYS: every issuer key must be at least 16 characters")

    upstream = (get("BROKER_UPSTREAM_URL") or "https://app.bubblehouse.com").rstrip("/")
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        problems.append("BROKER_UPSTREAM_URL: must be an http(s) base URL")

    versions = _csv(get("BROKER_API_VERSIONS") or "v2023061")
    if not versions or not all(VERSION_RE.fullmatch(v) for v in versions):
        problems.append("BROKER_API_VERSIONS: must be comma-separated versions such as v2023061")

    redis_raw = get("REDIS_URL")
    if redis_raw is not None and urlsplit(redis_raw).scheme not in (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
        "redis-cluster",
    ):
        problems.append(
            "REDIS_URL: must be redis://, rediss://, unix:// or a cluster URL (redis+cluster://)"
        )

    origins = _csv(get("BROKER_CORS_ORIGINS") or "")
    bad_origins = [o for o in origins if not ORIGIN_RE.fullmatch(o.rstrip("/"))]
    if bad_origins:
        problems.append(
            "BROKER_CORS_ORIGINS: every entry must be an origin such as https://shop.example "
            "or https://*.shop.example"
        )
    elif any(wildcard_on_public_suffix(o) for o in origins):
        problems.append(
            "BROKER_CORS_ORIGINS: a wildcard must not cover a public suffix (such as *.com or "
            "*.co.uk): name the shop's own domain, as in https://*.shop.example"
        )

    token_ttl = integer("BROKER_TOKEN_TTL", 900, 1, 86400)
    max_ttl = integer("BROKER_TOKEN_MAX_TTL", 3600, 1, 86400)
    if token_ttl > max_ttl:
        problems.append("BROKER_TOKEN_TTL: must not exceed BROKER_TOKEN_MAX_TTL")

    limits: dict[str, RateLimit | None] = {}
    for name, default in (
        ("BROKER_RATE_LIMIT_READ", RateLimit(60, 10)),
        ("BROKER_RATE_LIMIT_WRITE", RateLimit(20, 60)),
        ("BROKER_RATE_LIMIT_ISSUER", RateLimit(10, 60)),
    ):
        raw = get(name)
        try:
            limits[name] = default if raw is None else parse_rate_limit(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            limits[name] = default

    timeout_raw = get("BROKER_UPSTREAM_TIMEOUT")
    upstream_timeout = 5.0
    if timeout_raw is not None:
        try:
            upstream_timeout = float(timeout_raw)
            if not 0.05 <= upstream_timeout <= 120:
                raise ValueError
        except ValueError:
            problems.append("BROKER_UPSTREAM_TIMEOUT: must be seconds between 0.05 and 120")
            upstream_timeout = 5.0

    sync_raw = get("BROKER_RATE_LIMIT_SYNC")
    rate_limit_sync = 0.1
    if sync_raw is not None:
        try:
            rate_limit_sync = float(sync_raw)
            if not (rate_limit_sync == 0 or 0.01 <= rate_limit_sync <= 10):
                raise ValueError
        except ValueError:
            problems.append(
                "BROKER_RATE_LIMIT_SYNC: must be seconds between 0.01 and 10, or 0 for strict"
            )
            rate_limit_sync = 0.1

    # Circuit breaker and per-customer back-off (broker.circuit).
    def number(name: str, default: float, low: float, high: float) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            problems.append(f"{name}: must be a number between {low:g} and {high:g}")
            return default
        return value

    circuit_failure_rate = number("BROKER_CIRCUIT_FAILURE_RATE", 0.5, 0.01, 1.0)
    circuit_min_calls = integer("BROKER_CIRCUIT_MIN_CALLS", 20, 1, 100_000)
    circuit_window = number("BROKER_CIRCUIT_WINDOW", 30.0, 1.0, 3600.0)
    circuit_cooldown = number("BROKER_CIRCUIT_COOLDOWN", 10.0, 0.1, 3600.0)
    upstream_backoff = number("BROKER_UPSTREAM_BACKOFF", 5.0, 0.0, 600.0)

    metrics = get("BROKER_METRICS_TOKEN")
    shopify_secret = get("BROKER_SHOPIFY_SECRET") or None
    shopify_shop = (get("BROKER_SHOPIFY_SHOP") or "").strip().lower() or None
    if (shopify_secret is None) != (shopify_shop is None):
        missing = "BROKER_SHOPIFY_SHOP" if shopify_shop is None else "BROKER_SHOPIFY_SECRET"
        problems.append(f"{missing}: required with the other BROKER_SHOPIFY_ variable")
    if shopify_secret is not None and len(shopify_secret) < 16:
        problems.append("BROKER_SHOPIFY_SECRET: must be the app's shared secret (16+ characters)")
    if shopify_shop is not None and not SHOPIFY_SHOP_RE.fullmatch(shopify_shop):
        problems.append("BROKER_SHOPIFY_SHOP: must be the shop's <name>.myshopify.com domain")
    log_level = (get("LOG_LEVEL") or "info").lower()
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}")
    log_format = (get("LOG_FORMAT") or "json").lower()
    if log_format not in LOG_FORMATS:
        problems.append("LOG_FORMAT: must be json or console")

    settings = Settings(
        shop=shop,
        signing_keys=tuple(signing),
        issuer_keys=tuple(issuer),
        upstream_url=upstream,
        api_versions=tuple(versions),
        redis_url=Secret(redis_raw) if redis_raw else None,
        cors_origins=tuple(o.rstrip("/") for o in origins),
        token_ttl=token_ttl,
        token_max_ttl=max_ttl,
        clock_leeway=integer("BROKER_CLOCK_LEEWAY", 30, 0, 600),
        cache_ttl=integer("BROKER_CACHE_TTL", 60, 0, 86400),
        cache_stale_ttl=integer("BROKER_CACHE_STALE_TTL", 600, 0, 7 * 86400),
        rate_limit_read=limits["BROKER_RATE_LIMIT_READ"],
        rate_limit_write=limits["BROKER_RATE_LIMIT_WRITE"],
        rate_limit_issuer=limits["BROKER_RATE_LIMIT_ISSUER"],
        upstream_timeout=upstream_timeout,
        rate_limit_sync=rate_limit_sync,
        near_cache_mb=integer("BROKER_NEAR_CACHE_MB", 8, 0, 4096),
        circuit_failure_rate=circuit_failure_rate,
        circuit_min_calls=circuit_min_calls,
        circuit_window=circuit_window,
        circuit_cooldown=circuit_cooldown,
        upstream_backoff=upstream_backoff,
        metrics_token=Secret(metrics) if metrics else None,
        shopify_secret=Secret(shopify_secret) if shopify_secret else None,
        shopify_shop=shopify_shop,
        port=integer("PORT", 8000, 1, 65535),
        web_concurrency=integer("WEB_CONCURRENCY", 1, 1, 64),
        log_level=log_level,
        log_format=log_format,
    )
    if problems:
        raise ConfigError(problems)
    return settings
