"""Input rules: full matches, no control characters in any accepted value, real email addresses."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import (
    CustomerIdentityDoesNotMatchToken,
    DeanonymizeNotAllowed,
    InvalidInput,
    InvalidJson,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from broker.rules import fields, inputs
from broker.rules.tokens import Customer

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


# --- every rule, every error id and message, without HTTP ---------------------------------

BOB = Customer("test-shop", "bob", None, 2**40)
SLUG_MESSAGE = "channel is required: a lower-case slug such as email or whatsapp."
EMAIL_DESTINATION = "destination must be a valid email address for the email channel."
ID_REQUIRED = "customer_id is required and must be a string."
ID_RULE = "customer_id must be 1-128 printable characters without '/'."
TTL_RULE = "ttl must be a positive whole number of seconds."
KEY_RULE = "Idempotency-Key must be one value of 1-255 visible ASCII characters."
DEANONYMIZE = "deanonymize must be true or false."

INVALID: list[tuple[str, Any, tuple[Any, ...], str, str]] = [
    (
        "token-unknown",
        inputs.token_request,
        ({"customer_id": "a", "x": 1},),
        "x",
        "Unknown field 'x'.",
    ),
    ("token-missing-id", inputs.token_request, ({},), "customer_id", ID_REQUIRED),
    ("token-id-number", inputs.token_request, ({"customer_id": 7},), "customer_id", ID_REQUIRED),
    ("token-id-empty", inputs.token_request, ({"customer_id": ""},), "customer_id", ID_REQUIRED),
    ("token-id-slash", inputs.token_request, ({"customer_id": "a/b"},), "customer_id", ID_RULE),
    ("token-id-long", inputs.token_request, ({"customer_id": "x" * 129},), "customer_id", ID_RULE),
    (
        "token-id-soft-hyphen",
        inputs.token_request,
        ({"customer_id": "a\u00ad"},),
        "customer_id",
        ID_RULE,
    ),
    (
        "token-email-number",
        inputs.token_request,
        ({"customer_id": "a", "email": 1},),
        "email",
        "email must be a valid email address.",
    ),
    (
        "token-email-empty",
        inputs.token_request,
        ({"customer_id": "a", "email": ""},),
        "email",
        "email must be a valid email address.",
    ),
    ("token-ttl-zero", inputs.token_request, ({"customer_id": "a", "ttl": 0},), "ttl", TTL_RULE),
    ("token-ttl-bool", inputs.token_request, ({"customer_id": "a", "ttl": True},), "ttl", TTL_RULE),
    ("token-ttl-text", inputs.token_request, ({"customer_id": "a", "ttl": "60"},), "ttl", TTL_RULE),
    (
        "token-ttl-float",
        inputs.token_request,
        ({"customer_id": "a", "ttl": 60.5},),
        "ttl",
        TTL_RULE,
    ),
    (
        "invalidation-unknown",
        inputs.invalidation_request,
        ({"customer_id": "a", "all": True},),
        "all",
        "Unknown field 'all'.",
    ),
    ("invalidation-missing", inputs.invalidation_request, ({},), "customer_id", ID_REQUIRED),
    (
        "cli-customer",
        inputs.customer_id,
        ("a/b", "--customer"),
        "--customer",
        "--customer must be 1-128 printable characters without '/'.",
    ),
    (
        "cli-customer-missing",
        inputs.customer_id,
        (None, "CUSTOMER_ID"),
        "CUSTOMER_ID",
        "CUSTOMER_ID is required and must be a string.",
    ),
    (
        "read-unknown",
        inputs.referrals_input,
        ({"limit": 5}, ALICE),
        "limit",
        "Unknown field 'limit'.",
    ),
    (
        "read-deanonymize-text",
        inputs.referrals_input,
        ({"deanonymize": "true"}, ALICE),
        "deanonymize",
        DEANONYMIZE,
    ),
    (
        "read-customer-text",
        inputs.referrals_input,
        ({"customer": "alice"}, ALICE),
        "customer",
        "customer must be an object with bhid, shopid or email.",
    ),
    (
        "read-customer-unknown",
        inputs.referrals_input,
        ({"customer": {"id": "a"}}, ALICE),
        "customer.id",
        "Unknown field 'customer.id'.",
    ),
    (
        "read-customer-number",
        inputs.referrals_input,
        ({"customer": {"shopid": 7}}, ALICE),
        "customer.shopid",
        "customer.shopid must be a string.",
    ),
    (
        "read-customer-control",
        inputs.referrals_input,
        ({"customer": {"email": "a\n"}}, ALICE),
        "customer.email",
        "customer.email must not hold control characters.",
    ),
    (
        "query-unknown",
        inputs.referrals_query,
        ([("limit", "5")],),
        "limit",
        "Unknown query parameter 'limit'.",
    ),
    (
        "query-repeated",
        inputs.referrals_query,
        ([("deanonymize", "false")] * 2,),
        "deanonymize",
        "The query parameter 'deanonymize' is repeated.",
    ),
    ("query-value", inputs.referrals_query, ([("deanonymize", "1")],), "deanonymize", DEANONYMIZE),
    (
        "refer-unknown",
        inputs.refer_input,
        ({"channel": "sms", "to": "x"}, ALICE),
        "to",
        "Unknown field 'to'.",
    ),
    (
        "refer-sender",
        inputs.refer_input,
        ({"channel": "sms", "sender": 1}, ALICE),
        "sender",
        "sender must be a string without control characters.",
    ),
    ("refer-no-channel", inputs.refer_input, ({}, ALICE), "channel", SLUG_MESSAGE),
    (
        "refer-channel-upper",
        inputs.refer_input,
        ({"channel": "SMS"}, ALICE),
        "channel",
        SLUG_MESSAGE,
    ),
    (
        "refer-channel-long",
        inputs.refer_input,
        ({"channel": "x" * 65}, ALICE),
        "channel",
        SLUG_MESSAGE,
    ),
    (
        "refer-email-no-destination",
        inputs.refer_input,
        ({"channel": "email"}, ALICE),
        "destination",
        EMAIL_DESTINATION,
    ),
    (
        "refer-email-long",
        inputs.refer_input,
        ({"channel": "email", "destination": "a@" + "b" * 250 + ".com"}, ALICE),
        "destination",
        EMAIL_DESTINATION,
    ),
    (
        "refer-sms-destination",
        inputs.refer_input,
        ({"channel": "sms", "destination": "+3312345678"}, ALICE),
        "destination",
        "destination is only for the email channel.",
    ),
    (
        "refer-customer-unknown",
        inputs.refer_input,
        ({"channel": "sms", "customer": {"x": 1}}, ALICE),
        "customer.x",
        "Unknown field 'customer.x'.",
    ),
    ("key-twice", inputs.idempotency_key, (["a", "b"],), "Idempotency-Key", KEY_RULE),
    ("key-space", inputs.idempotency_key, (["a b"],), "Idempotency-Key", KEY_RULE),
]


@pytest.mark.parametrize(
    ("call", "args", "field", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_each_rule_refuses_with_its_field_and_message(
    call: Any, args: tuple[Any, ...], field: str, message: str
) -> None:
    """Every input rule answers invalid_input (400) naming the field, with its exact message."""
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    assert (caught.value.id, caught.value.status) == ("invalid_input", 400)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_unknown_fields_are_refused_before_any_other_rule() -> None:
    """An unknown member is named even when a known one is also wrong."""
    assert refused_field(inputs.refer_input, {"channel": "BAD", "zzz": 1}, ALICE) == "zzz"
    assert refused_field(inputs.token_request, {"ttl": 0, "zzz": 1}) == "zzz"


def test_fields_are_checked_in_declaration_order() -> None:
    """With several bad fields, the first declared is named (sender, channel, destination)."""
    body = {"sender": 1, "channel": "BAD", "destination": 1, "customer": 1}
    assert refused_field(inputs.refer_input, body, ALICE) == "sender"
    assert refused_field(inputs.refer_input, {**body, "sender": None}, ALICE) == "channel"
    body = {"deanonymize": 1, "customer": 1}
    assert refused_field(inputs.referrals_input, body, ALICE) == "deanonymize"


def test_valid_token_request() -> None:
    """A valid /tokens body becomes a TokenRequest; null and an absent member are the same."""
    wanted = inputs.token_request({"customer_id": "alice", "email": "a@example.com", "ttl": 60})
    assert wanted == inputs.TokenRequest("alice", "a@example.com", 60)
    bare = inputs.token_request({"customer_id": "x" * 128, "email": None, "ttl": None})
    assert bare == inputs.TokenRequest("x" * 128, None, None)
    assert inputs.invalidation_request({"customer_id": "alice"}) == ("alice", None)
    assert inputs.customer_id("alice", "--customer") == "alice"


def test_refer_sends_only_channel_and_destination() -> None:
    """sender and a matching customer are accepted and dropped; null destination is absent."""
    body = {"channel": "sms", "sender": "alice", "destination": None, "customer": {"shopid": ""}}
    assert inputs.refer_input(body, ALICE) == {"channel": "sms"}
    assert inputs.refer_input({"channel": "a" + "-" * 63}, ALICE) == {"channel": "a" + "-" * 63}


@pytest.mark.parametrize(
    ("identity", "customer", "message"),
    [
        (
            {"bhid": "b-1"},
            ALICE,
            "The broker cannot check a bhid against the token; leave customer out.",
        ),
        ({"shopid": "bob"}, ALICE, CustomerIdentityDoesNotMatchToken.default_message),
        ({"email": "bob@example.com"}, ALICE, CustomerIdentityDoesNotMatchToken.default_message),
        ({"email": "bob@example.com"}, BOB, CustomerIdentityDoesNotMatchToken.default_message),
    ],
    ids=["bhid", "shopid", "email", "email-without-ce"],
)
def test_identity_that_names_someone_else_is_refused(
    identity: dict[str, str], customer: Customer, message: str
) -> None:
    """customer must name the token's customer: 403 customer_identity_does_not_match_token."""
    for call, extra in ((inputs.referrals_input, {}), (inputs.refer_input, {"channel": "sms"})):
        with pytest.raises(CustomerIdentityDoesNotMatchToken) as caught:
            call({**extra, "customer": identity}, customer)
        assert (caught.value.status, caught.value.message) == (403, message)


def test_identity_matches_case_insensitively_and_ignores_empty_fields() -> None:
    """The token's email matches whatever its case; empty or null fields name no one."""
    body = {"customer": {"email": "ALICE@Example.com", "shopid": "alice", "bhid": ""}}
    assert inputs.referrals_input(body, ALICE) == {}
    assert inputs.referrals_input({"customer": {"bhid": None}}, BOB) == {}


def test_deanonymize() -> None:
    """deanonymize true is 403 deanonymize_not_allowed; false and absent read as usual."""
    with pytest.raises(DeanonymizeNotAllowed) as caught:
        inputs.referrals_input({"deanonymize": True}, ALICE)
    assert caught.value.status == 403
    assert inputs.referrals_input({"deanonymize": False}, ALICE) == {}
    assert inputs.referrals_query([("deanonymize", "TRUE")]) == {"deanonymize": True}
    assert inputs.referrals_query([("deanonymize", "false")]) == {"deanonymize": False}
    assert inputs.referrals_query([]) == {}


def test_idempotency_key_absent() -> None:
    """No Idempotency-Key header is no key."""
    assert inputs.idempotency_key([]) is None


@pytest.mark.parametrize(
    ("content_type", "present"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/merge-patch+json", True),
        (None, False),
        ("text/plain", False),
    ],
)
def test_content_type_of_an_empty_body_does_not_matter(
    content_type: str | None, present: bool
) -> None:
    """A body needs a JSON media type; an empty body needs none."""
    inputs.check_content_type(content_type, False)
    if present:
        inputs.check_content_type(content_type, True)
    else:
        with pytest.raises(UnsupportedMediaType) as caught:
            inputs.check_content_type(content_type, True)
        assert caught.value.status == 415


def test_decode_object() -> None:
    """Empty is {}; not JSON and not an object are 400 invalid_json; over 16 KiB is 413."""
    assert inputs.decode_object(b"") == {} == inputs.decode_object(b" \n")
    assert inputs.decode_object(b'{"a": 1}') == {"a": 1}
    with pytest.raises(InvalidJson) as caught:
        inputs.decode_object(b"{")
    assert caught.value.message == InvalidJson.default_message
    with pytest.raises(InvalidJson) as caught:
        inputs.decode_object(b"[1]")
    assert caught.value.message == "The request body must be a JSON object."
    with pytest.raises(PayloadTooLarge):
        inputs.decode_object(b" " * (inputs.MAX_BODY + 1))


def test_fingerprint_ignores_member_order_only() -> None:
    """Idempotency compares bodies by content: member order does not matter, values do."""
    assert inputs.fingerprint({"a": 1, "b": 2}) == inputs.fingerprint({"b": 2, "a": 1})
    assert inputs.fingerprint({"a": 1}) != inputs.fingerprint({"a": 2})


@given(st.from_regex(f"^{fields.EMAIL_DOCUMENTED}$", fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_every_address_of_the_documented_form_is_accepted(address: str) -> None:
    """The document's email pattern shows only addresses the library accepts (no .test)."""
    assert fields.is_email(address), address


@given(st.from_regex(r"^[\x20-\x2e\x30-\x7e]{1,128}$", fullmatch=True))
@settings(max_examples=200, deadline=None)
def test_every_customer_id_of_the_documented_form_is_accepted(customer_id: str) -> None:
    """The document's customer_id pattern shows only ids the check accepts."""
    assert inputs.CUSTOMER_ID_FIELD.documented is not None
    assert re.fullmatch(inputs.CUSTOMER_ID_FIELD.documented, customer_id)
    assert inputs.token_request({"customer_id": customer_id}).customer_id == customer_id


def test_special_use_domains_are_outside_the_documented_form() -> None:
    """Addresses the library refuses (special-use domains) do not match the documented form."""
    for address in ("a@b.test", "a@b.local", "a@b.invalid", "a@b.onion", "a@b.arpa", "a@x"):
        assert not fields.is_email(address)
        assert not re.fullmatch(fields.EMAIL_DOCUMENTED, address)


@pytest.mark.parametrize(
    ("ttl", "accepted"), [(60.0, 60), (1.5, None), (0.0, None), (2.0**60, 2**60)]
)
def test_a_whole_number_ttl_written_with_a_fraction_is_an_integer(
    ttl: float, accepted: int | None
) -> None:
    """JSON Schema calls 60.0 (and 2.0**60) an integer, so the broker does; 1.5 is refused."""
    if accepted is None:
        with pytest.raises(InvalidInput):
            inputs.token_request({"customer_id": "alice", "ttl": ttl})
    else:
        assert inputs.token_request({"customer_id": "alice", "ttl": ttl}).ttl == accepted
