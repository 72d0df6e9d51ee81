"""Unit tests of broker_dev.sandbox.faults: parsing a fault, choosing it for a call, its answer."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Scope

from broker_dev.sandbox.faults import (
    MAX_DELAY,
    SERVER_SEND,
    DropConnection,
    Fault,
    FaultBook,
    SandboxApp,
    fault_response,
    parse_fault,
)

# -- parsing --------------------------------------------------------------------------------


def test_an_empty_fault_is_a_delay_of_nothing_for_every_call() -> None:
    """{} parses to a fault with no delay, no answer of its own, no limit, every function."""
    fault = parse_fault({})
    assert fault == Fault()
    assert (fault.kind, fault.times, fault.functions) == ("delay", None, None)


def test_every_key_is_read() -> None:
    """Each documented key lands in its field, functions as a tuple."""
    fault = parse_fault(
        {
            "delay": 2,
            "status": 418,
            "id": "teapot",
            "message": "short and stout",
            "html": True,
            "rate_limit": True,
            "reject_tokens": True,
            "drop": True,
            "times": 3,
            "functions": ["Refer2", "Status2"],
        }
    )
    assert fault == Fault(
        delay=2.0,
        status=418,
        error_id="teapot",
        message="short and stout",
        html=True,
        rate_limit=True,
        reject_tokens=True,
        drop=True,
        times=3,
        functions=("Refer2", "Status2"),
    )
    assert isinstance(fault.delay, float)


@pytest.mark.parametrize("delay", [0, 0.5, MAX_DELAY])
def test_delay_takes_seconds_up_to_the_maximum(delay: float) -> None:
    """delay is any number of seconds from 0 to MAX_DELAY."""
    assert parse_fault({"delay": delay}).delay == delay


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "the body must be a JSON object"),
        ("drop", "the body must be a JSON object"),
        ({"drop": True, "when": 1, "after": 2}, "unknown keys: after, when"),
        ({"delay": -0.1}, f"delay must be seconds between 0 and {MAX_DELAY:g}"),
        ({"delay": MAX_DELAY + 1}, f"delay must be seconds between 0 and {MAX_DELAY:g}"),
        ({"delay": "1"}, f"delay must be seconds between 0 and {MAX_DELAY:g}"),
        ({"delay": True}, f"delay must be seconds between 0 and {MAX_DELAY:g}"),
        ({"delay": float("nan")}, f"delay must be seconds between 0 and {MAX_DELAY:g}"),
        ({"status": 399}, "status must be an HTTP status between 400 and 599"),
        ({"status": 600}, "status must be an HTTP status between 400 and 599"),
        ({"status": 500.0}, "status must be an HTTP status between 400 and 599"),
        ({"status": True}, "status must be an HTTP status between 400 and 599"),
        ({"status": 500, "id": "Bad-Id"}, "id must be a lower-case slug such as no_such_thing"),
        ({"status": 500, "id": "_x"}, "id must be a lower-case slug such as no_such_thing"),
        ({"status": 500, "id": 5}, "id must be a lower-case slug such as no_such_thing"),
        ({"status": 500, "message": 5}, "message must be a string"),
        ({"id": "nope"}, "id and message need a status"),
        ({"message": "nope"}, "id and message need a status"),
        ({"drop": 1}, "drop must be true or false"),
        ({"html": "yes"}, "html must be true or false"),
        ({"rate_limit": None}, "rate_limit must be true or false"),
        ({"reject_tokens": 0}, "reject_tokens must be true or false"),
        ({"times": 0}, "times must be a positive whole number"),
        ({"times": 1.0}, "times must be a positive whole number"),
        ({"times": True}, "times must be a positive whole number"),
        ({"functions": "Refer2"}, "functions must be a list of function names"),
        ({"functions": ["Refer2", 2]}, "functions must be a list of function names"),
    ],
)
def test_malformed_faults_are_refused_with_their_reason(data: Any, message: str) -> None:
    """Each malformed fault raises ValueError with the message the control API shows."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_fault(data)


# -- what a fault does ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (
            {"drop": True, "html": True, "rate_limit": True, "reject_tokens": True, "status": 500},
            "drop",
        ),
        ({"html": True, "rate_limit": True, "reject_tokens": True, "status": 500}, "html"),
        ({"rate_limit": True, "reject_tokens": True, "status": 500}, "rate_limit"),
        ({"reject_tokens": True, "status": 500}, "reject_tokens"),
        ({"status": 500, "delay": 1}, "status"),
        ({"delay": 1}, "delay"),
    ],
)
def test_the_first_of_drop_html_rate_limit_reject_tokens_status_wins(
    data: dict[str, Any], kind: str
) -> None:
    """When several kinds are set, the documented precedence picks one."""
    assert parse_fault(data).kind == kind


@pytest.mark.parametrize(
    ("status", "error_id"),
    [
        (401, "invalid_token"),
        (429, "rate_limit_exceeded"),
        (503, "internal_error"),
        (409, "sandbox_fault"),
    ],
)
def test_a_status_fault_without_id_answers_the_status_default_id(
    status: int, error_id: str
) -> None:
    """Without an id: invalid_token for 401, rate_limit_exceeded for 429, else by class."""
    assert Fault(status=status).error_body() == {
        "id": error_id,
        "message": f"Injected by the sandbox (HTTP {status}).",
    }


def test_a_status_fault_with_id_answers_it_without_a_made_up_message() -> None:
    """An id alone gives {"id"}; with a message, the message too."""
    assert Fault(status=500, error_id="boom").error_body() == {"id": "boom"}
    assert Fault(status=500, error_id="boom", message="m").error_body() == {
        "id": "boom",
        "message": "m",
    }
    assert Fault(status=500, message="m").error_body() == {"id": "internal_error", "message": "m"}


def test_a_fault_describes_itself_as_json() -> None:
    """to_json names the kind and every field, with functions as a list."""
    fault = parse_fault({"status": 503, "times": 2, "functions": ["Refer2"]})
    assert fault.to_json() == {
        "kind": "status",
        "delay": 0.0,
        "status": 503,
        "id": None,
        "message": None,
        "drop": False,
        "html": False,
        "rate_limit": False,
        "reject_tokens": False,
        "times": 2,
        "functions": ["Refer2"],
    }
    assert Fault().to_json()["functions"] is None


def body(response: Response) -> Any:
    """The decoded JSON body of an answer."""
    return json.loads(bytes(response.body))


def test_a_status_fault_answers_its_status_and_bubblehouse_body() -> None:
    """status answers that status with the fault's error body as JSON."""
    response = fault_response(Fault(status=503, error_id="down", message="m"), "Refer2")
    assert isinstance(response, JSONResponse) and response.status_code == 503
    assert body(response) == {"id": "down", "message": "m"}


def test_an_html_fault_answers_a_load_balancer_502_page() -> None:
    """html answers 502 with an HTML page, not JSON."""
    response = fault_response(Fault(html=True), "Status2")
    assert isinstance(response, HTMLResponse) and response.status_code == 502
    assert bytes(response.body).startswith(b"<html>") and b"502 Bad Gateway" in bytes(response.body)


@pytest.mark.parametrize(
    ("function", "limit"),
    [("Refer2", "write"), ("CustomerReferrals2", "read"), ("Status2", "read")],
)
def test_a_rate_limit_fault_names_the_read_or_write_limit(function: str, limit: str) -> None:
    """rate_limit answers 429 rate_limit_exceeded naming write for Refer2, read otherwise."""
    response = fault_response(Fault(rate_limit=True), function)
    assert response is not None and response.status_code == 429
    assert body(response) == {
        "id": "rate_limit_exceeded",
        "message": f"You are over the {limit} limit per second for this customer",
    }


def test_a_reject_tokens_fault_answers_invalid_token() -> None:
    """reject_tokens answers 401 invalid_token."""
    response = fault_response(Fault(reject_tokens=True), "CustomerReferrals2")
    assert response is not None and response.status_code == 401
    assert body(response)["id"] == "invalid_token"


def test_a_drop_fault_answers_by_dropping_the_connection() -> None:
    """drop gives the DropConnection answer."""
    assert isinstance(fault_response(Fault(drop=True), "Refer2"), DropConnection)


def test_a_delay_alone_leaves_the_answer_to_the_api() -> None:
    """A fault that only delays has no answer of its own."""
    assert fault_response(Fault(delay=1.0), "Refer2") is None


# -- which call a fault hits ----------------------------------------------------------------


def test_an_empty_book_has_no_fault_for_a_call() -> None:
    """take() finds nothing in an empty book."""
    assert FaultBook().take("Refer2") is None


def test_a_fault_without_times_applies_to_every_call() -> None:
    """No times: the fault stays and hits every call."""
    book = FaultBook()
    fault = Fault(status=500)
    book.add(fault)
    assert [book.take("Status2") for _ in range(5)] == [fault] * 5
    assert book.faults == [fault]


def test_times_counts_down_and_the_spent_fault_leaves_the_book() -> None:
    """A fault with times n hits n calls, then is gone."""
    book = FaultBook()
    book.add(parse_fault({"status": 500, "times": 2}))
    first = book.take("Refer2")
    assert first is not None and first.times == 1 and book.to_json()[0]["times"] == 1
    assert book.take("Refer2") is first
    assert book.take("Refer2") is None and book.faults == []


def test_functions_limit_the_calls_a_fault_hits() -> None:
    """A fault naming functions skips other calls and keeps its uses for them."""
    book = FaultBook()
    book.add(parse_fault({"status": 500, "times": 1, "functions": ["Refer2"]}))
    assert book.take("CustomerReferrals2") is None
    assert len(book.faults) == 1
    assert book.take("Refer2") is not None
    assert book.faults == []


def test_the_first_posted_live_fault_for_a_call_wins() -> None:
    """Faults are tried in the order added; one that does not apply is passed over."""
    book = FaultBook()
    reads = parse_fault({"status": 502, "functions": ["CustomerReferrals2"]})
    once = parse_fault({"status": 503, "times": 1})
    always = parse_fault({"status": 504})
    for fault in (reads, once, always):
        book.add(fault)
    assert book.take("Refer2") is once
    assert book.take("Refer2") is always
    assert book.take("CustomerReferrals2") is reads


def test_clear_empties_the_book_and_to_json_lists_it() -> None:
    """to_json lists the live faults in order; clear() removes them all."""
    book = FaultBook()
    book.add(parse_fault({"html": True}))
    book.add(parse_fault({"drop": True}))
    assert [fault["kind"] for fault in book.to_json()] == ["html", "drop"]
    book.clear()
    assert book.to_json() == [] and book.take("Status2") is None


# -- dropping a connection, at the ASGI boundary --------------------------------------------


class Transport:
    """The server's transport, as far as DropConnection touches it."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Cycle:
    """A server's request cycle: its bound ``send`` carries the transport, as uvicorn's does."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def receiver(*messages: Message) -> tuple[Callable[[], Awaitable[Message]], list[Message]]:
    """An ASGI receive that hands out ``messages`` in order, and the list of those handed out."""
    handed: list[Message] = []
    pending = list(messages)

    async def receive() -> Message:
        handed.append(pending.pop(0))
        return handed[-1]

    return receive, handed


async def test_drop_closes_the_transport_and_waits_for_the_disconnect() -> None:
    """With the server's transport in reach, drop closes it, writes nothing, reads to disconnect."""
    cycle = Cycle()
    receive, handed = receiver(
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    )
    await DropConnection()({"type": "http", SERVER_SEND: cycle.send}, receive, cycle.send)
    assert cycle.transport.closed
    assert cycle.sent == []
    assert [message["type"] for message in handed] == ["http.request", "http.disconnect"]


async def test_drop_without_the_transport_breaks_off_after_the_status_line() -> None:
    """Where the transport is out of reach, drop starts a 502 and never finishes it."""
    cycle = Cycle()
    receive, handed = receiver()
    await DropConnection()({"type": "http"}, receive, cycle.send)
    assert cycle.sent == [{"type": "http.response.start", "status": 502, "headers": []}]
    assert handed == []


def http_scope(path: str) -> Scope:
    """A minimal ASGI HTTP scope for a GET of ``path``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }


async def test_the_app_notes_the_server_send_in_each_http_scope() -> None:
    """SandboxApp leaves the server's send in an HTTP scope, where a drop fault finds it."""
    seen: list[Any] = []

    async def endpoint(request: Request) -> Response:
        seen.append(request.scope.get(SERVER_SEND))
        return PlainTextResponse("ok")

    cycle = Cycle()
    receive, _ = receiver({"type": "http.request", "body": b"", "more_body": False})
    await SandboxApp(routes=[Route("/", endpoint)])(http_scope("/"), receive, cycle.send)
    assert seen == [cycle.send]
    assert cycle.sent[0]["status"] == 200


async def test_the_app_leaves_other_scopes_alone() -> None:
    """A lifespan scope gets no server send noted in it."""
    cycle = Cycle()
    receive, _ = receiver({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await SandboxApp()(scope, receive, cycle.send)
    assert SERVER_SEND not in scope
    assert [m["type"] for m in cycle.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
