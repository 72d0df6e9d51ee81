"""The sandbox's config: the environment, the day-one rules and the rate counter."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from broker.config.settings import ConfigError
from broker_dev.sandbox.config import (
    MAX_MESSAGE,
    MAX_RATE,
    RateCounter,
    Refusal,
    Rules,
    SandboxConfig,
    sandbox_config_from_env,
)
from tests.support import SECRET_A, SECRET_B, SHOP, broker_env

SHARED = {"BROKER_SHOP": SHOP, "BROKER_SIGNING_KEYS": f"key-a:{SECRET_A}"}


def problems(**env: str) -> list[str]:
    """The problems sandbox_config_from_env reports for SHARED plus ``env``."""
    with pytest.raises(ConfigError) as caught:
        sandbox_config_from_env({**SHARED, **env})
    return caught.value.problems


# -- the environment ------------------------------------------------------------------------


def test_defaults_from_the_shared_variables_alone() -> None:
    """With only the shop and keys: one version, no delay, not fast, seeded, default rules."""
    config = sandbox_config_from_env(SHARED)
    assert config == SandboxConfig(
        shop=SHOP, keys={"key-a": base64.b64decode(SECRET_A)}, versions=("v2023061",)
    )
    assert (config.delay, config.fast, config.seed, config.rules) == (0.0, False, True, Rules())


def test_every_signing_key_is_kept_by_kid_as_raw_bytes() -> None:
    """BROKER_SIGNING_KEYS becomes kid -> secret bytes, exactly as the broker decodes them."""
    config = sandbox_config_from_env(broker_env())
    assert config.keys == {
        "key-a": base64.b64decode(SECRET_A),
        "key-b": base64.b64decode(SECRET_B),
    }


def test_broker_problems_are_reported_with_sandbox_ones() -> None:
    """A missing shop and a bad SANDBOX_* value are both reported in one ConfigError."""
    with pytest.raises(ConfigError) as caught:
        sandbox_config_from_env({"BROKER_SIGNING_KEYS": f"key-a:{SECRET_A}", "SANDBOX_DELAY": "x"})
    text = "\n".join(caught.value.problems)
    assert "BROKER_SHOP" in text and "SANDBOX_DELAY" in text


@pytest.mark.parametrize(("raw", "seconds"), [("0", 0.0), ("60", 60.0), (" 0.5 ", 0.5), ("", 0.0)])
def test_delay_accepts_seconds_from_0_to_60(raw: str, seconds: float) -> None:
    """SANDBOX_DELAY is seconds between 0 and 60, blank meaning none."""
    assert sandbox_config_from_env({**SHARED, "SANDBOX_DELAY": raw}).delay == seconds


@pytest.mark.parametrize("raw", ["-1", "60.5", "soon", "nan", "inf"])
def test_delay_outside_0_to_60_is_refused(raw: str) -> None:
    """A SANDBOX_DELAY that is not seconds in 0-60 is one problem naming the variable."""
    assert problems(SANDBOX_DELAY=raw) == ["SANDBOX_DELAY: must be seconds between 0 and 60"]


@pytest.mark.parametrize("raw", ["1", "true", "YES", " on "])
def test_flags_accept_the_true_words(raw: str) -> None:
    """SANDBOX_FAST and SANDBOX_CHECK_EMAIL take 1/true/yes/on in any case."""
    env = {**SHARED, "SANDBOX_FAST": raw, "SANDBOX_CHECK_EMAIL": raw}
    config = sandbox_config_from_env(env)
    assert config.fast is True and config.rules.check_email is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "OFF"])
def test_flags_accept_the_false_words(raw: str) -> None:
    """SANDBOX_SEED=0/false/no/off starts without demo referrals."""
    assert sandbox_config_from_env({**SHARED, "SANDBOX_SEED": raw}).seed is False


def test_blank_flags_keep_their_defaults() -> None:
    """An empty flag variable means its default: seed on, fast off."""
    config = sandbox_config_from_env({**SHARED, "SANDBOX_SEED": " ", "SANDBOX_FAST": ""})
    assert (config.seed, config.fast) == (True, False)


def test_a_flag_that_is_no_boolean_is_refused() -> None:
    """Any other flag value is one problem naming the variable and the accepted words."""
    assert problems(SANDBOX_SEED="perhaps") == [
        "SANDBOX_SEED: must be true or false (1/0, yes/no, on/off)"
    ]


@pytest.mark.parametrize(
    ("raw", "mode"), [("synced", "synced"), (" SYNCED ", "synced"), ("", "any")]
)
def test_customers_mode_from_the_environment(raw: str, mode: str) -> None:
    """SANDBOX_CUSTOMERS is any or synced, case-insensitive, blank meaning any."""
    assert sandbox_config_from_env({**SHARED, "SANDBOX_CUSTOMERS": raw}).rules.customers == mode


def test_unknown_customers_mode_is_refused() -> None:
    """SANDBOX_CUSTOMERS other than any/synced is one problem naming it."""
    assert problems(SANDBOX_CUSTOMERS="all") == ["SANDBOX_CUSTOMERS: must be 'any' or 'synced'"]


def test_rate_limits_from_the_environment() -> None:
    """SANDBOX_RATE_LIMIT_READ/_WRITE are whole calls per second, up to MAX_RATE."""
    env = {"SANDBOX_RATE_LIMIT_READ": f"{MAX_RATE}", "SANDBOX_RATE_LIMIT_WRITE": " 0 "}
    rules = sandbox_config_from_env({**SHARED, **env}).rules
    assert (rules.rate_limit_read, rules.rate_limit_write) == (MAX_RATE, 0)


@pytest.mark.parametrize("raw", ["-1", "1.5", "fast", f"{MAX_RATE + 1}", "²", "١٢"])
def test_a_rate_limit_that_is_no_small_whole_number_is_refused(raw: str) -> None:
    """Anything but ASCII digits up to MAX_RATE (even '²', which isdigit() passes) is a problem."""
    assert problems(SANDBOX_RATE_LIMIT_WRITE=raw) == [
        f"SANDBOX_RATE_LIMIT_WRITE: must be calls per second per customer, 0-{MAX_RATE}"
    ]


def test_every_bad_variable_is_its_own_problem() -> None:
    """Several bad SANDBOX_* variables are all reported at once, one line each."""
    found = problems(
        SANDBOX_DELAY="x",
        SANDBOX_FAST="x",
        SANDBOX_SEED="x",
        SANDBOX_CHECK_EMAIL="x",
        SANDBOX_CUSTOMERS="x",
        SANDBOX_RATE_LIMIT_READ="x",
        SANDBOX_RATE_LIMIT_WRITE="x",
    )
    assert sorted(line.split(":")[0] for line in found) == [
        "SANDBOX_CHECK_EMAIL",
        "SANDBOX_CUSTOMERS",
        "SANDBOX_DELAY",
        "SANDBOX_FAST",
        "SANDBOX_RATE_LIMIT_READ",
        "SANDBOX_RATE_LIMIT_WRITE",
        "SANDBOX_SEED",
    ]


# -- the day-one rules ----------------------------------------------------------------------


def test_rules_default_to_a_friendly_sandbox() -> None:
    """By default: any customer, no email check, no limits, no refusal."""
    assert Rules().to_json() == {
        "customers": "any",
        "check_email": False,
        "rate_limit_read": 0,
        "rate_limit_write": 0,
        "refer_refusal": None,
    }


def test_updated_changes_only_the_named_members() -> None:
    """updated() returns new rules with the given members changed and the others kept."""
    start = Rules(rate_limit_read=3)
    changed = start.updated({"customers": "synced", "check_email": True, "rate_limit_write": 2})
    assert changed == Rules("synced", True, 3, 2)
    assert start == Rules(rate_limit_read=3)
    assert changed.updated({}) == changed


def test_refer_refusal_is_set_with_defaults_and_cleared_with_null() -> None:
    """refer_refusal takes a message, defaulting status 403 and id referral_not_allowed."""
    rules = Rules().updated({"refer_refusal": {"message": "Members only."}})
    assert rules.refer_refusal == Refusal(403, "referral_not_allowed", "Members only.")
    assert rules.to_json()["refer_refusal"] == {
        "status": 403,
        "id": "referral_not_allowed",
        "message": "Members only.",
    }
    full = {"status": 409, "id": "too_many", "message": "x" * MAX_MESSAGE}
    assert Rules().updated({"refer_refusal": full}).refer_refusal == Refusal(
        409, "too_many", "x" * MAX_MESSAGE
    )
    assert rules.updated({"refer_refusal": None}).refer_refusal is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "the body must be a JSON object"),
        ({"customer": "any", "speed": 1}, "unknown settings: customer, speed"),
        ({"customers": "all"}, "customers must be 'any' or 'synced'"),
        ({"customers": ["any"]}, "customers must be 'any' or 'synced'"),
        ({"check_email": "yes"}, "check_email must be true or false"),
        ({"rate_limit_read": True}, "rate_limit_read must be a whole number of calls per second"),
        ({"rate_limit_write": 1.5}, "rate_limit_write must be a whole number of calls per second"),
        ({"rate_limit_read": -1}, f"rate_limit_read must be between 0 and {MAX_RATE}"),
        ({"rate_limit_write": MAX_RATE + 1}, f"rate_limit_write must be between 0 and {MAX_RATE}"),
        (
            {"refer_refusal": "no"},
            "refer_refusal must be null or an object with status, id and message",
        ),
        (
            {"refer_refusal": {"message": "m", "reason": "r"}},
            "refer_refusal must be null or an object with status, id and message",
        ),
        (
            {"refer_refusal": {"status": 500, "message": "m"}},
            "refer_refusal.status must be a 4xx status",
        ),
        (
            {"refer_refusal": {"status": 399, "message": "m"}},
            "refer_refusal.status must be a 4xx status",
        ),
        (
            {"refer_refusal": {"status": True, "message": "m"}},
            "refer_refusal.status must be a 4xx status",
        ),
        (
            {"refer_refusal": {"status": "403", "message": "m"}},
            "refer_refusal.status must be a 4xx status",
        ),
        (
            {"refer_refusal": {"status": 401, "message": "m"}},
            "refer_refusal.status 401 and 429 mean other things; use a fault",
        ),
        (
            {"refer_refusal": {"status": 429, "message": "m"}},
            "refer_refusal.status 401 and 429 mean other things; use a fault",
        ),
        (
            {"refer_refusal": {"id": "Not-Slug", "message": "m"}},
            "refer_refusal.id must be a lower-case slug",
        ),
        (
            {"refer_refusal": {"id": 7, "message": "m"}},
            "refer_refusal.id must be a lower-case slug",
        ),
        (
            {"refer_refusal": {}},
            f"refer_refusal.message must be text of 1-{MAX_MESSAGE} characters",
        ),
        (
            {"refer_refusal": {"message": ""}},
            f"refer_refusal.message must be text of 1-{MAX_MESSAGE} characters",
        ),
        (
            {"refer_refusal": {"message": "x" * (MAX_MESSAGE + 1)}},
            f"refer_refusal.message must be text of 1-{MAX_MESSAGE} characters",
        ),
    ],
)
def test_bad_settings_are_refused_with_their_reason(data: Any, message: str) -> None:
    """Each malformed settings change raises ValueError with the message the control API shows."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Rules().updated(data)


# -- the rate counter -----------------------------------------------------------------------


def test_a_limit_of_zero_counts_nothing() -> None:
    """With limit 0 a call is never over, however many come."""
    counter = RateCounter()
    assert not any(counter.over("read", "alice", 0, 100.0) for _ in range(50))


def test_the_call_past_the_limit_in_one_second_is_over() -> None:
    """limit calls per whole second pass; the next one in that second is over."""
    counter = RateCounter()
    assert [counter.over("read", "alice", 2, 100.1 + i / 10) for i in range(3)] == [
        False,
        False,
        True,
    ]
    assert counter.over("read", "alice", 2, 101.0) is False


def test_reads_writes_and_customers_are_counted_apart() -> None:
    """Each (kind, customer) pair has its own count."""
    counter = RateCounter()
    assert counter.over("read", "alice", 1, 5.0) is False
    assert counter.over("write", "alice", 1, 5.0) is False
    assert counter.over("read", "bob", 1, 5.0) is False
    assert counter.over("read", "alice", 1, 5.0) is True


def test_clear_forgets_the_counts() -> None:
    """After clear(), the same second starts counting afresh."""
    counter = RateCounter()
    counter.over("read", "alice", 1, 5.0)
    counter.clear()
    assert counter.over("read", "alice", 1, 5.0) is False


def test_old_seconds_are_forgotten_when_the_counter_grows_large() -> None:
    """Past 10,000 keys, counts of earlier seconds are dropped; the current second's are kept."""
    counter = RateCounter()
    for second in range(10_001):
        counter.over("read", "alice", 5, float(second))
    counter.over("read", "bob", 1, 10_000.5)  # prunes, then counts bob in second 10,000
    assert counter.over("read", "bob", 1, 10_000.7) is True  # bob's count survived the prune
    assert counter.over("read", "alice", 1, 10_000.9) is True  # so did alice's of that second
    assert len(counter._counts) == 2  # the memory bound is the behaviour pinned here
