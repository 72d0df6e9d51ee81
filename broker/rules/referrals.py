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
from broker.rules.tokens import Customer, TokenMinter
from broker.store.idempotency import Idempotency, StoredResponse
from broker.store.limits import Decision, Limiter, LocalLimits
from broker.store.store import customer_scope, scope_prefix
from broker.telemetry.metrics import Metrics
from broker.telemetry.tracing import Tracing
from broker.upstream.client import CallInfo, Upstream
from broker.web.requestlog import RequestInfo

READ = "CustomerReferrals2"
WRITE = "Refer2"


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
    limiter: Limiter
    idempotency: Idempotency
    metrics: Metrics
    local_limits: LocalLimits | None = None  # None: strict limits, each request in Redis
    tracing: Tracing | None = None
    _shop: str = field(init=False)

    def __post_init__(self) -> None:
        self._shop = self.settings.shop

    async def call(
        self,
        info: RequestInfo,
        customer: Customer,
        version: str,
        function: str,
        payload: dict[str, Any],
    ) -> bytes:
        """One call to Bubblehouse for ``customer``, recorded in ``info`` and the metrics."""
        call = CallInfo()
        tracing, span, traceparent = self.tracing, None, info.traceparent
        if tracing is not None:
            span, traceparent = tracing.start_upstream(info.span, function)
        try:
            return await self.upstream.call(
                version,
                function,
                payload,
                self.minter.upstream_token(customer),
                request_id=info.request_id,
                traceparent=traceparent,
                retry_connect=True,
                info=call,
                customer=customer.id,  # keys the per-customer back-off (broker.upstream.circuit)
            )
        finally:
            if span is not None and tracing is not None:
                tracing.end_upstream(span, call.status, call.outcome)
            info.upstream_status = call.status
            info.upstream_ms = round(call.seconds * 1000, 2)
            self.metrics.observe_upstream(
                function=function, outcome=call.outcome, status=call.status, seconds=call.seconds
            )

    async def read(
        self,
        info: RequestInfo,
        customer: Customer,
        version: str,
        payload: dict[str, Any],
        min_gen: int | None,
    ) -> tuple[Served, Decision | None]:
        """The customer's referral list and the read limit's decision (raises on refusal)."""
        key = CacheKey(version, self._shop, customer.id, False)
        limit = self.settings.rate_limit_read
        local = self.local_limits
        decision: Decision | None = None
        if local is not None and limit is not None:
            try:
                decision = local.hit(
                    "read", scope_prefix(customer_scope(key.shop, key.customer)), limit
                )
            except RateLimitExceeded:
                self.metrics.count_rate_limited("read")
                raise

        async def load() -> bytes:
            return await self.call(info, customer, version, READ, payload)

        try:
            # With the limit counted here, nothing is counted in Redis, and the cache answers
            # from its near tier first (no round trip).
            served = await self.cache.read(
                key, load, limit=limit if local is None else None, min_gen=min_gen
            )
        except RateLimitExceeded as error:
            if not isinstance(error, UpstreamRateLimited):
                self.metrics.count_rate_limited("read")  # the broker's own limit
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
    ) -> Sent:
        """Send one referral, at most once per idempotency key; invalidate the history."""
        scope = customer_scope(customer.shop, customer.id)
        limit = self.settings.rate_limit_write
        rate: list[Decision] = []

        async def action() -> StoredResponse:
            decision: Decision | None
            try:
                if self.local_limits is not None and limit is not None:
                    decision = self.local_limits.hit("write", scope_prefix(scope), limit)
                else:
                    decision = await self.limiter.hit("write", scope, limit)
            except RateLimitExceeded:
                self.metrics.count_rate_limited("write")
                raise
            if decision is not None:
                rate.append(decision)
            try:
                body = await self.call(info, customer, version, WRITE, payload)
            except BrokerError as error:
                if not error.reached_upstream or isinstance(error, UpstreamRateLimited):
                    # Never sent (or refused unprocessed by Bubblehouse's limit): free the key.
                    raise
                # Bubblehouse may have sent it: forget the cached history, remember the answer.
                await self.cache.invalidate(customer.shop, customer.id)
                info.error_id = error.error_id
                return StoredResponse(
                    error.status_code,
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
