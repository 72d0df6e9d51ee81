"""Fault injection for the sandbox: what ``POST /_sandbox/faults`` accepts and which call it hits.

A fault is one JSON object (all keys optional, unknown keys refused)::

    {"delay": 0.5,               # seconds to sleep before answering (alone: then answer normally)
     "status": 500,              # answer this status (400-599) with a Bubblehouse-style error body:
                                 # id invalid_token for 401, rate_limit_exceeded for 429,
                                 # internal_error for other 5xx, sandbox_fault for other 4xx
     "id": "some_error_id",      # with status: the body is {"id": <this>} (plus "message" if given)
     "message": "text",          # with status: the body's message
     "html": true,               # answer 502 with an HTML page, as a load balancer would
     "rate_limit": true,         # answer 429 rate_limit_exceeded
     "reject_tokens": true,      # answer 401 invalid_token
     "drop": true,               # close the connection without answering
     "times": 3,                 # how many matching calls it applies to (default: no limit)
     "functions": ["Refer2"]}    # which API functions it applies to (default: all)

``drop`` closes the connection without a byte of answer. It reaches the connection through
uvicorn's ``send`` callable; on a server where that is not possible, it sends a 502 status line
and headers and then ends the connection mid-response, which clients also see as a broken
connection.

When several kinds are set, the first of drop, html, rate_limit, reject_tokens, status wins.
Faults are kept in the order they were posted; each API call takes the first live one whose
``functions`` include the call, and uses up one of its ``times``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
FLAGS = ("drop", "html", "rate_limit", "reject_tokens")  # in order of precedence
KEYS = frozenset({"delay", "status", "id", "message", "times", "functions", *FLAGS})
MAX_DELAY = 600.0
# Where SandboxApp leaves the server's own send callable for the drop fault to find.
SERVER_SEND = "sandbox.server_send"

# The id an injected status answers with when the fault names none.
DEFAULT_IDS = {401: "invalid_token", 429: "rate_limit_exceeded"}


@dataclass
class Fault:
    delay: float = 0.0
    status: int | None = None
    error_id: str | None = None
    message: str | None = None
    html: bool = False
    rate_limit: bool = False
    reject_tokens: bool = False
    drop: bool = False
    times: int | None = None
    functions: tuple[str, ...] | None = None

    @property
    def kind(self) -> str:
        """What the fault does instead of the normal answer (``delay`` if nothing)."""
        for flag in FLAGS:
            if getattr(self, flag):
                return flag
        return "status" if self.status is not None else "delay"

    def applies_to(self, function: str) -> bool:
        return self.functions is None or function in self.functions

    def error_body(self) -> dict[str, str]:
        """The body of a ``status`` fault."""
        assert self.status is not None
        error_id = (
            self.error_id
            or DEFAULT_IDS.get(self.status)
            or ("internal_error" if self.status >= 500 else "sandbox_fault")
        )
        body = {"id": error_id}
        if self.message is not None:
            body["message"] = self.message
        elif self.error_id is None:
            body["message"] = f"Injected by the sandbox (HTTP {self.status})."
        return body

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "delay": self.delay,
            "status": self.status,
            "id": self.error_id,
            "message": self.message,
            **{flag: getattr(self, flag) for flag in FLAGS},
            "times": self.times,
            "functions": None if self.functions is None else list(self.functions),
        }


def parse_fault(data: object) -> Fault:
    """A :class:`Fault` from a request body; :class:`ValueError` says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(unknown)}")
    fault = Fault()
    delay = data.get("delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY:
        raise ValueError(f"delay must be seconds between 0 and {MAX_DELAY:g}")
    fault.delay = float(delay)
    status = data.get("status")
    if status is not None:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP status between 400 and 599")
        fault.status = status
    error_id = data.get("id")
    if error_id is not None:
        if not isinstance(error_id, str) or not ID_RE.fullmatch(error_id):
            raise ValueError("id must be a lower-case slug such as no_such_thing")
        fault.error_id = error_id
    message = data.get("message")
    if message is not None:
        if not isinstance(message, str):
            raise ValueError("message must be a string")
        fault.message = message
    if (fault.error_id is not None or fault.message is not None) and fault.status is None:
        raise ValueError("id and message need a status")
    for flag in FLAGS:
        value = data.get(flag, False)
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be true or false")
        setattr(fault, flag, value)
    times = data.get("times")
    if times is not None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("times must be a positive whole number")
        fault.times = times
    functions = data.get("functions")
    if functions is not None:
        if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
            raise ValueError("functions must be a list of function names")
        fault.functions = tuple(functions)
    return fault


class FaultBook:
    """The live faults of one sandbox app instance."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, function: str) -> Fault | None:
        """The fault for this call, if any, with one of its uses spent."""
        for fault in self.faults:
            if fault.applies_to(function):
                if fault.times is not None:
                    fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def to_json(self) -> list[dict[str, Any]]:
        return [fault.to_json() for fault in self.faults]


class SandboxApp(Starlette):
    """Starlette, plus a note in each HTTP scope of the server's ``send`` (for ``drop``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


class DropConnection(Response):
    """Not an answer: the connection is closed without a byte written."""

    def __init__(self) -> None:
        super().__init__(status_code=502)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn's send is a bound method of the request cycle, which holds the transport.
        transport = getattr(getattr(scope.get(SERVER_SEND), "__self__", None), "transport", None)
        if transport is not None and callable(getattr(transport, "close", None)):
            transport.close()
            # Wait until the server has seen the connection go, or it would answer 500 for us.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while (await receive())["type"] != "http.disconnect":
                        pass
            return
        await send({"type": "http.response.start", "status": 502, "headers": []})


def fault_response(fault: Fault, function: str) -> Response | None:
    kind = fault.kind
    if kind == "drop":
        return DropConnection()
    if kind == "html":
        page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
        return HTMLResponse(page + "</body></html>", status_code=502)
    if kind == "rate_limit":
        limit = "read" if function != "Refer2" else "write"
        message = f"You are over the {limit} limit per second for this customer"
        return JSONResponse({"id": "rate_limit_exceeded", "message": message}, status_code=429)
    if kind == "reject_tokens":
        body = {"id": "invalid_token", "message": "The token was rejected (sandbox fault)."}
        return JSONResponse(body, status_code=401)
    if kind == "status":
        assert fault.status is not None
        return JSONResponse(fault.error_body(), status_code=fault.status)
    return None
