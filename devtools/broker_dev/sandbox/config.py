"""The sandbox's configuration: what it is started with, and the day-one rules it can be set to.

:class:`SandboxConfig` comes from the environment (:func:`sandbox_config_from_env`) or from code
(``broker dev``, tests). :class:`Rules` are the behaviours of the real Bubblehouse that a
friendly sandbox would hide; each starts from an environment variable and can be changed at run
time through ``PUT /_sandbox/settings`` (same names, JSON):

``customers`` (``SANDBOX_CUSTOMERS``): ``any`` (default) makes every customer token's customer
    exist from first use; ``synced`` knows only the seeded customers and those synced through
    ``POST /_sandbox/customers``, as Bubblehouse knows only what the shop's platform pushed:
    anyone else gets 404 ``no_customers_match_customer_identity``.
``check_email`` (``SANDBOX_CHECK_EMAIL``): when true, a token whose ``ce`` disagrees with the
    email the sandbox holds for that customer gets 404
    ``customer_identity_partially_mismatches_matched_customer``. Default false.
``rate_limit_read`` / ``rate_limit_write`` (``SANDBOX_RATE_LIMIT_READ`` / ``_WRITE``): calls per
    second per customer (reads: CustomerReferrals2 and Status2; writes: Refer2), ``0`` for none
    (default). Over it: 429 ``rate_limit_exceeded`` with Bubblehouse's sample message and
    ``Retry-After: 1`` (the ``Retry-After`` is the sandbox's; Bubblehouse documents none).
``refer_refusal`` (run time only): ``{"status": 4xx, "id": "<slug>", "message": "<shop text>"}``
    or ``null``. While set, every Refer2 that passes the token and input checks is refused with
    that status and body, as a shop's eligibility rule would refuse it with the shop's own words.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.config.settings import ConfigError, parse
from broker_dev.sandbox.bigcommerce import BigCommerceStore, store_from_env

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")
CUSTOMER_MODES = ("any", "synced")
SLUG_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_RATE = 10_000
MAX_MESSAGE = 2_000


@dataclass(frozen=True)
class Refusal:
    """A Refer2 refusal in the shop's words."""

    status: int
    error_id: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "id": self.error_id, "message": self.message}


@dataclass(frozen=True)
class Rules:
    customers: str = "any"
    check_email: bool = False
    rate_limit_read: int = 0
    rate_limit_write: int = 0
    refer_refusal: Refusal | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "check_email": self.check_email,
            "rate_limit_read": self.rate_limit_read,
            "rate_limit_write": self.rate_limit_write,
            "refer_refusal": None if self.refer_refusal is None else self.refer_refusal.to_json(),
        }

    def updated(self, data: object) -> Rules:
        """These rules with the members of ``data`` changed; :class:`ValueError` says why not."""
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        unknown = sorted(set(data) - set(self.to_json()))
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        changes: dict[str, Any] = {}
        if "customers" in data:
            if data["customers"] not in CUSTOMER_MODES:
                raise ValueError("customers must be 'any' or 'synced'")
            changes["customers"] = data["customers"]
        if "check_email" in data:
            if not isinstance(data["check_email"], bool):
                raise ValueError("check_email must be true or false")
            changes["check_email"] = data["check_email"]
        for name in ("rate_limit_read", "rate_limit_write"):
            if name in data:
                value = data[name]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be a whole number of calls per second")
                if not 0 <= value <= MAX_RATE:
                    raise ValueError(f"{name} must be between 0 and {MAX_RATE}")
                changes[name] = value
        if "refer_refusal" in data:
            changes["refer_refusal"] = _refusal(data["refer_refusal"])
        return dataclasses.replace(self, **changes)


def _refusal(value: object) -> Refusal | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"status", "id", "message"}:
        raise ValueError("refer_refusal must be null or an object with status, id and message")
    status = value.get("status", 403)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 499:
        raise ValueError("refer_refusal.status must be a 4xx status")
    if status in (401, 429):
        raise ValueError("refer_refusal.status 401 and 429 mean other things; use a fault")
    error_id = value.get("id", "referral_not_allowed")
    if not isinstance(error_id, str) or not SLUG_RE.fullmatch(error_id):
        raise ValueError("refer_refusal.id must be a lower-case slug")
    message = value.get("message")
    if not isinstance(message, str) or not message or len(message) > MAX_MESSAGE:
        raise ValueError(f"refer_refusal.message must be text of 1-{MAX_MESSAGE} characters")
    return Refusal(status, error_id, message)


@dataclass(frozen=True)
class SandboxConfig:
    shop: str
    keys: Mapping[str, bytes]
    versions: tuple[str, ...] = ("v2023061",)
    delay: float = 0.0
    fast: bool = False
    seed: bool = True
    rules: Rules = field(default_factory=Rules)
    bigcommerce: BigCommerceStore = field(default_factory=BigCommerceStore)


def sandbox_config_from_env(env: Mapping[str, str]) -> SandboxConfig:
    """The sandbox's configuration from environment variables; :class:`ConfigError` if bad."""
    problems: list[str] = []
    shared = {
        name: env[name]
        for name in ("BROKER_SHOP", "BROKER_SIGNING_KEYS", "BROKER_API_VERSIONS")
        if name in env
    }
    # The broker's parser also insists on issuer keys, which the sandbox never uses: a
    # placeholder lets it check the three shared variables exactly as the broker does.
    shared["BROKER_ISSUER_KEYS"] = "sandbox-placeholder-issuer-key-never-used"
    settings = None
    try:
        settings = parse(shared)
    except ConfigError as exc:
        problems.extend(exc.problems)

    delay = 0.0
    raw_delay = env.get("SANDBOX_DELAY", "").strip()
    if raw_delay:
        try:
            delay = float(raw_delay)
            if not 0 <= delay <= 60:
                raise ValueError
        except ValueError:
            problems.append("SANDBOX_DELAY: must be seconds between 0 and 60")

    def flag(name: str, default: bool) -> bool:
        raw = env.get(name)
        if raw is None:
            return default
        if raw.strip().lower() in TRUE:
            return True
        if raw.strip().lower() not in FALSE:
            problems.append(f"{name}: must be true or false (1/0, yes/no, on/off)")
        return False if raw.strip() else default

    def rate(name: str) -> int:
        raw = env.get(name, "").strip()
        if not raw:
            return 0
        # isdigit() alone also passes '²' and other digits that int() refuses.
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_RATE:
            problems.append(f"{name}: must be calls per second per customer, 0-{MAX_RATE}")
            return 0
        return int(raw)

    customers = env.get("SANDBOX_CUSTOMERS", "any").strip().lower() or "any"
    if customers not in CUSTOMER_MODES:
        problems.append("SANDBOX_CUSTOMERS: must be 'any' or 'synced'")
        customers = "any"
    rules = Rules(
        customers=customers,
        check_email=flag("SANDBOX_CHECK_EMAIL", False),
        rate_limit_read=rate("SANDBOX_RATE_LIMIT_READ"),
        rate_limit_write=rate("SANDBOX_RATE_LIMIT_WRITE"),
    )
    bigcommerce = store_from_env(env, problems)
    fast = flag("SANDBOX_FAST", False)
    seed = flag("SANDBOX_SEED", True)
    if problems or settings is None:
        raise ConfigError(problems)
    return SandboxConfig(
        shop=settings.first_shop.slug,
        keys={key.kid: key.secret.reveal() for key in settings.first_shop.signing_keys},
        versions=settings.api_versions,
        delay=delay,
        fast=fast,
        seed=seed,
        rules=rules,
        bigcommerce=bigcommerce,
    )


class RateCounter:
    """Bubblehouse-like limits: calls per customer per second, reads and writes apart."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}

    def over(self, kind: str, who: str, limit: int, now: float) -> bool:
        """Count one call; True when it is over ``limit`` calls in this second."""
        if limit <= 0:
            return False
        second = int(now)
        if len(self._counts) > 10_000:
            self._counts = {k: v for k, v in self._counts.items() if k[2] == second}
        key = (kind, who, second)
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key] > limit

    def clear(self) -> None:
        self._counts.clear()
