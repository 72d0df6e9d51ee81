"""Input rules of the broker's calls: body decoding, field validation, identity binding.

Plain Python, no framework: each function takes decoded input and returns what the broker will
send upstream, or raises the documented error (spec 3.1-3.5).

The request bodies are declared here once, as :class:`~broker.rules.fields.Body` values
(:data:`TOKEN_REQUEST`, :data:`INVALIDATION_REQUEST`, :data:`PLATFORM_TOKEN_REQUEST`,
:data:`CUSTOMER_REFERRALS2`, :data:`REFER2`): the functions below validate with them, and
:mod:`broker.openapi.document` describes them. Email addresses are forwarded exactly as given:
deliverability is Bubblehouse's business.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from broker.errors import (
    CustomerIdentityDoesNotMatchToken,
    DeanonymizeNotAllowed,
    InvalidInput,
    InvalidJson,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from broker.rules.fields import EMAIL_FORMAT, MAX_EMAIL, Body, Field, Kind
from broker.rules.tokens import Customer

MAX_BODY = 16 * 1024
MAX_CUSTOMER_ID = 128
CHANNEL = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
CUSTOMER_ID = re.compile(r"[^/\x00-\x1f\x7f-\x9f\u2028\u2029]{1,128}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
IDENTITY_FIELDS = ("bhid", "shopid", "email")
QUERY_FIELDS = ("deanonymize",)  # CustomerReferrals2 fields a GET query string may carry


def _customer_id_field(description: str) -> Field:
    return Field(
        "customer_id",
        Kind.STRING,
        "{field} is required and must be a string.",
        description,
        required=True,
        rule_message="{field} must be 1-128 printable characters without '/'.",
        max_length=MAX_CUSTOMER_ID,
        pattern=CUSTOMER_ID,
        printable=True,
        # The printable ASCII ones: "printable" (str.isprintable) has no JSON Schema pattern.
        documented=r"[\x20-\x2e\x30-\x7e]{1,128}",
    )


# The optional ``shop`` of the merchant routes: when present, it must name the issuer key's shop.
SHOP_FIELD = Field(
    "shop",
    Kind.STRING,
    "{field} must be a string.",
    "Optional: the shop the issuer key belongs to. When present and not that shop, the key is "
    "refused (401 invalid_issuer_key).",
    max_length=128,
)


CUSTOMER_ID_FIELD = _customer_id_field(
    "1-128 printable characters, no '/'. The pattern shows the ASCII ones; printable Unicode "
    "characters are accepted too."
)

TOKEN_REQUEST = Body(
    "TokenRequest",
    (
        CUSTOMER_ID_FIELD,
        Field(
            "email",
            Kind.STRING,
            "email must be a valid email address.",
            "Becomes the token's ce claim.",
            max_length=MAX_EMAIL,
            format=EMAIL_FORMAT,
        ),
        Field(
            "ttl",
            Kind.INTEGER,
            "ttl must be a positive whole number of seconds.",
            "Seconds; clamped to BROKER_TOKEN_MAX_TTL.",
            minimum=1,
        ),
        SHOP_FIELD,
    ),
)

INVALIDATION_REQUEST = Body(
    "InvalidationRequest",
    (_customer_id_field("The customer whose cached history to drop, as on /tokens."), SHOP_FIELD),
)

PLATFORM_TOKEN_REQUEST = Body(
    "PlatformTokenRequest",
    (
        Field(
            "token",
            Kind.STRING,
            "token is required: the JWT the store's /customer/current.jwt answered.",
            "BigCommerce's current-customer JWT, exactly as /customer/current.jwt answered it.",
            required=True,
        ),
    ),
)


def _identity_field(name: str, description: str) -> Field:
    return Field(
        name,
        Kind.STRING,
        "{field} must be a string.",
        description,
        rule_message="{field} must not hold control characters.",
    )


CUSTOMER_IDENTITY = Body(
    "CustomerIdentity1",
    (
        _identity_field("bhid", "Bubblehouse customer id."),
        _identity_field("shopid", "The shop's customer id."),
        _identity_field("email", "The customer's email address."),
    ),
    "Who the call is about. Optional with a customer token; when given, every non-empty "
    "field must name the token's customer (bhid cannot be checked and is refused).",
)
CUSTOMER = Field(
    "customer",
    Kind.OBJECT,
    "customer must be an object with bhid, shopid or email.",
    body=CUSTOMER_IDENTITY,
)

CUSTOMER_REFERRALS2 = Body(
    "CustomerReferrals2Input",
    (
        Field(
            "deanonymize",
            Kind.BOOLEAN,
            "deanonymize must be true or false.",
            "true is refused for customer tokens.",
        ),
        CUSTOMER,
    ),
    "May be empty.",
)

REFER2 = Body(
    "Refer2Input",
    (
        Field(
            "sender",
            Kind.STRING,
            "sender must be a string without control characters.",
            "Accepted for Refer1 compatibility and dropped.",
        ),
        Field(
            "channel",
            Kind.STRING,
            "channel is required: a lower-case slug such as email or whatsapp.",
            "A ReferralChannel1 (open list): email, sms, whatsapp, ...",
            required=True,
            pattern=CHANNEL,
        ),
        Field(
            "destination",
            Kind.STRING,
            "destination must be a valid email address for the email channel.",
            "An email address when channel is email; absent otherwise.",
            required=True,
            max_length=MAX_EMAIL,
            format=EMAIL_FORMAT,
            when=("channel", "email"),
            absent_message="destination is only for the email channel.",
        ),
        CUSTOMER,
    ),
)


# A header, not a body member; "required" here means "not empty when sent".
IDEMPOTENCY_KEY_HEADER = Field(
    "Idempotency-Key",
    Kind.STRING,
    "Idempotency-Key must be one value of 1-255 visible ASCII characters.",
    "Makes a retried send safe: a repeat by the same customer within 24 hours is answered "
    "with the first answer.",
    required=True,
    pattern=IDEMPOTENCY_KEY,
)


def customer_id(value: object, field: str = "customer_id") -> str:
    """A customer id as the broker accepts it: 1-128 printable characters, no ``/``."""
    checked: str = CUSTOMER_ID_FIELD.check(value, field)
    return checked


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


@dataclass(frozen=True, slots=True)
class TokenRequest:
    customer_id: str
    email: str | None
    ttl: int | None
    shop: str | None = None  # the shop the body names, if it names one


def token_request(data: dict[str, Any]) -> TokenRequest:
    """Validate a ``POST /tokens`` body (spec 3.1)."""
    values = TOKEN_REQUEST.check(data)
    return TokenRequest(
        values["customer_id"], values.get("email") or None, values.get("ttl"), values.get("shop")
    )


def platform_token_request(data: dict[str, Any]) -> str:
    """Validate a ``POST /bigcommerce/token`` body (spec 3.8); the store's JWT, unchecked."""
    token: str = PLATFORM_TOKEN_REQUEST.check(data)["token"]
    return token


def invalidation_request(data: dict[str, Any]) -> tuple[str, str | None]:
    """Validate a ``POST /invalidations`` body (spec 3.5): the customer id to forget, and the
    shop the body names (None when it names none)."""
    values = INVALIDATION_REQUEST.check(data)
    return values["customer_id"], values.get("shop")


def _check_identity(identity: dict[str, str] | None, customer: Customer) -> None:
    """``customer``, when it names anyone, must name the token's customer (then it is dropped)."""
    if identity is None:
        return
    bhid, shopid, email = (identity.get(name) or "" for name in IDENTITY_FIELDS)
    if bhid:
        raise CustomerIdentityDoesNotMatchToken(
            "The broker cannot check a bhid against the token; leave customer out."
        )
    if shopid and shopid != customer.id:
        raise CustomerIdentityDoesNotMatchToken()
    if email and (customer.email is None or email.casefold() != customer.email.casefold()):
        raise CustomerIdentityDoesNotMatchToken()


def referrals_input(data: dict[str, Any], customer: Customer) -> dict[str, Any]:
    """Validate CustomerReferrals2 input (spec 3.2); return what goes upstream."""
    values = CUSTOMER_REFERRALS2.check(data)
    _check_identity(values.get("customer"), customer)
    if values.get("deanonymize"):
        raise DeanonymizeNotAllowed()
    return {}


def referrals_query(params: list[tuple[str, str]]) -> dict[str, Any]:
    """Turn a GET query string into CustomerReferrals2 input (only :data:`QUERY_FIELDS`)."""
    data: dict[str, Any] = {}
    for name, value in params:
        if name not in QUERY_FIELDS:
            raise InvalidInput(name, f"Unknown query parameter '{name}'.")
        if name in data:
            raise InvalidInput(name, f"The query parameter '{name}' is repeated.")
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise CUSTOMER_REFERRALS2.field(name).refuse(name)
        data[name] = lowered == "true"
    return data


def refer_input(data: dict[str, Any], customer: Customer) -> dict[str, Any]:
    """Validate Refer2 input (spec 3.3); return what goes upstream (``sender`` is dropped)."""
    values = REFER2.check(data)
    _check_identity(values.get("customer"), customer)
    upstream: dict[str, Any] = {"channel": values["channel"]}
    if "destination" in values:
        upstream["destination"] = values["destination"]
    return upstream


def idempotency_key(values: list[str]) -> str | None:
    """The ``Idempotency-Key`` header, if any: 1-255 visible ASCII characters, once."""
    if not values:
        return None
    if len(values) > 1:
        raise IDEMPOTENCY_KEY_HEADER.refuse(IDEMPOTENCY_KEY_HEADER.name)
    key: str = IDEMPOTENCY_KEY_HEADER.check(values[0])
    return key
