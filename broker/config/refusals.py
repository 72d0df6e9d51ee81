"""What ``broker serve`` refuses even in a well-formed configuration (``broker dev`` may use it).

:func:`deployment_problems` is applied by :meth:`broker.config.settings.Settings.from_env` (so by
``broker serve`` and ``broker check``), never by :func:`broker.config.settings.parse`, which
``broker dev`` uses with its published issuer key. :func:`wildcard_on_public_suffix` is part of
the format check of ``BROKER_CORS_ORIGINS`` everywhere. Each problem names the variable and never
its value.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

# The issuer key `broker dev` uses and prints: published, so never accepted by `broker serve`.
DEV_ISSUER_KEY = "dev-issuer-key-not-a-secret-anywhere"
# The BigCommerce client secret of the sandbox's look-alike store, which `broker dev` uses.
DEV_BIGCOMMERCE_SECRET = "dev-bigcommerce-client-secret-not-a-secret"  # noqa: S105 (published)
MIN_METRICS_TOKEN = 16
# What the placeholders of .env.example and deploy/kubernetes/secret.example.yaml hold
# (`your-shop-slug`, `change-me-metrics-token`, `redis://:change-me-redis-password@...`): a
# value that still holds one was copied and never filled in. Compared case-insensitively.
PLACEHOLDERS = ("change-me", "paste_the_", "your-shop-slug", "your-store.")


class Hidden(Protocol):
    """A secret's wrapper (:class:`broker.config.values.Secret`), as far as refusals read it."""

    def reveal(self) -> str: ...


class Deployment(Protocol):
    """The parts of :class:`broker.config.settings.Settings` that refusals read (no import back)."""

    @property
    def upstream_url(self) -> str: ...
    @property
    def metrics_token(self) -> Hidden | None: ...
    @property
    def web_concurrency(self) -> int: ...
    @property
    def redis_url(self) -> Hidden | None: ...


def deployment_problems(settings: Deployment) -> list[str]:
    """What a valid configuration must still not run in production (``broker dev`` may).

    Each problem names the variable and never its value. The shops' own values (slugs, issuer
    keys, platform secrets) are checked by :func:`broker.config.shops.deployment_problems`.
    """
    problems = placeholder_problems(settings)
    parts = urlsplit(settings.upstream_url)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        problems.append(
            "BROKER_UPSTREAM_URL: plain http is allowed only to a loopback address; use https"
        )
    token = settings.metrics_token
    if token is not None and len(token.reveal()) < MIN_METRICS_TOKEN:
        problems.append(f"BROKER_METRICS_TOKEN: must be at least {MIN_METRICS_TOKEN} characters")
    if settings.web_concurrency > 1 and settings.redis_url is None:
        problems.append(
            "WEB_CONCURRENCY: more than one worker needs REDIS_URL, or rate limits, idempotency "
            "and the cache split per worker; set REDIS_URL or WEB_CONCURRENCY=1"
        )
    return problems


def placeholder_problems(settings: Deployment) -> list[str]:
    """The variables that still hold a placeholder of the example files (:data:`PLACEHOLDERS`)."""
    values: dict[str, list[str]] = {
        "BROKER_METRICS_TOKEN": [settings.metrics_token.reveal()] if settings.metrics_token else [],
        "REDIS_URL": [settings.redis_url.reveal()] if settings.redis_url else [],
    }
    return [
        f"{name}: still holds the placeholder of the example file; set the real value"
        for name, given in values.items()
        if any(marker in value.lower() for value in given for marker in PLACEHOLDERS)
    ]


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The public suffix list shipped inside the ``publicsuffixlist`` package, loaded once."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def wildcard_on_public_suffix(origin: str) -> bool:
    """``https://*.com`` or ``https://*.co.uk``: a wildcard that would match anyone's site."""
    host = urlsplit(origin).hostname or ""
    if not origin.split("://", 1)[-1].startswith("*."):
        return False
    domain = host.removeprefix("*.").rstrip(".").lower()
    psl = _public_suffixes()
    return bool(psl.is_public(domain))
