"""The broker's errors: one hierarchy, each class with its status, stable id and safe message.

Every non-2xx answer of the broker is one of these, rendered once by :func:`problem_body` into a
body that is both a Bubblehouse-style error (``id``, ``message``) and an RFC 9457 problem document.

    BrokerError
    ├── MissingToken                          401 missing_token
    ├── InvalidToken                          401 invalid_token (reason)
    │   └── InvalidPlatformToken              401 invalid_platform_token (reason; 3.8)
    ├── InvalidIssuerKey                      401 invalid_issuer_key
    ├── InvalidProxySignature                 401 invalid_proxy_signature (GET /shopify/token)
    ├── CustomerNotLoggedIn                   401 customer_not_logged_in (GET /shopify/token)
    ├── CustomerIdentityDoesNotMatchToken     403 customer_identity_does_not_match_token
    ├── DeanonymizeNotAllowed                 403 deanonymize_not_allowed
    ├── InvalidGlobalApiVersion               400 invalid_global_api_version
    ├── InvalidInput                          400 invalid_input (field)
    ├── InvalidJson                           400 invalid_json
    ├── NotFound                              404 not_found
    ├── MethodNotAllowed                      405 method_not_allowed
    ├── IdempotencyKeyReused                  409 idempotency_key_reused
    ├── PayloadTooLarge                       413 payload_too_large
    ├── UnsupportedMediaType                  415 unsupported_media_type
    ├── RateLimitExceeded                     429 rate_limit_exceeded (retry_after)
    │   └── UpstreamRateLimited               429 rate_limit_exceeded, Bubblehouse's own limit
    ├── UpstreamFailure                       (everything Bubblehouse did wrong)
    │   ├── UpstreamRejected                  4xx Bubblehouse's own id, passed through
    │   ├── UpstreamMisconfigured             502 upstream_misconfigured
    │   ├── UpstreamError                     502 upstream_error
    │   │   └── UpstreamBackoff               502 upstream_error, without calling (retry_after)
    │   ├── UpstreamUnavailable               503 upstream_unavailable
    │   └── UpstreamTimeout                   504 upstream_timeout
    ├── NotReady                              503 not_ready (only /readyz, while starting/stopping)
    └── InternalError                         500 internal_error

``stale_ok`` marks the failures during which a cached body may still be served (spec 5), and
``reached_upstream`` those after which a Refer2 may have been carried out by Bubblehouse.
Errors made from a Bubblehouse 4xx JSON error may carry its ``message`` as ``upstream_message``
(cleaned by :mod:`broker.upstream.client`); nothing else of Bubblehouse's text ever reaches a body.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

ERROR_TYPE_BASE = "urn:referral-broker:error:"
SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class BrokerError(Exception):
    """The root of every error the broker answers with.

    ``id`` and ``status`` are the class's; only :class:`UpstreamRejected` sets its own per instance
    (Bubblehouse's id and status). ``browser``: a browser can meet it (the spec's table); the
    others answer only servers and orchestrators. ``catalogued`` (read off each class itself, not
    inherited): False for the abstract classes and the variants that share their parent's id.
    """

    status: int = 500
    id: str = "internal_error"
    title: ClassVar[str] = ""  # empty: the id in words ("not_found" is "Not found")
    default_message: ClassVar[str] = "Something went wrong in the broker. Quote the request id."
    retryable: ClassVar[bool] = False
    stale_ok: ClassVar[bool] = False
    reached_upstream: ClassVar[bool] = False
    browser: ClassVar[bool] = True
    catalogued: ClassVar[bool] = True

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.extra: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        """Headers this error adds to its response."""
        return {}


class MissingToken(BrokerError):
    status = 401
    id = "missing_token"
    default_message = "This call needs a customer token in an 'Authorization: Bearer' header."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="referral-broker"'}


class InvalidToken(BrokerError):
    status = 401
    id = "invalid_token"
    default_message = "The customer token is not valid. Ask the shop for a new one."

    _messages: ClassVar[dict[str, str]] = {
        "expired": "The customer token has expired. Ask the shop for a new one.",
        "malformed": "The customer token is not a well-formed JWT.",
        "signature": "The customer token's signature does not verify.",
        "unknown_key": "The customer token names a signing key this broker does not know.",
        "audience": "The customer token is not meant for Bubblehouse (aud must be BH).",
        "subject": "The customer token does not name a customer of this shop.",
        "not_yet_valid": "The customer token was issued in the future; check the clocks.",
        "missing_claim": "The customer token lacks a required claim.",
        "lifetime": "The customer token lives longer than this broker allows.",
    }

    def __init__(self, reason: str, message: str | None = None) -> None:
        if reason not in self._messages:
            raise ValueError(f"unknown {self.id} reason {reason!r}")
        self.reason = reason
        super().__init__(message or self._messages[reason], reason=reason)

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="referral-broker", error="invalid_token"'}


class InvalidPlatformToken(InvalidToken):
    """A store's proof of its signed-in customer that fails (BigCommerce's, spec 3.8)."""

    id = "invalid_platform_token"
    default_message = "The store's customer token is not valid. Fetch a new one from the store."
    # Each refusal says why in its own message (broker.rules.bigcommerce).
    _reasons = "signature expired audience issuer store operation malformed lifetime missing_claim"
    _messages: ClassVar[dict[str, str]] = dict.fromkeys(_reasons.split(), default_message)


# The reasons an invalid_token and an invalid_platform_token answer give (spec 4).
INVALID_TOKEN_REASONS = tuple(InvalidToken._messages)
PLATFORM_TOKEN_REASONS = tuple(InvalidPlatformToken._messages)


class InvalidIssuerKey(BrokerError):
    status = 401
    id = "invalid_issuer_key"
    default_message = "POST /tokens needs a valid issuer key in an 'Authorization: Bearer' header."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="referral-broker-issuer"'}


class InvalidProxySignature(BrokerError):
    """A Shopify app proxy request whose signature, shop or timestamp does not hold."""

    browser = False  # answers Shopify's proxy, never a storefront script directly
    status = 401
    id = "invalid_proxy_signature"
    default_message = "This route only answers requests signed by the shop's Shopify app proxy."


class CustomerNotLoggedIn(BrokerError):
    browser = False  # answers Shopify's proxy, never a storefront script directly
    status = 401
    id = "customer_not_logged_in"
    default_message = "No customer is logged in to the store: sign in to see referrals."


class CustomerIdentityDoesNotMatchToken(BrokerError):
    status = 403
    id = "customer_identity_does_not_match_token"
    default_message = "The customer named in the request is not the customer of the token."


class DeanonymizeNotAllowed(BrokerError):
    status = 403
    id = "deanonymize_not_allowed"
    default_message = "A customer token cannot ask for de-anonymized referral destinations."


class InvalidGlobalApiVersion(BrokerError):
    status = 400
    id = "invalid_global_api_version"
    title = "Invalid global API version"
    default_message = "The API version in the path is not one this broker serves."


class InvalidInput(BrokerError):
    status = 400
    id = "invalid_input"
    default_message = "The request input is not valid."

    def __init__(self, field: str, message: str | None = None) -> None:
        self.field = field
        super().__init__(message or f"The field '{field}' is not valid.", field=field)


class InvalidJson(BrokerError):
    status = 400
    id = "invalid_json"
    title = "Invalid JSON"
    default_message = "The request body must be a JSON object."


class NotFound(BrokerError):
    status = 404
    id = "not_found"
    default_message = "There is nothing at this path."


class MethodNotAllowed(BrokerError):
    status = 405
    id = "method_not_allowed"
    default_message = "This path does not answer that HTTP method."

    def __init__(self, allowed: tuple[str, ...] = (), message: str | None = None) -> None:
        self.allowed = allowed
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class IdempotencyKeyReused(BrokerError):
    status = 409
    id = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different request body."


class PayloadTooLarge(BrokerError):
    status = 413
    id = "payload_too_large"
    default_message = "The request body is larger than 16 KiB."


class UnsupportedMediaType(BrokerError):
    status = 415
    id = "unsupported_media_type"
    default_message = "The request body must be sent as application/json."


class RateLimitExceeded(BrokerError):
    status = 429
    id = "rate_limit_exceeded"
    default_message = "Too many requests. Wait before trying again."
    retryable = True

    def __init__(
        self,
        retry_after: int,
        message: str | None = None,
        rate_headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.retry_after = max(1, int(retry_after))
        self.rate_headers = rate_headers or {}
        super().__init__(message, retry_after=self.retry_after, **extra)

    def headers(self) -> dict[str, str]:
        return {**self.rate_headers, "Retry-After": str(self.retry_after)}


class UpstreamRateLimited(RateLimitExceeded):
    """Bubblehouse itself said 429."""

    catalogued = False  # rate_limit_exceeded, as its parent
    default_message = "Bubblehouse is rate limiting this customer. Wait before trying again."
    stale_ok = True
    reached_upstream = True

    def __init__(
        self, retry_after: int = 1, message: str | None = None, upstream_message: str | None = None
    ) -> None:
        super().__init__(
            retry_after, message, upstream_status=429, upstream_message=upstream_message
        )


class UpstreamFailure(BrokerError):
    """Bubblehouse refused, failed, or could not be reached."""

    catalogued = False  # abstract: each subclass has its own id
    status = 502
    id = "upstream_error"


class UpstreamRejected(UpstreamFailure):
    """One of Bubblehouse's own 4xx ids, passed through with its status."""

    catalogued = False  # its id and status are Bubblehouse's
    reached_upstream = True

    _messages: ClassVar[dict[str, str]] = {
        "missing_customer_identity": "Bubblehouse needs a customer identity for this call.",
        "empty_customer_identity": "Bubblehouse was given an empty customer identity.",
        "no_customers_match_customer_identity": "Bubblehouse knows no customer with this identity.",
        "customer_identity_partially_mismatches_matched_customer": (
            "Part of the customer identity disagrees with Bubblehouse's record of the customer."
        ),
        "customer_identity_does_not_match_token": (
            "Bubblehouse says the customer named in the request is not the token's customer."
        ),
    }

    def __init__(
        self, upstream_id: str, upstream_status: int, upstream_message: str | None = None
    ) -> None:
        self.id, self.status = upstream_id, upstream_status
        fallback = f"Bubblehouse refused the request ({upstream_id.replace('_', ' ')})."
        message = self._messages.get(upstream_id, fallback)
        super().__init__(
            message, upstream_status=upstream_status, upstream_message=upstream_message
        )


class UpstreamMisconfigured(UpstreamFailure):
    status = 502
    id = "upstream_misconfigured"
    default_message = (
        "Bubblehouse refused the broker's own credentials or API version. "
        "The shop's operator must fix the broker's configuration."
    )
    reached_upstream = True


class UpstreamError(UpstreamFailure):
    status = 502
    id = "upstream_error"
    default_message = "Bubblehouse answered with an error. Try again shortly."
    retryable = True
    stale_ok = True
    reached_upstream = True


class UpstreamBackoff(UpstreamError):
    """Bubblehouse's last answer for this customer was unusable (too large, not JSON): for a
    few seconds the broker answers this without calling again. Nothing was sent this time."""

    catalogued = False  # upstream_error, as its parent

    default_message = (
        "Bubblehouse's last answer for this customer could not be used. Try again shortly."
    )
    reached_upstream = False

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(retry_after=self.retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UpstreamUnavailable(UpstreamFailure):
    status = 503
    id = "upstream_unavailable"
    default_message = "Bubblehouse cannot be reached right now. Try again shortly."
    retryable = True
    stale_ok = True


class UpstreamTimeout(UpstreamFailure):
    status = 504
    id = "upstream_timeout"
    default_message = "Bubblehouse did not answer in time. Try again shortly."
    retryable = True
    stale_ok = True
    reached_upstream = True


class NotReady(BrokerError):
    """Readiness only: the process is starting or draining (not a browser-facing error)."""

    browser = False
    status = 503
    id = "not_ready"
    default_message = "The broker is starting or stopping."
    retryable = True


class InternalError(BrokerError):
    status = 500
    id = "internal_error"


def _catalogued(root: type[BrokerError]) -> list[type[BrokerError]]:
    # Read off the class itself: a subclass of an abstract error has an id of its own.
    found = [root] if root.__dict__.get("catalogued", True) else []
    return found + [cls for sub in root.__subclasses__() for cls in _catalogued(sub)]


# Every error with an id of its own (the OpenAPI document names them), and those a browser can
# meet (the spec's table), both derived from the classes above.
ERRORS: tuple[type[BrokerError], ...] = tuple(_catalogued(BrokerError)[1:])  # not the root
CATALOGUE: tuple[type[BrokerError], ...] = tuple(cls for cls in ERRORS if cls.browser)
# The ids the broker defines itself.
BROKER_IDS = frozenset(cls.id for cls in ERRORS)


def problem_body(error: BrokerError, request_id: str) -> dict[str, Any]:
    """The one JSON shape of every error answer."""
    title = error.title or error.id.replace("_", " ").capitalize()
    return {
        "type": ERROR_TYPE_BASE + error.id,
        "title": title,
        "status": error.status,
        "id": error.id,
        "message": error.message,
        "retryable": error.retryable,
        "request_id": request_id,
        **error.extra,
    }
