"""BigCommerce's current-customer JWT: each check of spec 3.8, and the three variables."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from broker.config.settings import ConfigError, deployment_problems, parse
from broker.errors import InvalidPlatformToken, problem_body
from broker.rules.bigcommerce import BigCommerceStore, CurrentCustomer, StoreCustomer
from broker_dev.sandbox.bigcommerce import BigCommerceStore as LookAlike
from broker_dev.sandbox.bigcommerce import store_from_env
from tests.support import broker_env

CLIENT_ID = "6sv16tfx3j5gsopm42ss5dd67g2srvq"
SECRET = "bc-client-secret-0123456789abcdef0123456789"
STORE_HASH = "abc123"
NOW = 1_700_000_000
STORE = BigCommerceStore(STORE_HASH, CLIENT_ID, SECRET)
VARIABLES = {
    "BROKER_BIGCOMMERCE_CLIENT_ID": CLIENT_ID,
    "BROKER_BIGCOMMERCE_CLIENT_SECRET": SECRET,
    "BROKER_BIGCOMMERCE_STORE_HASH": STORE_HASH,
}


def documented_claims(**changes: Any) -> dict[str, Any]:
    """The payload BigCommerce's Current Customer API documents, issued now (15 minutes)."""
    claims: dict[str, Any] = {
        "customer": {"id": 4927, "email": "john.doe@example.com", "group_id": "6"},
        "iss": "bc/apps",
        "sub": STORE_HASH,
        "iat": NOW,
        "exp": NOW + 900,
        "version": 1,
        "aud": CLIENT_ID,
        "application_id": CLIENT_ID,
        "store_hash": STORE_HASH,
        "operation": "current_customer",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def signed(claims: dict[str, Any] | None = None, secret: str = SECRET) -> str:
    return jwt.encode(documented_claims() if claims is None else claims, secret, "HS256")


def bent(**changes: Any) -> str:
    """The documented token with ``changes`` (None removes a claim), signed with the secret."""
    return signed(documented_claims(**changes))


def verify(token: object, now: float = NOW) -> StoreCustomer:
    return CurrentCustomer((STORE,), leeway=30).verify(token, now)


def reason_of(token: object, now: float = NOW) -> str:
    with pytest.raises(InvalidPlatformToken) as caught:
        verify(token, now)
    return caught.value.reason


def segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_the_documented_token_names_its_customer() -> None:
    """A token shaped as BigCommerce documents it gives the customer id as text and the email."""
    assert verify(signed()) == StoreCustomer("4927", "john.doe@example.com", STORE_HASH)


def test_a_customer_without_email_has_none() -> None:
    """No (or an empty) customer.email: a customer without ce, not a refusal."""
    for customer in ({"id": 7}, {"id": 7, "email": ""}):
        assert verify(signed(documented_claims(customer=customer))) == StoreCustomer(
            "7", None, STORE_HASH
        )


BENT: list[tuple[str, str, Any]] = [
    ("another secret", "signature", lambda: signed(secret="another-secret-0123456789abcdef0123")),
    ("expired", "expired", lambda: bent(iat=NOW - 1000, exp=NOW - 31)),
    ("another app", "audience", lambda: bent(aud="someone-else")),
    ("no audience", "missing_claim", lambda: bent(aud=None)),
    ("another issuer", "issuer", lambda: bent(iss="bc/evil")),
    ("another store", "store", lambda: bent(store_hash="zzz999")),
    ("sub of another store", "store", lambda: bent(sub="zzz999")),
    ("no store_hash", "missing_claim", lambda: bent(store_hash=None)),
    ("another operation", "operation", lambda: bent(operation="login")),
    ("no operation", "missing_claim", lambda: bent(operation=None)),
    ("no exp", "missing_claim", lambda: bent(exp=None)),
    ("no customer", "missing_claim", lambda: bent(customer=None)),
    ("customer without id", "missing_claim", lambda: bent(customer={})),
    ("customer not an object", "malformed", lambda: bent(customer=4927)),
    ("customer id a boolean", "malformed", lambda: bent(customer={"id": True})),
    ("customer id with a slash", "malformed", lambda: bent(customer={"id": "a/b"})),
    ("two hours long", "lifetime", lambda: bent(exp=NOW + 7200)),
    ("iat long before", "lifetime", lambda: bent(iat=NOW - 3600, exp=NOW + 60)),
    ("exp as text", "malformed", lambda: bent(exp="later")),
    ("email not text", "malformed", lambda: bent(customer={"id": 1, "email": 5})),
    ("not a JWT", "malformed", lambda: "not-a-jwt"),
    ("three dots of junk", "malformed", lambda: "a.b.c"),
    ("not text", "malformed", lambda: {"token": "x"}),
    ("empty", "malformed", lambda: ""),
    ("too long", "malformed", lambda: "a." + "b" * 9000 + ".c"),
    (
        "alg none",
        "signature",
        lambda: f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(documented_claims())}.",
    ),
    (
        "RS256 header over an HMAC signature",
        "signature",
        lambda: segment({"alg": "RS256", "typ": "JWT"})
        + "."
        + signed().split(".", 1)[1],
    ),
    (
        "HS512",
        "signature",
        lambda: jwt.encode(documented_claims(), SECRET * 2, "HS512"),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("case", "reason", "make"), BENT, ids=[case for case, _, _ in BENT])
def test_each_bent_token_is_refused_with_its_reason(case: str, reason: str, make: Any) -> None:
    """Every check of spec 3.8 refuses its own bent variant of the documented token, saying why."""
    assert reason_of(make()) == reason


def test_the_clock_leeway_applies_to_exp() -> None:
    """A token expired less than the leeway ago still passes; one past it does not."""
    token = signed()
    assert verify(token, NOW + 900 + 29).id == "4927"
    assert reason_of(token, NOW + 900 + 31) == "expired"


def test_a_token_ahead_of_the_clock_by_more_than_an_hour_is_refused() -> None:
    """Whatever its iat, an exp more than an hour (and the leeway) ahead is too long a life."""
    token = signed(documented_claims(iat=NOW + 7200, exp=NOW + 7200 + 900))
    assert reason_of(token) == "lifetime"


def test_refusals_render_with_their_reason() -> None:
    """A refusal is 401 invalid_platform_token with its reason, and no bearer realm of ours."""
    with pytest.raises(InvalidPlatformToken) as caught:
        verify(signed(documented_claims(iss="x")))
    body = problem_body(caught.value, "r")
    assert (body["status"], body["id"], body["reason"]) == (401, "invalid_platform_token", "issuer")
    with pytest.raises(ValueError, match="unknown invalid_platform_token reason"):
        InvalidPlatformToken("subject")


def test_the_sandbox_look_alike_signs_what_the_broker_accepts() -> None:
    """The sandbox's /customer/current.jwt payload verifies, for its signed-in shopper."""
    look_alike = LookAlike(
        client_id=CLIENT_ID, client_secret=SECRET, store_hash=STORE_HASH, customer_id=31
    )
    assert verify(look_alike.current_jwt(NOW)) == StoreCustomer(
        "31", "shopper@example.com", STORE_HASH
    )
    assert set(look_alike.claims(NOW)) == set(documented_claims())


def test_the_sandbox_store_reads_its_variables() -> None:
    """SANDBOX_BIGCOMMERCE_* set the look-alike; 'none' signs nobody in; bad values are lines."""
    problems: list[str] = []
    store = store_from_env(
        {"SANDBOX_BIGCOMMERCE_CUSTOMER_ID": "none", "SANDBOX_BIGCOMMERCE_STORE_HASH": "s1"},
        problems,
    )
    assert (store.customer_id, store.store_hash, problems) == (None, "s1", [])
    store_from_env(
        {"SANDBOX_BIGCOMMERCE_CUSTOMER_ID": "4x", "SANDBOX_BIGCOMMERCE_CLIENT_SECRET": "short"},
        problems,
    )
    assert [p.split(":")[0] for p in problems] == [
        "SANDBOX_BIGCOMMERCE_CLIENT_SECRET",
        "SANDBOX_BIGCOMMERCE_CUSTOMER_ID",
    ]


def test_the_route_is_configured_only_by_all_three_variables() -> None:
    """All three set: a store; none: no store; the values are masked where secret."""
    settings = parse(broker_env(**VARIABLES))
    assert BigCommerceStore.every(settings) == [STORE]
    assert SECRET not in repr(settings)
    assert BigCommerceStore.every(parse(broker_env())) == []


@pytest.mark.parametrize("given", [1, 2])
def test_a_partial_configuration_is_refused_in_one_line_naming_the_missing(given: int) -> None:
    """One or two of the three variables: one problem line naming the ones missing."""
    names = list(VARIABLES)
    with pytest.raises(ConfigError) as caught:
        parse(broker_env(**{name: VARIABLES[name] for name in names[:given]}))
    [problem] = caught.value.problems
    missing = ", ".join(names[given:])
    assert problem.startswith(f"{missing}: required with the other BROKER_BIGCOMMERCE_")
    assert SECRET not in problem


def test_bad_values_are_refused_without_showing_them() -> None:
    """A store hash with a slash, a short secret: each a line naming its variable."""
    with pytest.raises(ConfigError) as caught:
        parse(
            broker_env(
                **{
                    **VARIABLES,
                    "BROKER_BIGCOMMERCE_STORE_HASH": "abc/123",
                    "BROKER_BIGCOMMERCE_CLIENT_SECRET": "short-one",
                }
            )
        )
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "BROKER_BIGCOMMERCE_CLIENT_SECRET",
        "BROKER_BIGCOMMERCE_STORE_HASH",
    ]
    assert not any("short-one" in p or "abc/123" in p for p in caught.value.problems)


def test_serve_refuses_the_sandbox_stores_published_secret() -> None:
    """The look-alike store's secret (broker dev's) is refused by broker serve."""
    env = broker_env(**{**VARIABLES, "BROKER_BIGCOMMERCE_CLIENT_SECRET": LookAlike().client_secret})
    assert [p.split(":")[0] for p in deployment_problems(parse(env))] == [
        "BROKER_BIGCOMMERCE_CLIENT_SECRET"
    ]
