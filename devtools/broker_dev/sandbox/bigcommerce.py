"""A BigCommerce look-alike: the storefront's ``GET /customer/current.jwt`` (Current Customer API).

BigCommerce answers a storefront script's ``/customer/current.jwt?app_client_id=<client id>``
with a JWT, as plain text, signed HS256 with the client secret of that app-level API account,
for the shopper signed in to the store; 404 when nobody is signed in. The payload, as
BigCommerce documents it::

    {"customer": {"id": 4927, "email": "john.doe@example.com", "group_id": "6"},
     "iss": "bc/apps", "sub": "<store hash>", "iat": ..., "exp": ... (15 minutes later),
     "version": 1, "aud": "<client id>", "application_id": "<client id>",
     "store_hash": "<store hash>", "operation": "current_customer"}

The sandbox signs one in that form for its signed-in shopper (:class:`BigCommerceStore`). The
real store knows the shopper from its session cookie; the sandbox has one configured shopper, or
none (404). Its own choices *(sandbox)*: no ``app_client_id`` is 400, and one it does not know is
403 (BigCommerce documents neither), each a plain-text answer.

Configuration (``broker sandbox``; ``broker dev`` passes the same development values to the
broker): ``SANDBOX_BIGCOMMERCE_CLIENT_ID``, ``SANDBOX_BIGCOMMERCE_CLIENT_SECRET``,
``SANDBOX_BIGCOMMERCE_STORE_HASH``, ``SANDBOX_BIGCOMMERCE_CUSTOMER_ID`` (a whole number; ``none``
for a store nobody is signed in to) and ``SANDBOX_BIGCOMMERCE_CUSTOMER_EMAIL``; each defaults to
the development value below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from broker.config.refusals import DEV_BIGCOMMERCE_SECRET

DEV_CLIENT_ID = "dev-bigcommerce-client-id"
DEV_STORE_HASH = "devstore1"
DEV_CUSTOMER_ID = 4927
DEV_EMAIL = "shopper@example.com"
LIFETIME = 900  # "The token usually expires after 15 minutes."
PATH = "/customer/current.jwt"
MIN_SECRET = 32  # PyJWT warns on shorter HMAC keys; the sandbox's are made up anyway
NOBODY = ("none", "")


@dataclass(frozen=True)
class BigCommerceStore:
    """The look-alike store: its app-level API account and the shopper signed in to it."""

    client_id: str = DEV_CLIENT_ID
    client_secret: str = DEV_BIGCOMMERCE_SECRET
    store_hash: str = DEV_STORE_HASH
    customer_id: int | None = DEV_CUSTOMER_ID  # None: nobody is signed in
    email: str | None = DEV_EMAIL
    group_id: str = "0"
    lifetime: int = LIFETIME

    def claims(self, now: float) -> dict[str, Any]:
        """The payload BigCommerce documents, for the signed-in shopper."""
        issued = int(now)
        customer: dict[str, Any] = {"id": self.customer_id, "group_id": self.group_id}
        if self.email:
            customer["email"] = self.email
        return {
            "customer": customer,
            "iss": "bc/apps",
            "sub": self.store_hash,
            "iat": issued,
            "exp": issued + self.lifetime,
            "version": 1,
            "aud": self.client_id,
            "application_id": self.client_id,
            "store_hash": self.store_hash,
            "operation": "current_customer",
        }

    def current_jwt(self, now: float) -> str:
        """The signed answer of ``/customer/current.jwt`` (HS256, the client secret)."""
        return jwt.encode(self.claims(now), self.client_secret, algorithm="HS256")


def current_customer_route(
    store: BigCommerceStore, clock: Callable[[], float] = time.time
) -> Route:
    """``GET /customer/current.jwt`` of ``store``, answered as BigCommerce answers it."""

    async def current(request: Request) -> Response:
        headers = {"Cache-Control": "no-store"}
        client_id = request.query_params.get("app_client_id")
        if not client_id:
            return PlainTextResponse("app_client_id is required", 400, headers=headers)
        if client_id != store.client_id:
            return PlainTextResponse("unknown app_client_id", 403, headers=headers)
        if store.customer_id is None:
            return PlainTextResponse("Not logged in", 404, headers=headers)
        return PlainTextResponse(store.current_jwt(clock()), headers=headers)

    return Route(PATH, current, methods=["GET"])


def store_from_env(env: Mapping[str, str], problems: list[str]) -> BigCommerceStore:
    """The look-alike store of ``SANDBOX_BIGCOMMERCE_*`` (problems appended, one per line)."""

    def text(name: str, default: str) -> str:
        return env.get(f"SANDBOX_BIGCOMMERCE_{name}", "").strip() or default

    secret = text("CLIENT_SECRET", DEV_BIGCOMMERCE_SECRET)
    if len(secret) < MIN_SECRET:
        problems.append(f"SANDBOX_BIGCOMMERCE_CLIENT_SECRET: must be {MIN_SECRET}+ characters")
        secret = DEV_BIGCOMMERCE_SECRET
    raw_id = text("CUSTOMER_ID", str(DEV_CUSTOMER_ID)).lower()
    customer_id: int | None = None
    if raw_id not in NOBODY:
        if raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18:
            customer_id = int(raw_id)
        else:
            problems.append("SANDBOX_BIGCOMMERCE_CUSTOMER_ID: must be a whole number, or none")
    return BigCommerceStore(
        client_id=text("CLIENT_ID", DEV_CLIENT_ID),
        client_secret=secret,
        store_hash=text("STORE_HASH", DEV_STORE_HASH),
        customer_id=customer_id,
        email=text("CUSTOMER_EMAIL", DEV_EMAIL),
    )
