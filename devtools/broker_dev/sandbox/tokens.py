"""Bubblehouse's token check, as the sandbox performs it (bubblehouse-api.md section 2).

``Authorization: Bearer <jwt>``; none or empty is anonymous. HS256 only; ``kid`` names a shared
secret; ``aud`` exactly ``"BH"``; ``sub`` is ``<shop>`` (shop token) or ``<shop>/<customer id>``
(customer token); ``exp`` enforced when present; ``iat`` in the future refused; ``LEEWAY`` seconds
of clock skew on both. ``ce`` is the customer's email; ``l == "admin"`` makes a customer token a
customer-admin token. Every failure is a 401 ``invalid_token`` :class:`BubblehouseError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from broker_dev.sandbox.data import BubblehouseError

LEEWAY = 10


@dataclass(frozen=True)
class Caller:
    """Who is calling, as Bubblehouse sees it after checking the token."""

    kind: Literal["anonymous", "shop", "customer"]
    customer_id: str | None = None
    email: str | None = None
    admin: bool = False
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None


def invalid_token(message: str) -> BubblehouseError:
    return BubblehouseError(401, "invalid_token", message)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header; ``None`` when there is none (anonymous)."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise invalid_token("The Authorization header must be 'Bearer <token>'.")
    return token.strip() or None


def jwt_header(token: str, keys: Mapping[str, bytes]) -> dict[str, Any]:
    """The JWT header, with ``alg`` and ``kid`` checked; the signature is not looked at."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise invalid_token("The token is not a well-formed JWT.") from None
    if header.get("alg") != "HS256":
        raise invalid_token("The token must be signed with HS256.")
    if header.get("kid") not in keys:
        raise invalid_token("The token's kid names no shared secret of this shop.")
    return header


def verify_token(authorization: str | None, keys: Mapping[str, bytes], shop: str) -> Caller:
    """Check a token as Bubblehouse does; :class:`BubblehouseError` 401 if it fails."""
    token = bearer(authorization)
    if token is None:
        return Caller("anonymous")
    header = jwt_header(token, keys)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            keys[header["kid"]],
            algorithms=["HS256"],
            audience="BH",
            leeway=LEEWAY,
            options={"require": ["aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise invalid_token("The token has expired") from None
    except jwt.ImmatureSignatureError:
        raise invalid_token("The token is not valid yet (iat is in the future).") from None
    except jwt.InvalidAudienceError:
        raise invalid_token("The token's aud must be BH.") from None
    except jwt.InvalidSignatureError:
        raise invalid_token("The token's signature does not verify.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise invalid_token(f"The token lacks the {exc.claim} claim.") from None
    except jwt.InvalidTokenError:
        raise invalid_token("The token is not valid.") from None
    if claims["aud"] != "BH":  # PyJWT also accepts a list that contains "BH"
        raise invalid_token("The token's aud must be BH.")
    sub = claims["sub"]
    named, slash, customer_id = sub.partition("/") if isinstance(sub, str) else ("", "", "")
    if named != shop or (slash and not customer_id):
        raise invalid_token("The token's sub does not name this shop or one of its customers.")
    email = claims.get("ce")
    if email is not None and not isinstance(email, str):
        raise invalid_token("The token's ce claim must be an email address.")
    if not slash:
        return Caller("shop", header=header, claims=claims)
    return Caller(
        "customer", customer_id, email or None, claims.get("l") == "admin", header, claims
    )
