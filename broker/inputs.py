"""Input rules of the broker's calls: body decoding, field validation, identity binding.

Plain Python, no framework: each function takes decoded input and returns what the broker will
send upstream, or raises the documented error (spec 3.1-3.5).

Every pattern is applied with ``fullmatch`` (``$`` would let a trailing newline through), and no
accepted string may hold a control character (:func:`has_control`). Email addresses are judged by
``email-validator`` (RFC 6531 internationalised addresses included, no DNS) and forwarded exactly
as given: deliverability is Bubblehouse's business.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson
from email_validator import EmailNotValidError, validate_email

from broker.errors import (
    CustomerIdentityDoesNotMatchToken,
    DeanonymizeNotAllowed,
    InvalidInput,
    InvalidJson,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from broker.tokens import Customer

MAX_BODY = 16 * 1024
CHANNEL = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
IDENTITY_FIELDS = ("bhid", "shopid", "email")
MAX_EMAIL = 254
MAX_LOCAL_PART = 64
# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators.
CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def has_control(value: str) -> bool:
    """Whether ``value`` holds a control character (a newline, a tab, NUL, DEL, U+2028...)."""
    return any(unicodedata.category(char) in CONTROL_CATEGORIES for char in value)


def is_email(value: str) -> bool:
    """A syntactically valid address of at most 254 characters (no DNS lookup)."""
    if len(value) > MAX_EMAIL or has_control(value):
        return False
    if len(value.rpartition("@")[0]) > MAX_LOCAL_PART:
        return False
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def customer_id(value: object, field: str = "customer_id") -> str:
    """A customer id as the broker accepts it: 1-128 printable characters, no ``/``."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, f"{field} is required and must be a string.")
    if len(value) > 128 or not value.isprintable() or has_control(value) or "/" in value:
        raise InvalidInput(field, f"{field} must be 1-128 printable characters without '/'.")
    return value


def check_content_type(content_type: str | None, body_present: bool) -> None:
    """A POST body must be JSON; an empty body needs no content type."""
    if not body_present:
        return
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType()


def decode_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body into a JSON object; an empty body is ``{}``."""
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson() from exc
    if not isinstance(data, dict):
        raise InvalidJson("The request body must be a JSON object.")
    return data


def fingerprint(data: dict[str, Any]) -> str:
    """A stable digest of a request body, for idempotency."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _reject_unknown(data: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> None:
    for name in data:
        if name not in allowed:
            raise InvalidInput(f"{prefix}{name}", f"Unknown field '{prefix}{name}'.")


@dataclass(frozen=True, slots=True)
class TokenRequest:
    customer_id: str
    email: str | None
    ttl: int | None


def token_request(data: dict[str, Any]) -> TokenRequest:
    """Validate a ``POST /tokens`` body (spec 3.1)."""
    _reject_unknown(data, ("customer_id", "email", "ttl"))
    wanted = customer_id(data.get("customer_id"))
    email = data.get("email")
    if email is not None and (not isinstance(email, str) or not is_email(email)):
        raise InvalidInput("email", "email must be a valid email address.")
    ttl = data.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
        raise InvalidInput("ttl", "ttl must be a positive whole number of seconds.")
    return TokenRequest(wanted, email or None, ttl)


def invalidation_request(data: dict[str, Any]) -> str:
    """Validate a ``POST /invalidations`` body (spec 3.5); the customer id to forget."""
    _reject_unknown(data, ("customer_id",))
    return customer_id(data.get("customer_id"))


def _check_identity(data: dict[str, Any], customer: Customer) -> None:
    """``customer``, when it names anyone, must name the token's customer (then it is dropped)."""
    identity = data.get("customer")
    if identity is None:
        return
    if not isinstance(identity, dict):
        raise InvalidInput("customer", "customer must be an object with bhid, shopid or email.")
    _reject_unknown(identity, IDENTITY_FIELDS, "customer.")
    for name in IDENTITY_FIELDS:
        value = identity.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"customer.{name}", f"customer.{name} must be a string.")
        if value is not None and has_control(value):
            raise InvalidInput(
                f"customer.{name}", f"customer.{name} must not hold control characters."
            )
    bhid, shopid, email = (identity.get(name) or "" for name in IDENTITY_FIELDS)
    if bhid:
        raise CustomerIdentityDoesNotMatchToken(
            "The broker cannot check a bhid against the token; leave customer out."
        )
    if shopid and shopid != customer.id:
        raise CustomerIdentityDoesNotMatchToken()
    if email and (customer.email is None or email.casefold() != customer.email.casefold()):
        raise CustomerIdentityDoesNotMatchToken()


def _deanonymize(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput("deanonymize", "deanonymize must be true or false.")
    return value


def referrals_input(data: dict[str, Any], customer: Customer) -> dict[str, Any]:
    """Validate CustomerReferrals2 input (spec 3.2); return what goes upstream."""
    _reject_unknown(data, ("customer", "deanonymize"))
    deanonymize = _deanonymize(data.get("deanonymize"))
    _check_identity(data, customer)
    if deanonymize:
        raise DeanonymizeNotAllowed()
    return {}


def referrals_query(params: list[tuple[str, str]]) -> dict[str, Any]:
    """Turn a GET query string into CustomerReferrals2 input (only ``deanonymize`` fits there)."""
    data: dict[str, Any] = {}
    for name, value in params:
        if name != "deanonymize":
            raise InvalidInput(name, f"Unknown query parameter '{name}'.")
        if name in data:
            raise InvalidInput(name, f"The query parameter '{name}' is repeated.")
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise InvalidInput("deanonymize", "deanonymize must be true or false.")
        data[name] = lowered == "true"
    return data


def refer_input(data: dict[str, Any], customer: Customer) -> dict[str, Any]:
    """Validate Refer2 input (spec 3.3); return what goes upstream."""
    _reject_unknown(data, ("customer", "sender", "channel", "destination"))
    sender = data.get("sender")
    if sender is not None and (not isinstance(sender, str) or has_control(sender)):
        raise InvalidInput("sender", "sender must be a string without control characters.")
    channel = data.get("channel")
    if not isinstance(channel, str) or not CHANNEL.fullmatch(channel):
        raise InvalidInput(
            "channel", "channel is required: a lower-case slug such as email or whatsapp."
        )
    destination = data.get("destination")
    if channel == "email":
        if not isinstance(destination, str) or not is_email(destination):
            raise InvalidInput(
                "destination", "destination must be a valid email address for the email channel."
            )
    elif destination is not None:
        raise InvalidInput("destination", "destination is only for the email channel.")
    _check_identity(data, customer)
    upstream: dict[str, Any] = {"channel": channel}
    if destination is not None:
        upstream["destination"] = destination
    return upstream


def idempotency_key(values: list[str]) -> str | None:
    """The ``Idempotency-Key`` header, if any: 1-255 visible ASCII characters, once."""
    if not values:
        return None
    if len(values) > 1 or not IDEMPOTENCY_KEY.fullmatch(values[0]):
        raise InvalidInput(
            "Idempotency-Key",
            "Idempotency-Key must be one value of 1-255 visible ASCII characters.",
        )
    return values[0]
