"""The Bubblehouse functions the broker serves, one record each.

Everything that differs between ``CustomerReferrals2`` and ``Refer2`` is written here, once:
the routes (:func:`route`), the methods each answers, the input each takes, the rule that
handles it, whether its answers are cached, the limit its calls count against, and whether a
refusal from Bubblehouse holds the customer back. The app's routes, the allowed set of the
CORS preflights, the upstream back-off, the OpenAPI operations and the cache keys are all built
from :data:`FUNCTIONS`; nothing else names a function.

Adding a third function is one record here (with a rule that exists: ``read`` for an answer
that can be cached and collapsed, ``send`` for a call with effects), its input declaration in
:mod:`broker.rules.inputs`, its OpenAPI words in :mod:`broker.openapi._operations`, and the
sandbox's handler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from broker.rules import inputs
from broker.rules.fields import Body
from broker.rules.tokens import Customer

Rule = Literal["read", "send"]


@dataclass(frozen=True, slots=True)
class Function:
    """One Bubblehouse function as the broker serves it to browsers."""

    name: str  # Bubblehouse's name: the last segment of /api/<version>/<shop>/<name>
    methods: tuple[str, ...]  # what browsers may call it with (OPTIONS is added for CORS)
    body: Body  # its input, declared once (validation and OpenAPI schema)
    check: Callable[[dict[str, Any], Customer], dict[str, Any]]  # input -> what goes upstream
    rule: Rule  # read: cached, limited, collapsed; send: limited, idempotent, invalidating
    cached: bool  # answers kept in the referral cache (only for the read rule)
    limit: str  # the limit policy its calls count against (BROKER_RATE_LIMIT_<POLICY>)
    holds_back: bool  # a Bubblehouse refusal is repeated to the customer for the back-off
    refusal_text: bool  # a refusal's message (the shop's words for shoppers) is passed on
    query: bool = False  # GET may carry the input as a query string

    @property
    def route(self) -> str:
        """The route template, as the app, the OpenAPI document and the logs write it."""
        return f"/api/{{version}}/{{shop}}/{self.name}"

    @property
    def allowed(self) -> tuple[str, ...]:
        """The methods of its route, the CORS preflight included."""
        return (*self.methods, "OPTIONS")


READ = Function(
    name="CustomerReferrals2",
    methods=("GET", "POST"),
    body=inputs.CUSTOMER_REFERRALS2,
    check=inputs.referrals_input,
    rule="read",
    cached=True,
    limit="read",
    # A read has no input that could make the next answer differ: say the same again.
    holds_back=True,
    refusal_text=False,  # never from a read (spec 4)
    query=True,
)
WRITE = Function(
    name="Refer2",
    methods=("POST",),
    body=inputs.REFER2,
    check=inputs.refer_input,
    rule="send",
    cached=False,
    limit="write",
    # A refused send is about that send: the next one, to someone else, may pass.
    holds_back=False,
    refusal_text=True,
)
FUNCTIONS: tuple[Function, ...] = (READ, WRITE)
BY_NAME = {function.name: function for function in FUNCTIONS}


def cached_entries(versions: Sequence[str]) -> list[tuple[str, str]]:
    """(function, version) of every answer the cache may hold for one customer."""
    return [(f.name, version) for f in FUNCTIONS if f.cached for version in versions]
