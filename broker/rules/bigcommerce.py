"""BigCommerce's current-customer JWT: who is signed in to a BigCommerce storefront (spec 3.8).

A BigCommerce storefront has no server of its own to call ``POST /tokens``. Its script fetches
``/customer/current.jwt?app_client_id=<client id>`` from its own store, and BigCommerce answers
(only to a signed-in shopper, and only on the store's own origin, with the shopper's cookies) a
JWT signed HS256 with the client secret of that app-level API account::

    {"customer": {"id": 4927, "email": "john.doe@example.com", "group_id": "6"},
     "iss": "bc/apps", "sub": "abc123", "iat": 1480831863, "exp": 1480832763, "version": 1,
     "aud": "<client id>", "application_id": "<client id>", "store_hash": "abc123",
     "operation": "current_customer"}

:class:`CurrentCustomer` checks one the way BigCommerce documents it and says why it refuses
through :class:`broker.errors.InvalidPlatformToken`'s ``reason``; :func:`admit` counts refusals
per client address against the failed-credential limit (a valid token is never refused for
them). Plain Python, no framework. The store is found by the JWT's ``store_hash`` before its
signature is checked with that store's secret, so several stores can be served later (spec 2.1)
by handing :class:`CurrentCustomer` more than one :class:`BigCommerceStore`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.types import Options

from broker.config.settings import Settings
from broker.errors import InvalidInput, InvalidPlatformToken
from broker.rules import inputs, issuers
from broker.store.limits import Limits

ALGORITHM = "HS256"
ISSUER = "bc/apps"
OPERATION = "current_customer"
MAX_LIFETIME = 3600  # seconds between iat and exp, and between now and exp (spec 3.8)
MAX_TOKEN = 8192  # characters; BigCommerce's tokens are well under 1 KB
MAX_EMAIL = 254
NOT_A_JWT = "The store's customer token is not a JWT."
SHORT_SECRET = 32  # PyJWT warns on every use of a shorter HMAC key: not ours to choose


def _options(signature: bool) -> Options:
    """PyJWT checks the signature (or not) and nothing else: the claims are checked here."""
    return {
        "verify_signature": signature,
        "require": [],
        "verify_exp": False,
        "verify_iat": False,
        "verify_nbf": False,
        "verify_aud": False,
        "verify_iss": False,
        "verify_sub": False,
        "verify_jti": False,
    }


@dataclass(frozen=True, slots=True)
class BigCommerceStore:
    """One BigCommerce store: its hash, and the app-level API account its script names."""

    store_hash: str
    client_id: str
    client_secret: str

    @classmethod
    def every(cls, settings: Settings) -> list[BigCommerceStore]:
        """The BigCommerce store of each shop that has one."""
        return [
            cls(app.store_hash, app.client_id, app.client_secret.reveal())
            for shop in settings.shops
            if (app := shop.bigcommerce) is not None
        ]


@dataclass(frozen=True, slots=True)
class StoreCustomer:
    """The signed-in shopper a verified current-customer JWT names."""

    id: str  # BigCommerce's numeric customer id, as text
    email: str | None
    store_hash: str  # the store that vouched for the shopper: it selects the shop


class CurrentCustomer:
    """Verifies BigCommerce current-customer JWTs for the stores it is given."""

    def __init__(self, stores: Iterable[BigCommerceStore], leeway: int) -> None:
        self._stores = {store.store_hash: store for store in stores}
        self._leeway = leeway

    def verify(self, token: object, now: float) -> StoreCustomer:
        """The shopper a genuine, current token names; :class:`InvalidPlatformToken` otherwise."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            raise InvalidPlatformToken("malformed", NOT_A_JWT)
        if token.count(".") != 2:
            raise InvalidPlatformToken("malformed", NOT_A_JWT)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options=_options(False))
        except jwt.PyJWTError as exc:
            raise InvalidPlatformToken("malformed", NOT_A_JWT) from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidPlatformToken(
                "signature", "The store's customer token must be signed with HS256."
            )
        store = self._store_of(unverified)
        claims = self._signed_claims(token, store.client_secret)
        self._check_claims(claims, store)
        self._check_times(claims, now)
        return self._customer(claims, store.store_hash)

    def _store_of(self, claims: dict[str, Any]) -> BigCommerceStore:
        """The store the token claims to be from (its signature is checked with that store's)."""
        store_hash = claims.get("store_hash")
        if store_hash is None:
            raise InvalidPlatformToken(
                "missing_claim", "The store's customer token has no 'store_hash'."
            )
        store = self._stores.get(store_hash) if isinstance(store_hash, str) else None
        if store is None:
            raise InvalidPlatformToken("store", "The store's customer token is for another store.")
        return store

    @staticmethod
    def _signed_claims(token: str, secret: str) -> dict[str, Any]:
        with warnings.catch_warnings():
            if len(secret.encode()) < SHORT_SECRET:
                warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, secret, algorithms=[ALGORITHM], options=_options(True)
                )
            except jwt.InvalidSignatureError as exc:
                message = "The store's customer token does not verify with the app's secret."
                raise InvalidPlatformToken("signature", message) from exc
            except jwt.PyJWTError as exc:
                raise InvalidPlatformToken(
                    "malformed", "The store's customer token is not a JWT."
                ) from exc
        return claims

    @staticmethod
    def _check_claims(claims: dict[str, Any], store: BigCommerceStore) -> None:
        for name in ("iss", "aud", "sub", "operation", "exp", "customer"):
            if name not in claims:
                raise InvalidPlatformToken(
                    "missing_claim", f"The store's customer token has no '{name}'."
                )
        if claims["iss"] != ISSUER:
            raise InvalidPlatformToken(
                "issuer", f"The store's customer token was not issued by {ISSUER}."
            )
        aud = claims["aud"]
        if aud != store.client_id and aud != [store.client_id]:
            message = "The store's customer token is for another app (aud is not the client id)."
            raise InvalidPlatformToken("audience", message)
        if claims["sub"] != store.store_hash:
            raise InvalidPlatformToken(
                "store", "The store's customer token names another store (sub)."
            )
        if claims["operation"] != OPERATION:
            raise InvalidPlatformToken(
                "operation", f"The store's token is not a {OPERATION} token."
            )

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        exp, iat = claims["exp"], claims.get("iat")
        if not _is_time(exp) or (iat is not None and not _is_time(iat)):
            raise InvalidPlatformToken(
                "malformed", "The store's customer token's times are not numbers."
            )
        if exp <= now - self._leeway:
            raise InvalidPlatformToken(
                "expired", "The store's customer token has expired. Fetch a new one."
            )
        if (iat is not None and exp - iat > MAX_LIFETIME) or exp - now > (
            MAX_LIFETIME + self._leeway
        ):
            message = f"The store's customer token lives longer than {MAX_LIFETIME} s."
            raise InvalidPlatformToken("lifetime", message)

    @staticmethod
    def _customer(claims: dict[str, Any], store_hash: str) -> StoreCustomer:
        customer = claims["customer"]
        if not isinstance(customer, dict):
            raise InvalidPlatformToken(
                "malformed", "The store's customer token's 'customer' is not an object."
            )
        number = customer.get("id")
        if number is None or number == "":
            raise InvalidPlatformToken(
                "missing_claim", "The store's customer token has no 'customer.id'."
            )
        if isinstance(number, bool) or not isinstance(number, int | str):
            raise InvalidPlatformToken(
                "malformed", "The store's customer token's 'customer.id' is not an id."
            )
        try:
            customer_id = inputs.customer_id(str(number), "customer.id")
        except InvalidInput as exc:
            message = "The store's customer token's 'customer.id' is not an id the broker takes."
            raise InvalidPlatformToken("malformed", message) from exc
        email = customer.get("email")
        if email is not None and (not isinstance(email, str) or len(email) > MAX_EMAIL):
            raise InvalidPlatformToken(
                "malformed", "The store's customer token's email is not an address."
            )
        if email is not None and not email.isprintable():
            raise InvalidPlatformToken(
                "malformed", "The store's customer token's email is not an address."
            )
        return StoreCustomer(customer_id, email or None, store_hash)


async def admit(
    limits: Limits, verifier: CurrentCustomer, token: object, client: str, now: float
) -> StoreCustomer:
    """The shopper of a genuine token; a refused one is counted against the client address's
    failed-credential window (the issuer keys'), and past it answered 429 instead of 401."""
    try:
        return verifier.verify(token, now)
    except InvalidPlatformToken:
        await limits.hit(issuers.POLICY, client)  # raises 429 past the limit
        raise


def _is_time(value: object) -> bool:
    # NaN, infinities and absurd values are malformed, not a reason to crash.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11
