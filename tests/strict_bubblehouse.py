"""A strict Bubblehouse look-alike for tests: only what bubblehouse-api.md documents, nothing more.

Unlike the sandbox it invents nothing: no ``summary``, no share-action union, no
``self_referral``, no masking format, no order. It knows only the customers a test syncs,
answers only CustomerReferrals2 and Refer2 with the documented fields and error ids (section 6),
and whatever a test scripts where the documentation leaves things open (an eligibility refusal's
id and shop text, the ``share_action`` object, extra top-level members). It verifies tokens as
section 2 describes and records what it was sent.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

VERSION = "v2023061"
FUNCTIONS = {"CustomerReferrals2": ("GET", "POST"), "Refer2": ("POST",)}


class Refused(Exception):
    def __init__(self, status: int, body: dict[str, str]) -> None:
        self.status = status
        self.body = body


def answer(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@dataclass
class StrictBubblehouse:
    """State and script of one strict upstream; :meth:`app` serves it."""

    shop: str
    keys: dict[str, bytes]
    customers: dict[str, str | None] = field(default_factory=dict)  # shopid -> email
    referrals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    extra_members: dict[str, Any] = field(default_factory=dict)  # added to CustomerReferrals2
    share_action: dict[str, Any] | None = None  # Refer2's, opaque; absent when None
    refusal: tuple[int, dict[str, str]] | None = None  # the next Refer2 answers this
    limited: int = 0  # this many next calls are over the per-second limit (no Retry-After)
    seen: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def sync(self, shopid: str, email: str | None = None) -> None:
        """What the shop's platform integration does: Bubblehouse now knows this customer."""
        self.customers[shopid] = email
        self.referrals.setdefault(shopid, [])

    def _customer(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if kid not in self.keys:
                raise jwt.InvalidTokenError("unknown kid")
            claims = jwt.decode(
                token,
                self.keys[kid],
                algorithms=["HS256"],
                audience="BH",
                options={"require": ["sub"]},
            )
        except jwt.InvalidTokenError:
            raise Refused(401, {"id": "invalid_token", "message": "The token is invalid"}) from None
        self.seen[-1]["claims"] = claims
        shop, _, customer = str(claims["sub"]).partition("/")
        if shop != self.shop or not customer:
            raise Refused(401, {"id": "invalid_token", "message": "The token is invalid"})
        if customer not in self.customers:
            raise Refused(404, {"id": "no_customers_match_customer_identity"})
        known, given = self.customers[customer], claims.get("ce")
        if known and given and known.casefold() != str(given).casefold():
            raise Refused(404, {"id": "customer_identity_partially_mismatches_matched_customer"})
        return customer

    def _read(self, customer: str) -> dict[str, Any]:
        return {"referrals": list(self.referrals[customer]), **self.extra_members}

    def _refer(self, customer: str, data: dict[str, Any]) -> dict[str, Any]:
        if self.refusal is not None:
            status, body = self.refusal
            self.refusal = None
            raise Refused(status, body)
        bhid = f"{next(self._ids):016x}"
        row = {
            "referral_bhid": bhid,
            "acceptance_bhid": None,
            "channel": data.get("channel"),
            "destination": data.get("destination"),
            "status": "invited",
            "link": f"https://{self.shop}.example/ref/{bhid}",
            "sent_at": "2026-11-30T10:00:00Z",
        }
        self.referrals[customer].append(row)
        result: dict[str, Any] = {"referral": row}
        if self.share_action is not None:
            result["share_action"] = self.share_action
        return result

    def app(self) -> Starlette:
        async def api(request: Request) -> Response:
            version, shop = request.path_params["version"], request.path_params["shop"]
            function = request.path_params["function"]
            raw = await request.body()
            self.seen.append({"function": function, "body": orjson.loads(raw) if raw else None})
            if version != VERSION:
                return answer(400, {"id": "invalid_global_api_version"})
            if shop != self.shop or request.method not in FUNCTIONS.get(function, ()):
                return Response(status_code=404)
            if self.limited:
                self.limited -= 1
                kind = "write" if function == "Refer2" else "read"
                message = f"You are over the {kind} limit per second for this customer"
                return answer(429, {"id": "rate_limit_exceeded", "message": message})
            try:
                customer = self._customer(request)
                data = self.seen[-1]["body"] or {}
                if function == "Refer2":
                    return answer(200, self._refer(customer, data))
                return answer(200, self._read(customer))
            except Refused as refused:
                return answer(refused.status, refused.body)

        return Starlette(
            routes=[Route("/api/{version}/{shop}/{function}", api, methods=["GET", "POST"])]
        )
