"""The sandbox's tokens: Bubblehouse's token check, as the sandbox performs it."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from broker_dev.sandbox.data import BubblehouseError
from broker_dev.sandbox.tokens import LEEWAY, Caller, bearer, jwt_header, verify_token
from tests.support import SECRET_A, SECRET_B, SHOP

KEYS = {"key-a": base64.b64decode(SECRET_A)}


def token(claims: dict[str, Any], *, kid: str = "key-a", secret: bytes = KEYS["key-a"]) -> str:
    """An HS256 JWT with ``claims``, signed with ``secret`` and naming ``kid``."""
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWT-shaped string with any header, for headers PyJWT would not write."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}.c2ln"


def rejection(authorization: str) -> str:
    """The message of the 401 invalid_token that ``authorization`` gets."""
    with pytest.raises(BubblehouseError) as caught:
        verify_token(authorization, KEYS, SHOP)
    assert (caught.value.status, caught.value.error_id) == (401, "invalid_token")
    return caught.value.message


# -- the Authorization header ---------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "   ", "Bearer", "Bearer   "])
def test_no_token_is_anonymous(authorization: str | None) -> None:
    """No header, an empty one or a Bearer without token: no token at all."""
    assert bearer(authorization) is None
    assert verify_token(authorization, KEYS, SHOP) == Caller("anonymous")


@pytest.mark.parametrize("authorization", ["Bearer abc", "bearer abc", "  BEARER   abc  "])
def test_the_bearer_scheme_is_read_in_any_case(authorization: str) -> None:
    """The token follows Bearer, any case, surrounding spaces ignored."""
    assert bearer(authorization) == "abc"


def test_another_scheme_is_refused() -> None:
    """Basic or any other scheme is invalid_token saying what is expected."""
    assert rejection("Basic dXNlcjpwYXNz") == "The Authorization header must be 'Bearer <token>'."


# -- the JWT header -------------------------------------------------------------------------


def test_the_header_is_read_without_the_signature() -> None:
    """jwt_header returns the header of an HS256 token naming a known kid, signature unchecked."""
    header = jwt_header(token({"sub": SHOP}, secret=b"w" * 32), KEYS)
    assert header == {"alg": "HS256", "kid": "key-a", "typ": "JWT"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not-a-jwt", "The token is not a well-formed JWT."),
        (unsigned({"alg": "HS512", "kid": "key-a"}, {}), "The token must be signed with HS256."),
        (unsigned({"alg": "none", "kid": "key-a"}, {}), "The token must be signed with HS256."),
        (unsigned({"alg": "HS256"}, {}), "The token's kid names no shared secret of this shop."),
        (
            unsigned({"alg": "HS256", "kid": "key-z"}, {}),
            "The token's kid names no shared secret of this shop.",
        ),
    ],
)
def test_a_bad_header_is_refused(raw: str, message: str) -> None:
    """Malformed tokens, other algorithms and unknown kids are invalid_token."""
    with pytest.raises(BubblehouseError) as caught:
        jwt_header(raw, KEYS)
    assert (caught.value.status, caught.value.message) == (401, message)


# -- the claims -----------------------------------------------------------------------------


def test_a_shop_token_names_the_shop_alone() -> None:
    """sub <shop>: a shop caller, with the verified header and claims kept for the log."""
    claims = {"aud": "BH", "sub": SHOP, "iat": int(time.time())}
    caller = verify_token(f"Bearer {token(claims)}", KEYS, SHOP)
    assert caller == Caller(
        "shop", header={"alg": "HS256", "kid": "key-a", "typ": "JWT"}, claims=claims
    )


def test_a_customer_token_names_the_customer_and_email() -> None:
    """sub <shop>/<id>: a customer caller with ce as email; not admin by default."""
    caller = verify_token(
        f"Bearer {token({'aud': 'BH', 'sub': f'{SHOP}/alice', 'ce': 'a@example.com'})}", KEYS, SHOP
    )
    assert (caller.kind, caller.customer_id, caller.email, caller.admin) == (
        "customer",
        "alice",
        "a@example.com",
        False,
    )


@pytest.mark.parametrize(("level", "admin"), [("admin", True), ("user", False)])
def test_l_admin_makes_a_customer_admin(level: str, admin: bool) -> None:
    """l == "admin" marks a customer-admin token; any other level does not."""
    raw = token({"aud": "BH", "sub": f"{SHOP}/alice", "l": level})
    assert verify_token(f"Bearer {raw}", KEYS, SHOP).admin is admin


def test_an_empty_ce_is_no_email() -> None:
    """ce "" means the token carries no email."""
    raw = token({"aud": "BH", "sub": f"{SHOP}/alice", "ce": ""})
    assert verify_token(f"Bearer {raw}", KEYS, SHOP).email is None


def test_a_token_of_another_configured_key_is_accepted() -> None:
    """Any configured kid verifies with its own secret."""
    keys = {**KEYS, "key-b": base64.b64decode(SECRET_B)}
    raw = token({"aud": "BH", "sub": SHOP}, kid="key-b", secret=keys["key-b"])
    assert verify_token(f"Bearer {raw}", keys, SHOP).kind == "shop"


def test_times_within_the_leeway_are_accepted() -> None:
    """exp just past and iat just ahead, both within LEEWAY seconds, still pass."""
    now = int(time.time())
    raw = token({"aud": "BH", "sub": SHOP, "exp": now - LEEWAY // 2, "iat": now + LEEWAY // 2})
    assert verify_token(f"Bearer {raw}", KEYS, SHOP).kind == "shop"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": -60}, "The token has expired"),
        ({"iat": 60}, "The token is not valid yet (iat is in the future)."),
        ({"aud": "bh"}, "The token's aud must be BH."),
        ({"aud": ["BH", "other"]}, "The token's aud must be BH."),
        ({"aud": None}, "The token lacks the aud claim."),
        ({"sub": None}, "The token lacks the sub claim."),
        ({"iat": "yesterday"}, "The token is not valid."),
        ({"sub": "other-shop"}, "The token's sub does not name this shop or one of its customers."),
        ({"sub": f"{SHOP}/"}, "The token's sub does not name this shop or one of its customers."),
        (
            {"sub": f"other-shop/{SHOP}"},
            "The token's sub does not name this shop or one of its customers.",
        ),
        ({"ce": 7}, "The token's ce claim must be an email address."),
    ],
)
def test_bad_claims_are_refused_with_their_reason(claims: dict[str, Any], message: str) -> None:
    """Each failed claim check is invalid_token with a message naming the claim."""
    now = int(time.time())
    full: dict[str, Any] = {"aud": "BH", "sub": f"{SHOP}/alice"}
    for name, value in claims.items():
        if value is None:
            del full[name]
        elif name in ("exp", "iat") and isinstance(value, int):
            full[name] = now + value
        else:
            full[name] = value
    assert rejection(f"Bearer {token(full)}") == message


def test_a_wrong_signature_is_refused() -> None:
    """A token signed with another secret under a known kid is refused."""
    raw = token({"aud": "BH", "sub": SHOP}, secret=b"x" * 32)
    assert rejection(f"Bearer {raw}") == "The token's signature does not verify."
