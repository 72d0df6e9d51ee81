"""The sandbox's state per app instance, and its control API under ``/_sandbox/``.

JSON, no authentication (a development tool, never exposed):

``POST /_sandbox/faults``        add a fault (:mod:`broker_dev.sandbox.faults`); 400
                                 ``invalid_fault`` if malformed. Answers ``{"faults": [...]}``.
``GET``/``DELETE /_sandbox/faults``   list / clear the faults.
``GET /_sandbox/calls``          ``{"CustomerReferrals2": n, "Refer2": n, "Status2": n, ...}``:
                                 every request that reached ``/api/``, refused ones included.
``GET /_sandbox/requests``       ``{"requests": [...]}``, the last 100 API requests, oldest first:
                                 function, method, version, shop, selected headers, ``token``
                                 (``absent``/``verified``/``invalid``), the verified ``jwt``
                                 header and claims (never the raw token), and ``body``.
``DELETE /_sandbox/requests``    forget them.
``GET``/``PUT /_sandbox/settings``    the day-one rules (:mod:`broker_dev.sandbox.config`); PUT
                                 changes the members it names; 400 ``invalid_settings``.
``POST /_sandbox/customers``     ``{"shopid": "...", "email": "..."}``: sync a customer, as the
                                 shop's platform integration would (``email`` optional).
``POST /_sandbox/referrals/{referral_bhid}``   ``{"status": "qualified" | "approved" |
                                 "rejected", "reward_pts": n}``: the referral moves on, as the
                                 shop's approval would move it (``reward_pts`` optional); 404
                                 ``unknown_referral``, 400 ``invalid_status``.
``POST /_sandbox/reset``         forget everything (state, faults, counters, requests, settings);
                                 re-seed.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from broker_dev.sandbox.config import RateCounter, Rules, SandboxConfig
from broker_dev.sandbox.data import SandboxStore
from broker_dev.sandbox.faults import FaultBook, parse_fault

FUNCTIONS: dict[str, tuple[str, ...]] = {
    "CustomerReferrals2": ("GET", "POST"),
    "Refer2": ("POST",),
    "Status2": ("GET", "POST"),
}
REQUEST_LOG_SIZE = 100


@dataclass
class SandboxState:
    config: SandboxConfig
    store: SandboxStore
    rules: Rules = field(init=False)  # the config's rules, until the control API changes them
    rates: RateCounter = field(default_factory=RateCounter)
    faults: FaultBook = field(default_factory=FaultBook)
    calls: dict[str, int] = field(default_factory=dict)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    fast_body: bytes = b""

    def __post_init__(self) -> None:
        self.rules = self.config.rules
        self.reset_calls()

    def reset_calls(self) -> None:
        self.calls.clear()
        self.calls.update(dict.fromkeys(FUNCTIONS, 0))

    def reset(self) -> None:
        self.store.reset()
        self.faults.clear()
        self.requests.clear()
        self.rates.clear()
        self.rules = self.config.rules
        self.reset_calls()


def _refused(error_id: str, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"id": error_id, "message": message}, status_code=status)


async def _json(request: Request) -> object:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise ValueError("the body is not JSON") from None


def control_routes(state: SandboxState) -> list[BaseRoute]:
    """The ``/_sandbox/`` routes over ``state``."""

    async def add_fault(request: Request) -> Response:
        try:
            fault = parse_fault(await _json(request))
        except ValueError as exc:
            return _refused("invalid_fault", str(exc))
        state.faults.add(fault)
        return JSONResponse({"faults": state.faults.to_json()})

    async def list_faults(request: Request) -> Response:
        return JSONResponse({"faults": state.faults.to_json()})

    async def clear_faults(request: Request) -> Response:
        state.faults.clear()
        return JSONResponse({"faults": []})

    async def calls(request: Request) -> Response:
        return JSONResponse(state.calls)

    async def requests(request: Request) -> Response:
        return JSONResponse({"requests": list(state.requests)})

    async def clear_requests(request: Request) -> Response:
        state.requests.clear()
        return JSONResponse({"requests": []})

    async def get_settings(request: Request) -> Response:
        return JSONResponse(state.rules.to_json())

    async def put_settings(request: Request) -> Response:
        try:
            state.rules = state.rules.updated(await _json(request))
        except ValueError as exc:
            return _refused("invalid_settings", str(exc))
        return JSONResponse(state.rules.to_json())

    async def sync_customer(request: Request) -> Response:
        try:
            data = await _json(request)
        except ValueError as exc:
            return _refused("invalid_customer", str(exc))
        shopid = data.get("shopid") if isinstance(data, dict) else None
        email = data.get("email") if isinstance(data, dict) else None
        if not isinstance(shopid, str) or not shopid or "/" in shopid:
            return _refused("invalid_customer", "shopid must be a non-empty string without '/'")
        if email is not None and not isinstance(email, str):
            return _refused("invalid_customer", "email must be a string")
        customer = state.store.sync(shopid, email)
        return JSONResponse(
            {"shopid": customer.shopid, "bhid": customer.bhid, "email": customer.email}
        )

    async def move_referral(request: Request) -> Response:
        try:
            data = await _json(request)
        except ValueError as exc:
            return _refused("invalid_status", str(exc))
        status = data.get("status") if isinstance(data, dict) else None
        reward = data.get("reward_pts") if isinstance(data, dict) else None
        if reward is not None and (isinstance(reward, bool) or not isinstance(reward, int)):
            return _refused("invalid_status", "reward_pts must be a whole number")
        try:
            shopid, row = state.store.change_status(
                request.path_params["referral_bhid"], str(status), reward
            )
        except KeyError:
            return _refused("unknown_referral", "No referral with this referral_bhid.", 404)
        except ValueError as exc:
            return _refused("invalid_status", str(exc))
        return JSONResponse({"customer": shopid, "referral": row.to_json()})

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    return [
        Route("/_sandbox/faults", add_fault, methods=["POST"]),
        Route("/_sandbox/faults", list_faults, methods=["GET"]),
        Route("/_sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/_sandbox/calls", calls, methods=["GET"]),
        Route("/_sandbox/requests", requests, methods=["GET"]),
        Route("/_sandbox/requests", clear_requests, methods=["DELETE"]),
        Route("/_sandbox/settings", get_settings, methods=["GET"]),
        Route("/_sandbox/settings", put_settings, methods=["PUT"]),
        Route("/_sandbox/customers", sync_customer, methods=["POST"]),
        Route("/_sandbox/referrals/{referral_bhid}", move_referral, methods=["POST"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
    ]
