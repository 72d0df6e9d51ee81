"""Input rules over HTTP: values with control characters never reach Bubblehouse, and
internationalised addresses reach it unchanged."""

from __future__ import annotations

from tests.stack import Broker, Sandbox


def test_destination_with_newline_never_reaches_bubblehouse(
    broker: Broker, sandbox: Sandbox
) -> None:
    """Over HTTP: a trailing newline in destination is 400 naming it, no upstream call."""
    answer = broker.refer({"channel": "email", "destination": "friend@example.com\n"})
    assert answer.status_code == 400
    assert answer.json()["field"] == "destination"
    assert sandbox.calls()["Refer2"] == 0


def test_internationalised_destination_reaches_bubblehouse_unchanged(
    broker: Broker, sandbox: Sandbox
) -> None:
    """Over HTTP: josé@exämple.com is sent to Bubblehouse byte for byte."""
    answer = broker.refer({"channel": "email", "destination": "josé@exämple.com"})
    assert answer.status_code == 200, answer.text
    sent = [r for r in sandbox.requests() if r["function"] == "Refer2"]
    assert sent[-1]["body"]["destination"] == "josé@exämple.com"


def test_tokens_email_with_newline_is_refused_over_http(broker: Broker) -> None:
    """Over HTTP: POST /tokens refuses an email with a trailing newline."""
    answer = broker.client.post(
        "/tokens",
        json={"customer_id": "judy", "email": "judy@example.com\n"},
        headers=broker.issuer(),
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == "email"
