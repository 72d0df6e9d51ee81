"""The sandbox upstream: a Bubblehouse look-alike for ``broker dev``, end-to-end tests, benchmarks.

It answers what bubblehouse-api.md documents, keeps its state in memory per app instance, and can
be told to be slow or to fail. Where Bubblehouse documents nothing, the sandbox's own choice is
marked *(sandbox)* below.

Configuration (:mod:`broker_dev.sandbox.config`)
    ``BROKER_SHOP``, ``BROKER_SIGNING_KEYS``, ``BROKER_API_VERSIONS``: read exactly as the broker
    reads them, so a sandbox and a broker started from one environment trust each other.
    ``SANDBOX_DELAY``: seconds (0-60) added to every API answer, default 0.
    ``SANDBOX_FAST``: ``1``/``true``/``yes``/``on`` for benchmark mode, default off.
    ``SANDBOX_SEED``: ``0``/``false``/``no``/``off`` to start without demo referrals, default on.
    Day-one rules, also changeable at run time: ``SANDBOX_CUSTOMERS`` (``any``/``synced``),
    ``SANDBOX_CHECK_EMAIL``, ``SANDBOX_RATE_LIMIT_READ``/``_WRITE`` and the run-time-only
    ``refer_refusal`` (shop text on Refer2 refusals).

API: ``/api/<version>/<shop>/<function>``, checked in this order
    - ``<version>`` not in the configured versions: 400 ``invalid_global_api_version``; a dated
      version from before 2023 (``v2019...``) is 400 ``obsolete_global_api_version`` instead.
    - ``<shop>`` not the configured shop: 404 ``unknown_shop`` *(sandbox: Bubblehouse documents
      no id for it; without a shop there are no secrets to check a token against, so the
      sandbox answers "not here" rather than 401)*.
    - ``<function>`` other than ``CustomerReferrals2`` (GET, POST), ``Refer2`` (POST),
      ``Status2`` (GET, POST): 404 ``unknown_function``; another method: 405
      ``method_not_allowed`` *(sandbox)*.
    - Input: POST JSON object, POST form fields, or for GET the query string. A body that is not
      a JSON object: 400 ``invalid_json`` *(sandbox)*. Wrongly typed ``customer`` fields or
      ``deanonymize``: 400 ``invalid_input`` *(sandbox)*.
    - Token (:mod:`broker_dev.sandbox.tokens`): ``Authorization: Bearer <jwt>``; none or empty is
      anonymous. HS256 only, ``kid`` names a configured key, ``aud`` exactly ``"BH"``, ``sub`` is
      ``<shop>`` (shop token) or ``<shop>/<customer id>`` (customer token), ``exp`` enforced when
      present, ``iat`` in the future refused; 10 s leeway on both. ``ce`` is the customer's
      email; ``l == "admin"`` makes a customer token a customer-admin token. Any failure: 401
      ``invalid_token`` with a message.
    - Customer: a customer token's customer exists from first use (with the ``ce`` email)
      *(sandbox convenience: the real service knows only customers the shop's platform synced;
      ``customers=synced`` behaves that way, and ``check_email`` refuses a ``ce`` that disagrees
      with the record, as Bubblehouse's identity rules do)*. A shop
      token needs ``customer`` (CustomerIdentity1) and finds only existing customers (seeded,
      or created by a customer token, or with seeding on any ``shopid`` starting ``demo-``).
      The documented identity ids and statuses apply (bubblehouse-api.md section 6).

``CustomerReferrals2``
    ``{"summary": {"sent", "approved", "rejected", "earned_pts"}, "referrals": [Referral2...]}``.
    *Sandbox inventions*, not Bubblehouse's documented shape: the ``summary`` object (its name
    and fields are a guess from CustomerReferralStats3; Bubblehouse's summary field is not
    legible in its docs), the newest-first order by ``accepted_at`` or else ``sent_at``
    (Bubblehouse documents no order), the masking format (``f***@example.com``; Bubblehouse
    says only "the same anonymization rules as the referral history block") and the ids
    (16 hex digits; real bubbleflakes are opaque strings). Destinations are masked unless
    ``deanonymize`` is true and the token is a shop token or a customer-admin token; otherwise
    ``deanonymize`` is silently ignored. Anonymous: ``{"referrals": []}``.

``Refer2``
    Input ``customer``, ``sender`` (ignored), ``channel``, ``destination``. Refusals
    *(sandbox ids, Bubblehouse documents none)*: 400 ``invalid_channel`` (missing, or not a
    lower-case slug ``[a-z0-9][a-z0-9-]{0,63}``; any such slug is accepted, the enum is open),
    400 ``invalid_destination`` (``email`` without a valid address of at most 254 characters, or
    another channel with a destination), 400 ``self_referral`` (inviting one's own email; the id
    and the rule are *sandbox inventions*), and, while the ``refer_refusal`` rule is set, that
    status, id and shop text (how a shop's eligibility rules would speak).
    Anonymous: 401 ``invalid_token``. Answer: ``{"message", "referral", "share_action"}``.
    Reuse rule: the same customer sending on the same channel to the same destination (email
    case-insensitive; none for other channels) within 5 minutes of an ``invited`` referral gets
    that referral back instead of a new one.

``share_action`` (ReferralShareAction1). *Sandbox invention*: Bubblehouse's page for this type is
not available, so this union is the sandbox's design, and storefront code must treat any other
shape as possible (the broker forwards whatever comes). One of::

    {"type": "none"}                                            email: Bubblehouse sends it
    {"type": "open_url", "url": "...", "link": "..."}           whatsapp (wa.me), twitter (x.com
        intent), facebook (sharer.php), messenger (fb-messenger:), telegram (t.me/share),
        threads (threads.net intent), sms (sms:?&body=)
    {"type": "copy_link", "link": "...", "text": "..."}         instagram, custom-personal,
                                                                custom-social, unknown channels
    {"type": "show_qr_code", "link": "...", "data": "..."}      qr-code; data is the text to
                                                                encode (the link)

``Status2``
    ``{"ok": true, "shop": ..., "token_kind": "shop" | "customer" | "anonymous"}``.

Benchmark mode (``fast``)
    ``CustomerReferrals2`` answers a fixed pre-serialized body of about 2 KB. It still counts the
    call, applies delays and faults and checks version and shop, but it does **not verify the
    token's signature or claims**: it only reads the JWT header and requires ``alg`` HS256 and a
    known ``kid`` (else 401 ``invalid_token``). No input is read, no state is touched and the
    request is not added to ``/_sandbox/requests``. The other functions behave as usual.

Control API under ``/_sandbox/`` (:mod:`broker_dev.sandbox.control`): faults, call counts, the
request log, the day-one settings, syncing customers, moving a referral to ``qualified``,
``approved`` or ``rejected``, and reset. BigCommerce's ``GET /customer/current.jwt`` (for the
broker's ``POST /bigcommerce/token``): :mod:`broker_dev.sandbox.bigcommerce`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker_dev.sandbox.bigcommerce import current_customer_route
from broker_dev.sandbox.config import FALSE, TRUE
from broker_dev.sandbox.config import SandboxConfig as SandboxConfig
from broker_dev.sandbox.config import sandbox_config_from_env as sandbox_config_from_env
from broker_dev.sandbox.control import FUNCTIONS, SandboxState, control_routes
from broker_dev.sandbox.data import (
    CHANNEL_RE,
    EMAIL_RE,
    MAX_EMAIL,
    BubblehouseError,
    Customer,
    SandboxStore,
    share_action,
    share_text,
)
from broker_dev.sandbox.faults import SandboxApp, fault_response
from broker_dev.sandbox.tokens import Caller, bearer, invalid_token, jwt_header, verify_token

LOGGED_HEADERS = ("x-request-id", "traceparent", "content-type", "user-agent")
OBSOLETE_RE = re.compile(r"v(\d{4})\d{3,4}")


# -- the app -------------------------------------------------------------------------------


def _error(exc: BubblehouseError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _check_route(config: SandboxConfig, version: str, shop: str, function: str) -> None:
    if version not in config.versions:
        dated = OBSOLETE_RE.fullmatch(version)
        if dated and int(dated[1]) < 2023:
            raise BubblehouseError(
                400, "obsolete_global_api_version", "This API version is no longer supported."
            )
        raise BubblehouseError(400, "invalid_global_api_version", "No such API version.")
    if shop != config.shop:
        raise BubblehouseError(404, "unknown_shop", "No shop with this slug.")
    if function not in FUNCTIONS:
        raise BubblehouseError(404, "unknown_function", f"No API function {function}.")


async def _read_input(request: Request) -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.query_params)
    raw = await request.body()
    if not raw.strip():
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode("utf-8", "replace")))
    try:
        data = json.loads(raw)
    except ValueError:
        raise BubblehouseError(400, "invalid_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BubblehouseError(400, "invalid_json", "The body must be a JSON object.")
    return data


def _boolean(value: object, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in TRUE + FALSE:
        return value.lower() in TRUE
    raise BubblehouseError(400, "invalid_input", f"{name} must be true or false.")


def _fast_body(shop: str) -> bytes:
    """About 2 KB of CustomerReferrals2 answer, built once."""
    store = SandboxStore(shop, time.time, seed=True)
    history = store.history(store.customer_for_token("demo-bench", None), mask=True)
    rows = history["referrals"]
    history["referrals"] = rows + rows[:2]
    history["summary"]["sent"] += 2
    return json.dumps(history, separators=(",", ":")).encode()


def create_sandbox_app(
    config: SandboxConfig, *, clock: Callable[[], float] = time.time
) -> Starlette:
    """A fresh sandbox; ``clock`` (Unix seconds) dates referrals and drives the reuse rule."""
    state = SandboxState(config, SandboxStore(config.shop, clock, config.seed))
    if config.fast:
        state.fast_body = _fast_body(config.shop)

    def caller_customer(caller: Caller, data: dict[str, Any]) -> Customer:
        identity = data.get("customer")
        if caller.kind == "shop":
            return state.store.resolve(identity, create_demo=state.rules.customers == "any")
        assert caller.customer_id is not None
        rules = state.rules
        if rules.customers == "synced":
            known = state.store.known(caller.customer_id)
            if known is None:
                raise BubblehouseError(
                    404,
                    "no_customers_match_customer_identity",
                    "No customer matches the customer identity.",
                )
        customer = state.store.customer_for_token(caller.customer_id, caller.email)
        if (
            rules.check_email
            and caller.email
            and customer.email
            and caller.email.casefold() != customer.email.casefold()
        ):
            raise BubblehouseError(
                404,
                "customer_identity_partially_mismatches_matched_customer",
                "The customer's email does not match the matched customer.",
            )
        state.store.check_token_identity(identity, customer)
        return customer

    def over_limit(function: str, caller: Caller) -> BubblehouseError | None:
        """Bubblehouse's per-customer, per-second limits, when the rules set them."""
        if caller.kind == "anonymous":
            return None
        kind = "write" if function == "Refer2" else "read"
        limit = state.rules.rate_limit_write if kind == "write" else state.rules.rate_limit_read
        who = caller.customer_id or f"shop:{config.shop}"
        if not state.rates.over(kind, who, limit, clock()):
            return None
        message = f"You are over the {kind} limit per second for this customer"
        return BubblehouseError(429, "rate_limit_exceeded", message)

    def customer_referrals(caller: Caller, data: dict[str, Any]) -> dict[str, Any]:
        deanonymize = _boolean(data.get("deanonymize"), "deanonymize")
        if caller.kind == "anonymous":
            return {"referrals": []}
        customer = caller_customer(caller, data)
        allowed = caller.kind == "shop" or caller.admin
        return state.store.history(customer, mask=not (deanonymize and allowed))

    def refer(caller: Caller, data: dict[str, Any]) -> dict[str, Any]:
        if caller.kind == "anonymous":
            raise invalid_token("Refer2 needs a customer or shop token.")
        customer = caller_customer(caller, data)
        channel = data.get("channel")
        if not isinstance(channel, str) or not CHANNEL_RE.fullmatch(channel):
            raise BubblehouseError(
                400, "invalid_channel", "channel must be a lower-case slug such as email."
            )
        destination = data.get("destination")
        if channel == "email":
            if not isinstance(destination, str) or len(destination) > MAX_EMAIL:
                raise BubblehouseError(
                    400, "invalid_destination", "The email channel needs an email address."
                )
            if not EMAIL_RE.fullmatch(destination):
                raise BubblehouseError(
                    400, "invalid_destination", "destination is not an email address."
                )
            if customer.email and destination.casefold() == customer.email.casefold():
                raise BubblehouseError(400, "self_referral", "You cannot refer yourself.")
        elif destination is not None:
            raise BubblehouseError(
                400, "invalid_destination", "Only the email channel takes a destination."
            )
        refusal = state.rules.refer_refusal
        if refusal is not None:
            raise BubblehouseError(refusal.status, refusal.error_id, refusal.message)
        referral, reused = state.store.refer(customer, channel, destination)
        if channel != "email":
            message = "Your referral link is ready to share."
        elif reused:
            message = f"{destination} was invited a moment ago; the invitation stands."
        else:
            message = f"Your invitation to {destination} is on its way."
        text = share_text(config.shop, referral.link)
        return {
            "message": message,
            "referral": referral.to_json(),
            "share_action": share_action(channel, referral.link, text),
        }

    def status(caller: Caller, data: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "shop": config.shop, "token_kind": caller.kind}

    handlers: dict[str, Callable[[Caller, dict[str, Any]], dict[str, Any]]] = {
        "CustomerReferrals2": customer_referrals,
        "Refer2": refer,
        "Status2": status,
    }

    async def fast_referrals(request: Request, version: str, shop: str) -> Response:
        """Benchmark mode: header-only token check, fixed body."""
        if state.faults.faults:
            fault = state.faults.take("CustomerReferrals2")
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                answer = fault_response(fault, "CustomerReferrals2")
                if answer is not None:
                    return answer
        try:
            _check_route(config, version, shop, "CustomerReferrals2")
            token = bearer(request.headers.get("authorization"))
            if token is None:
                return JSONResponse({"referrals": []})
            jwt_header(token, config.keys)
        except BubblehouseError as exc:
            return _error(exc)
        return Response(state.fast_body, media_type="application/json")

    async def api(request: Request) -> Response:
        params = request.path_params
        version, shop, function = params["version"], params["shop"], params["function"]
        state.calls[function] = state.calls.get(function, 0) + 1
        if config.delay:
            await asyncio.sleep(config.delay)
        if config.fast and function == "CustomerReferrals2" and request.method in ("GET", "POST"):
            return await fast_referrals(request, version, shop)

        data: dict[str, Any] | None = None
        input_error: BubblehouseError | None = None
        try:
            data = await _read_input(request)
        except BubblehouseError as exc:
            input_error = exc
        caller: Caller | None = None
        token_error: BubblehouseError | None = None
        try:
            caller = verify_token(request.headers.get("authorization"), config.keys, config.shop)
        except BubblehouseError as exc:
            token_error = exc
        state.requests.append(
            {
                "function": function,
                "method": request.method,
                "version": version,
                "shop": shop,
                "headers": {h: request.headers[h] for h in LOGGED_HEADERS if h in request.headers},
                "token": "invalid"
                if caller is None
                else ("absent" if caller.kind == "anonymous" else "verified"),
                "jwt": None
                if caller is None or caller.header is None
                else {"header": caller.header, "claims": caller.claims},
                "body": data,
            }
        )

        fault = state.faults.take(function)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            answer = fault_response(fault, function)
            if answer is not None:
                return answer
        try:
            _check_route(config, version, shop, function)
            if request.method not in FUNCTIONS[function]:
                raise BubblehouseError(
                    405,
                    "method_not_allowed",
                    f"{function} answers {' or '.join(FUNCTIONS[function])}.",
                )
            if input_error is not None:
                raise input_error
            if token_error is not None:
                raise token_error
            assert caller is not None
            assert data is not None
            limited = over_limit(function, caller)
            if limited is not None:
                return JSONResponse(limited.body(), status_code=429, headers={"Retry-After": "1"})
            return JSONResponse(handlers[function](caller, data))
        except BubblehouseError as exc:
            return _error(exc)

    async def not_found(request: Request, exc: Exception) -> Response:
        # Registered for HTTPException only, which routing raises with 404 or 405.
        assert isinstance(exc, HTTPException)
        error_id = "method_not_allowed" if exc.status_code == 405 else "not_found"
        return JSONResponse({"id": error_id}, status_code=exc.status_code)

    routes = [
        Route(
            "/api/{version}/{shop}/{function}",
            api,
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        ),
        current_customer_route(config.bigcommerce, clock),
        *control_routes(state),
    ]
    return SandboxApp(routes=routes, exception_handlers={HTTPException: not_found})
