"""The two browser calls, ``CustomerReferrals2`` and ``Refer2``, as pure ASGI endpoints.

These are the broker's hot path: every storefront page view reads a referral history. So the
edge here reads what it needs from the ASGI scope in one pass over the headers, sends the answer
as two ASGI messages, and leaves request and response objects to the other routes. The rules of
reading and sending live in :mod:`broker.rules.referrals`; errors are rendered by the one renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.types import Receive, Scope, Send

from broker.errors import (
    BrokerError,
    InvalidGlobalApiVersion,
    InvalidInput,
    InvalidToken,
    MethodNotAllowed,
    MissingToken,
    NotFound,
    PayloadTooLarge,
)
from broker.rules import inputs
from broker.rules.functions import Function
from broker.rules.referrals import Referrals
from broker.services import services_of
from broker.telemetry.logs import customer_hash
from broker.telemetry.request import RequestInfo
from broker.web.requestlog import request_info
from broker.web.responses import refused, unexpected

log = structlog.get_logger("broker.api")

READ_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"private, no-store"),
    (b"vary", b"Authorization, Origin"),
]


@dataclass(slots=True)
class Incoming:
    """What the two calls read from a request's headers, gathered in one pass."""

    authorization: list[str]
    content_type: str | None = None
    content_length: str | None = None
    consistency: str | None = None
    idempotency: list[str] | None = None

    @classmethod
    def of(cls, headers: list[tuple[bytes, bytes]]) -> Incoming:
        found = cls([])
        for name, value in headers:
            if name == b"authorization":
                found.authorization.append(value.decode("latin-1"))
            elif name == b"content-type":
                found.content_type = value.decode("latin-1")
            elif name == b"content-length":
                found.content_length = value.decode("latin-1")
            elif name == b"consistency-token":
                found.consistency = value.decode("latin-1")
            elif name == b"idempotency-key":
                if found.idempotency is None:
                    found.idempotency = []
                found.idempotency.append(value.decode("latin-1"))
        return found


def bearer_of(values: list[str]) -> str | None:
    """The bearer credential of the one ``Authorization`` header, or None if there is none."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidToken("malformed", "Send exactly one Authorization header.")
    scheme, _, credential = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


async def read_body(receive: Receive, content_length: str | None) -> bytes:
    """The request body, refused past 16 KiB without reading further."""
    if (
        content_length is not None
        and content_length.isdigit()
        and int(content_length) > inputs.MAX_BODY
    ):
        raise PayloadTooLarge()
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > inputs.MAX_BODY:
            raise PayloadTooLarge()
        more = message.get("more_body", False)
    return body


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _rate_headers(decision: Any) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]


class ReferralCall:
    """The pure ASGI endpoint of one Bubblehouse function, handled by the function's rule."""

    def __init__(self, function: Function) -> None:
        self.function = function
        self.route = function.route
        self.allowed = function.allowed
        # An unknown rule fails here, when the app is built, never on a request.
        self.rule = {"read": self.read, "send": self.send}[function.rule]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = request_info(scope)
        info.route = self.route
        try:
            await self.handle(scope, receive, send, info)
        except BrokerError as error:
            await refused(info, error)(scope, receive, send)
        except Exception:
            await unexpected(info)(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send, info: RequestInfo) -> None:
        svc = services_of(scope)
        referrals = svc.referrals
        params = scope["path_params"]
        shop = params["shop"]
        if shop not in svc.settings.shops:  # spec 2.1: the path's <shop> selects the shop
            info.route = "unmatched"
            raise NotFound()
        info.shop = shop
        version = params["version"]
        if version not in svc.settings.api_versions:
            raise InvalidGlobalApiVersion()
        method = scope["method"]
        if method == "OPTIONS":
            allow = ", ".join(self.allowed).encode()
            await send_json(send, 204, b"", [(b"allow", allow)])
            return
        if method not in self.allowed:
            raise MethodNotAllowed(self.allowed)
        incoming = Incoming.of(scope["headers"])
        token = bearer_of(incoming.authorization)
        if token is None:
            raise MissingToken()
        customer = svc.verifier.verify(token, shop=shop)  # that shop's keys, sub of that shop
        info.customer = customer_hash(svc.log_key, customer.id)
        await self.rule(scope, receive, send, info, referrals, incoming, customer, version)

    async def _json(self, receive: Receive, incoming: Incoming) -> dict[str, Any]:
        raw = await read_body(receive, incoming.content_length)
        inputs.check_content_type(incoming.content_type, bool(raw))
        return inputs.decode_object(raw)

    async def read(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        referrals: Referrals,
        incoming: Incoming,
        customer: Any,
        version: str,
    ) -> None:
        query = scope["query_string"]
        if scope["method"] == "GET" and self.function.query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            data = inputs.referrals_query(pairs)
        else:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else []
            if pairs:
                name = pairs[0][0]
                raise InvalidInput(name, f"Unknown query parameter '{name}'.")
            data = await self._json(receive, incoming)
        payload = self.function.check(data, customer)
        # The token is verified (a MAC for this customer) where it is used: broker.rules.
        served, rate = await referrals.read(
            info, customer, version, payload, incoming.consistency, self.function
        )
        headers = [*READ_HEADERS, (b"cache-status", served.cache_status.encode())]
        if rate is not None:
            headers += _rate_headers(rate)
        await send_json(send, 200, served.body, headers)

    async def send(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        info: RequestInfo,
        referrals: Referrals,
        incoming: Incoming,
        customer: Any,
        version: str,
    ) -> None:
        key = inputs.idempotency_key(incoming.idempotency or [])
        data = await self._json(receive, incoming)
        payload = self.function.check(data, customer)
        sent = await referrals.send(
            info,
            customer,
            version,
            payload,
            key,
            inputs.fingerprint(data) if key else "",
            self.function,
        )
        stored = sent.response
        headers = {**stored.headers, "Cache-Control": "no-store"}
        if sent.rate is not None:
            headers.update(sent.rate.headers())
        if sent.replayed:
            headers["Idempotent-Replayed"] = "true"
        raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
        await send_json(send, stored.status, stored.body, raw)
