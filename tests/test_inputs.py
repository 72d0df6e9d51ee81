"""Input rules: full matches, no control characters in any accepted value, real email addresses."""

from __future__ import annotations

from typing import Any

import pytest

from broker import inputs
from broker.errors import CustomerIdentityDoesNotMatchToken, InvalidInput
from broker.tokens import Customer
from tests.stack import Broker, Sandbox

ALICE = Customer("test-shop", "alice", "alice@example.com", 2**40)
CONTROLS = ["\n", "\r", "\t", "\x00", "\x7f", "\x85", "\u2028"]


def refused_field(call: Any, *args: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    return caught.value.field


@pytest.mark.parametrize(
    "address",
    [
        "friend@example.com",
        "josé@exämple.com",
        "用户@例子.广告",
        "Friend.Name+tag@sub.example.co.uk",
        "x" * 64 + "@example.com",
    ],
)
def test_valid_addresses_pass_and_go_upstream_unchanged(address: str) -> None:
    """Internationalised and ordinary addresses are accepted and forwarded exactly as given."""
    sent = inputs.refer_input({"channel": "email", "destination": address}, ALICE)
    assert sent == {"channel": "email", "destination": address}


@pytest.mark.parametrize(
    "address",
    [
        "friend@example.com\n",
        "friend@example.com ",
        "friend",
        "friend@",
        "@example.com",
        "a..b@example.com",
        "friend@localhost",
        "friend@@example.com",
        "x" * 65 + "@example.com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60 + ".com",
    ],
)
def test_broken_addresses_are_refused_naming_destination(address: str) -> None:
    """Plainly broken addresses, trailing newlines and addresses over 254 characters fail."""
    body = {"channel": "email", "destination": address}
    assert refused_field(inputs.refer_input, body, ALICE) == "destination"


@pytest.mark.parametrize("control", CONTROLS)
def test_channel_refuses_control_characters(control: str) -> None:
    """A channel is a full-match slug: a trailing newline (or any control) is refused."""
    body = {"channel": f"whatsapp{control}"}
    assert refused_field(inputs.refer_input, body, ALICE) == "channel"


@pytest.mark.parametrize("control", CONTROLS)
def test_sender_refuses_control_characters(control: str) -> None:
    """sender is dropped, but a value with control characters is still refused."""
    body = {"channel": "whatsapp", "sender": f"alice@example.com{control}"}
    assert refused_field(inputs.refer_input, body, ALICE) == "sender"


@pytest.mark.parametrize("name", ["shopid", "email", "bhid"])
@pytest.mark.parametrize("control", ["\n", "\x00", "\u2029"])
def test_identity_fields_refuse_control_characters(name: str, control: str) -> None:
    """Every customer identity field refuses control characters, before any matching."""
    value = ALICE.email if name == "email" else "alice"
    body = {"customer": {name: f"{value}{control}"}}
    assert refused_field(inputs.referrals_input, body, ALICE) == f"customer.{name}"


def test_identity_without_controls_still_matches() -> None:
    """The control check does not get in the way of a matching identity."""
    assert inputs.referrals_input({"customer": {"shopid": "alice"}}, ALICE) == {}
    with pytest.raises(CustomerIdentityDoesNotMatchToken):
        inputs.referrals_input({"customer": {"shopid": "bob"}}, ALICE)


@pytest.mark.parametrize("control", [*CONTROLS, "\u0000"])
def test_token_customer_id_refuses_control_characters(control: str) -> None:
    """POST /tokens' customer_id: no control character anywhere, a trailing newline included."""
    body = {"customer_id": f"alice{control}"}
    assert refused_field(inputs.token_request, body) == "customer_id"


@pytest.mark.parametrize(
    "email", ["judy@example.com\n", "judy@example.com\r", "judy\t@example.com"]
)
def test_token_email_refuses_control_characters(email: str) -> None:
    """POST /tokens' email never becomes a ce claim with a newline in it."""
    body = {"customer_id": "judy", "email": email}
    assert refused_field(inputs.token_request, body) == "email"


def test_token_email_accepts_internationalised_addresses() -> None:
    """POST /tokens' email is judged by the same validator, so josé@exämple.com works."""
    wanted = inputs.token_request({"customer_id": "jose", "email": "josé@exämple.com"})
    assert wanted.email == "josé@exämple.com"


@pytest.mark.parametrize("key", ["abc\n", "abc\r\n", "a b", "é", "", "x" * 256])
def test_idempotency_key_is_a_full_match(key: str) -> None:
    """Idempotency-Key: 1-255 visible ASCII characters, nothing after them."""
    assert refused_field(inputs.idempotency_key, [key]) == "Idempotency-Key"


def test_idempotency_key_accepts_visible_ascii() -> None:
    """The longest visible-ASCII key is accepted as is."""
    key = "k" * 254 + "~"
    assert inputs.idempotency_key([key]) == key


@pytest.mark.parametrize("value", ["true\n", " true", "false\t"])
def test_deanonymize_query_refuses_padding(value: str) -> None:
    """The GET query's deanonymize is exactly true or false (no stripped whitespace)."""
    assert refused_field(inputs.referrals_query, [("deanonymize", value)]) == "deanonymize"


@pytest.mark.parametrize("control", ["\n", "\x1f", "\u2028"])
def test_invalidation_customer_id_refuses_control_characters(control: str) -> None:
    """POST /invalidations' customer_id follows the /tokens rules."""
    body = {"customer_id": f"alice{control}"}
    assert refused_field(inputs.invalidation_request, body) == "customer_id"


def test_destination_with_newline_never_reaches_bubblehouse(
    broker: Broker, sandbox: Sandbox
) -> None:
    """Through real HTTP: a trailing newline in destination is 400 naming it, no upstream call."""
    answer = broker.refer({"channel": "email", "destination": "friend@example.com\n"})
    assert answer.status_code == 400
    assert answer.json()["field"] == "destination"
    assert sandbox.calls()["Refer2"] == 0


def test_internationalised_destination_reaches_bubblehouse_unchanged(
    broker: Broker, sandbox: Sandbox
) -> None:
    """Through real HTTP: josé@exämple.com is sent to Bubblehouse byte for byte."""
    answer = broker.refer({"channel": "email", "destination": "josé@exämple.com"})
    assert answer.status_code == 200, answer.text
    sent = [r for r in sandbox.requests() if r["function"] == "Refer2"]
    assert sent[-1]["body"]["destination"] == "josé@exämple.com"


def test_tokens_email_with_newline_is_refused_over_http(broker: Broker) -> None:
    """Through real HTTP: POST /tokens refuses an email with a trailing newline."""
    answer = broker.client.post(
        "/tokens",
        json={"customer_id": "judy", "email": "judy@example.com\n"},
        headers=broker.issuer(),
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == "email"
