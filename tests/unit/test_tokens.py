"""Token minting and the strict verifier: the attack battery of spec section 2."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from broker.errors import InvalidToken
from broker.rules.tokens import UPSTREAM_TTL, Customer, TokenMinter, TokenVerifier
from tests.support import SECRET_A, SECRET_B, SHOP, make_settings

KEY_A = base64.b64decode(SECRET_A)
KEY_B = base64.b64decode(SECRET_B)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"aud": "BH", "sub": f"{SHOP}/alice", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any], key: bytes = KEY_A, kid: Any = "key-a", alg: str = "HS256"
) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], key: bytes | None = None) -> str:
    """A token assembled by hand, for shapes PyJWT refuses to produce."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    signature = b"" if key is None else hmac.new(key, head.encode(), hashlib.sha256).digest()
    return head + "." + b64(signature)


def reason_of(token: str, verifier: TokenVerifier | None = None) -> str:
    verifier = verifier or TokenVerifier(make_settings())
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_minted_token_has_bubblehouse_format() -> None:
    """A minted customer token carries the header and claims Bubblehouse expects."""
    settings = make_settings()
    minted = TokenMinter(settings).customer_token("alice", "alice@example.com", 300)
    header = jwt.get_unverified_header(minted.token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": "key-a"}
    payload = jwt.decode(minted.token, KEY_A, algorithms=["HS256"], audience="BH")
    assert payload["sub"] == f"{SHOP}/alice"
    assert payload["ce"] == "alice@example.com"
    assert payload["exp"] - payload["iat"] == 300 == minted.expires_in
    assert len(payload["jti"]) == 32


def test_minted_token_without_email_has_no_ce_and_clamps_ttl() -> None:
    """No email means no ce claim, and a ttl above the maximum is clamped to it."""
    settings = make_settings(BROKER_TOKEN_MAX_TTL="1000")
    minted = TokenMinter(settings).customer_token("bob", None, 99999)
    payload = jwt.decode(minted.token, KEY_A, algorithms=["HS256"], audience="BH")
    assert "ce" not in payload
    assert minted.expires_in == 1000


class Clock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def upstream_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")

    def pad(part: str) -> str:
        return part + "=" * (-len(part) % 4)

    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
    )


def customer(customer_id: str = "alice", email: str | None = "a@example.com") -> Customer:
    return Customer(SHOP, customer_id, email, int(time.time()) + 600)


def test_upstream_token_is_exactly_what_the_official_plugins_send() -> None:
    """Header typ, alg, kid; claims aud, sub, iat, exp, ce (when known); no jti; one minute."""
    minter = TokenMinter(make_settings())
    token = minter.upstream_token(customer())
    header, payload = upstream_parts(token)
    assert header == {"typ": "JWT", "alg": "HS256", "kid": "key-a"}
    assert set(payload) == {"aud", "sub", "iat", "exp", "ce"}
    assert payload["sub"] == f"{SHOP}/alice" and payload["ce"] == "a@example.com"
    assert payload["exp"] - payload["iat"] == UPSTREAM_TTL
    jwt.decode(token, KEY_A, algorithms=["HS256"], audience="BH")
    _, anonymous = upstream_parts(minter.upstream_token(customer("bob", None)))
    assert set(anonymous) == {"aud", "sub", "iat", "exp"}


def test_upstream_token_is_reused_while_more_than_half_its_life_is_left() -> None:
    """The same customer and email get the same token for 30 s, then a newly signed one."""
    clock = Clock()
    minter = TokenMinter(make_settings(), clock=clock)
    first = minter.upstream_token(customer())
    clock.now += 29
    assert minter.upstream_token(customer()) == first
    assert minter.upstream_token(customer(email="other@example.com")) != first
    assert minter.upstream_token(customer("bob")) != first
    clock.now += 1.5
    renewed = minter.upstream_token(customer())
    assert renewed != first
    assert upstream_parts(renewed)[1]["iat"] == int(clock.now)


def test_upstream_tokens_kept_are_bounded() -> None:
    """Past the bound the oldest customers' tokens are forgotten (and signed again)."""
    clock = Clock()
    minter = TokenMinter(make_settings(), clock=clock)
    first = minter.upstream_token(customer("c0"))
    for i in range(1, 10_001):
        minter.upstream_token(customer(f"c{i}"))
    clock.now += 1
    assert minter.upstream_token(customer("c0")) != first
    assert upstream_parts(minter.upstream_token(customer("c0")))[1]["iat"] == int(clock.now)


def test_browser_tokens_keep_their_jti() -> None:
    """Tokens minted for browsers carry a unique jti each."""
    minter = TokenMinter(make_settings())
    one, two = (upstream_parts(minter.customer_token("alice").token)[1] for _ in range(2))
    assert len(one["jti"]) == 32 and one["jti"] != two["jti"]


def test_shop_token_has_no_customer() -> None:
    """The shop token used by broker check has sub = shop only."""
    token = TokenMinter(make_settings()).shop_token()
    assert jwt.decode(token, KEY_A, algorithms=["HS256"], audience="BH")["sub"] == SHOP


def test_valid_token_verifies_with_any_configured_key() -> None:
    """Tokens signed by the second (rotating) key verify too."""
    verifier = TokenVerifier(make_settings())
    assert verifier.verify(sign(claims())).id == "alice"
    assert verifier.verify(sign(claims(ce="A@x.io"), KEY_B, "key-b")).email == "A@x.io"


ATTACKS: list[tuple[str, Any, str]] = [
    ("alg none", lambda: forge({"alg": "none", "kid": "key-a"}, claims()), "signature"),
    ("alg HS384", lambda: sign(claims(), KEY_A + KEY_A, alg="HS384"), "signature"),
    ("alg HS512", lambda: sign(claims(), KEY_A + KEY_A, alg="HS512"), "signature"),
    ("wrong secret", lambda: sign(claims(), b"x" * 40), "signature"),
    ("empty secret", lambda: forge({"alg": "HS256", "kid": "key-a"}, claims(), b""), "signature"),
    ("kid of the other key", lambda: sign(claims(), KEY_B, "key-a"), "signature"),
    ("unknown kid", lambda: sign(claims(), KEY_A, "key-z"), "unknown_key"),
    ("no kid", lambda: forge({"alg": "HS256"}, claims(), KEY_A), "unknown_key"),
    ("kid path traversal", lambda: sign(claims(), KEY_A, "../../etc/passwd"), "unknown_key"),
    ("kid sql", lambda: sign(claims(), KEY_A, "' OR 1=1 --"), "unknown_key"),
    (
        "kid as list",
        lambda: forge({"alg": "HS256", "kid": ["key-a"]}, claims(), KEY_A),
        "malformed",
    ),
    ("kid as number", lambda: forge({"alg": "HS256", "kid": 1}, claims(), KEY_A), "malformed"),
    ("shop token", lambda: sign(claims(sub=SHOP)), "subject"),
    ("empty customer", lambda: sign(claims(sub=f"{SHOP}/")), "subject"),
    ("other shop", lambda: sign(claims(sub="other-shop/alice")), "subject"),
    ("nested customer", lambda: sign(claims(sub=f"{SHOP}/alice/bob")), "subject"),
    ("sub not a string", lambda: sign(claims(sub=42)), "subject"),
    ("missing aud", lambda: sign(claims(aud=None)), "missing_claim"),
    ("missing sub", lambda: sign(claims(sub=None)), "missing_claim"),
    ("missing exp", lambda: sign(claims(exp=None)), "missing_claim"),
    ("wrong aud", lambda: sign(claims(aud="XX")), "audience"),
    ("aud list with another", lambda: sign(claims(aud=["BH", "XX"])), "audience"),
    (
        "expired beyond leeway",
        lambda: sign(claims(iat=int(time.time()) - 700, exp=int(time.time()) - 31)),
        "expired",
    ),
    (
        "iat in the future",
        lambda: sign(claims(iat=int(time.time()) + 120, exp=int(time.time()) + 600)),
        "not_yet_valid",
    ),
    ("nbf in the future", lambda: sign(claims(nbf=int(time.time()) + 120)), "not_yet_valid"),
    (
        "lifetime too long",
        lambda: sign(claims(exp=int(time.time()) + 3000, iat=int(time.time()) - 1000)),
        "lifetime",
    ),
    (
        "exp too far ahead",
        lambda: sign(claims(exp=int(time.time()) + 7200, iat=int(time.time()) + 5000)),
        "lifetime",
    ),
    (
        "exp far ahead, no iat",
        lambda: sign(claims(iat=None, exp=int(time.time()) + 90000)),
        "lifetime",
    ),
    ("exp as string", lambda: sign(claims(exp="tomorrow")), "malformed"),
    (
        "exp infinite",
        lambda: forge({"alg": "HS256", "kid": "key-a"}, {**claims(), "exp": 1e400}, KEY_A),
        "malformed",
    ),
    ("exp boolean", lambda: sign(claims(exp=True)), "malformed"),
    ("ce not a string", lambda: sign(claims(ce=["x@y.z"])), "malformed"),
    ("garbage", lambda: "not-a-jwt", "malformed"),
    ("two parts", lambda: "abc.def", "malformed"),
    ("bad base64 header", lambda: "!!!.eyJ9.sig", "malformed"),
    ("header not json", lambda: b64(b"nope") + "." + b64(b"{}") + "." + b64(b"x"), "malformed"),
    ("payload not json", lambda: forge_raw_payload(b"not json"), "malformed"),
    ("empty", lambda: "", "malformed"),
    ("huge", lambda: "a" * 9000 + ".b.c", "malformed"),
]


def forge_raw_payload(payload: bytes) -> str:
    head = b64(json.dumps({"alg": "HS256", "kid": "key-a"}).encode()) + "." + b64(payload)
    return head + "." + b64(hmac.new(KEY_A, head.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize(("name", "make", "reason"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_hostile_tokens_are_refused_with_their_reason(name: str, make: Any, reason: str) -> None:
    """Every hostile or broken token is refused, and the reason names what is wrong."""
    assert reason_of(make()) == reason


def test_rsa_signed_token_is_refused() -> None:
    """Public-key algorithms (key-confusion attempts) are refused before any key is used."""
    for alg in ("RS256", "ES256", "PS256", "EdDSA"):
        token = forge({"alg": alg, "kid": "key-a", "typ": "JWT"}, claims()) + b64(b"s" * 256)
        assert reason_of(token) == "signature"


def test_expiry_within_leeway_is_accepted() -> None:
    """A token expired less than the clock leeway ago still verifies."""
    now = int(time.time())
    assert TokenVerifier(make_settings()).verify(sign(claims(iat=now - 600, exp=now - 10)))


def test_cached_verification_still_checks_expiry() -> None:
    """A token verified once is refused again once it has expired."""
    verifier = TokenVerifier(make_settings(BROKER_CLOCK_LEEWAY="0"))
    token = sign(claims(exp=int(time.time()) + 5))
    assert verifier.verify(token).id == "alice"
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token, now=time.time() + 10)
    assert caught.value.reason == "expired"


def test_removed_key_no_longer_verifies() -> None:
    """After key-b is removed from the configuration, its tokens are refused."""
    settings = make_settings(BROKER_SIGNING_KEYS=f"key-a:{SECRET_A}")
    assert reason_of(sign(claims(), KEY_B, "key-b"), TokenVerifier(settings)) == "unknown_key"
