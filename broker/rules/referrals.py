"""The rules of reading and sending referrals, free of any web framework.

:class:`Referrals` is what the two API routes call once a request is authenticated and its input
decoded: a read is counted against the customer's read limit, answered from the near tier, the
Redis cache, a collapsed flight or Bubblehouse (stale when Bubblehouse fails); a send is
counted against the write limit, run at most once per ``Idempotency-Key``, and invalidates the
customer's history everywhere, handing back the ``Consistency-Token`` that proves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from broker.cache.cache import CacheKey, ReferralCache, Served
from broker.config.settings import Settings
from broker.errors import BrokerError, RateLimitExceeded, UpstreamRateLimited, problem_body
from broker.rules.functions import READ, WRITE, Function
from broker.rules.tokens import Customer, TokenMinter
from broker.store.idempotency import Idempotency, StoredResponse
from broker.store.keys import customer_scope
from broker.store.limits import Decision, Limits
from broker.telemetry.metrics import Metrics
from broker.telemetry.request import RequestInfo
from broker.telemetry.tracing import Tracing
from broker.upstream.client import CallInfo, Upstream


@dataclass(frozen=True, slots=True)
class Sent:
    """The answer to a send: stored (or replayed) response and the write limit's headers."""

    response: StoredResponse
    replayed: bool
    rate: Decision | None


@dataclass(repr=False)  # no repr: tracebacks with locals would render every resource
class Referrals:
    """Reads and sends for verified customers; one per process."""

    settings: Settings
    minter: TokenMinter
    upstream: Upstream
    cache: ReferralCache
    limits: Limits
    idempotency: Idempotency
    metrics: Metrics
    tracing: Tracing | None = None
    _shop: str = field(init=False)

    def __post_init__(self) -> None:
        self._shop = self.settings.shop

    async def call(
        self,
        info: RequestInfo,
        customer: Customer,
        version: str,
        function: Function,
        payload: dict[str, Any],
    ) -> bytes:
        """One call to Bubblehouse for ``customer``, recorded in ``info`` and the metrics."""
        call = CallInfo()
        tracing, span, traceparent = self.tracing, None, info.traceparent
        if tracing is not None:
            span, traceparent = tracing.start_upstream(info.span, function.name)
        try:
            return await self.upstream.call(
                version,
                function.name,
                payload,
                self.minter.upstream_token(customer),
                request_id=info.request_id,
                traceparent=traceparent,
                retry_connect=True,
                info=call,
                customer=customer.id,  # keys the per-customer back-off (broker.upstream.circuit)
                holds_back=function.holds_back,
            )
        finally:
            if span is not None and tracing is not None:
                tracing.end_upstream(span, call.status, call.outcome)
            info.upstream_status = call.status
            info.upstream_ms = round(call.seconds * 1000, 2)
            self.metrics.observe_upstream(
                function=function.name,
                outcome=call.outcome,
                status=call.status,
                seconds=call.seconds,
            )

    async def read(
        self,
        info: RequestInfo,
        customer: Customer,
        version: str,
        payload: dict[str, Any],
        min_gen: int | None,
        function: Function = READ,
    ) -> tuple[Served, Decision | None]:
        """The customer's answer of a read ``function`` (the referral list) and its limit's
        decision (raises on refusal)."""
        key = CacheKey(function.name, version, self._shop, customer.id)
        # Strict limits are counted by the cache's script, in the lookup's round trip; otherwise
        # here, and the cache answers from its near tier first (no round trip).
        in_script = self.limits.in_script(function.limit)
        decision: Decision | None = None
        if in_script is None:
            decision = await self.limits.hit(
                function.limit, customer_scope(self._shop, customer.id)
            )

        async def load() -> bytes:
            return await self.call(info, customer, version, function, payload)

        try:
            served = await self.cache.read(key, load, limit=in_script, min_gen=min_gen)
        except RateLimitExceeded as error:
            if not isinstance(error, UpstreamRateLimited):
                self.limits.refused(function.limit)  # the broker's own limit, in the script
            raise
        info.cache = served.outcome
        self.metrics.count_cache(served.outcome)
        return served, served.rate or decision

    async def send(
        self,
        info: RequestInfo,
        customer: Customer,
        version: str,
        payload: dict[str, Any],
        idempotency_key: str | None,
        fingerprint: str,
        function: Function = WRITE,
    ) -> Sent:
        """Send one referral, at most once per idempotency key; invalidate the history."""
        scope = customer_scope(customer.shop, customer.id)
        rate: list[Decision] = []

        async def action() -> StoredResponse:
            decision = await self.limits.hit(function.limit, scope)
            if decision is not None:
                rate.append(decision)
            try:
                body = await self.call(info, customer, version, function, payload)
            except BrokerError as error:
                if not error.reached_upstream or isinstance(error, UpstreamRateLimited):
                    # Never sent (or refused unprocessed by Bubblehouse's limit): free the key.
                    raise
                # Bubblehouse may have sent it: forget the cached history, remember the answer.
                await self.cache.invalidate(customer.shop, customer.id)
                info.error_id = error.id
                return StoredResponse(
                    error.status,
                    {"Content-Type": "application/problem+json", **error.headers()},
                    orjson.dumps(problem_body(error, info.request_id)),
                )
            token = await self.cache.invalidate(customer.shop, customer.id)
            return StoredResponse(
                200, {"Content-Type": "application/json", "Consistency-Token": token}, body
            )

        if idempotency_key is None:
            return Sent(await action(), False, rate[0] if rate else None)
        stored, replayed = await self.idempotency.run(scope, idempotency_key, fingerprint, action)
        return Sent(stored, replayed, rate[0] if rate else None)
