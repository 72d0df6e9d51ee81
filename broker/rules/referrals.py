"""The rules of reading and sending referrals, free of any web framework.

:class:`Referrals` is what the two API routes call once a request is authenticated and its input
decoded: a read is counted against the customer's read limit, answered from the near tier, the
Redis cache, a collapsed flight or Bubblehouse (stale when Bubblehouse fails); a send is
counted against the write limit, run at most once per ``Idempotency-Key``, and invalidates the
customer's history everywhere, handing back the ``Consistency-Token`` that proves it
(:mod:`broker.rules.consistency`). A read showing a genuine token is counted and collapsed like
any other: the token only decides how old an answer may be.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from broker.cache.cache import CacheKey, ReferralCache, Served
from broker.config.settings import Settings
from broker.errors import BrokerError, RateLimitExceeded, UpstreamRateLimited, problem_body
from broker.rules.consistency import ConsistencyTokens, FreshReads, Proof
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
    _tokens: ConsistencyTokens = field(init=False)
    _fresh: FreshReads = field(init=False)

    def __post_init__(self) -> None:
        self._shop = self.settings.shop
        self._tokens = ConsistencyTokens(self.settings)
        self._fresh = FreshReads(keep=self.settings.cache_ttl)

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
        consistency: str | None = None,
    ) -> tuple[Served, Decision | None]:
        """The customer's referral list and the read limit's decision (raises on refusal).

        ``consistency`` is the request's ``Consistency-Token``: when the broker issued it for
        this customer, nothing older than that send is served."""
        key = CacheKey(version, self._shop, customer.id, False)
        scope = customer_scope(key.shop, key.customer)
        proof = self._tokens.verify(consistency, key.shop, key.customer)
        limit = self.settings.rate_limit_read
        local = self.local_limits
        decision: Decision | None = None
        try:
            if local is not None and limit is not None:
                decision = local.hit("read", scope_prefix(scope), limit)
            elif proof is not None and limit is not None:
                # Counted here, not in the cache's script: a token read may be answered by the
                # near tier or by Bubblehouse, neither of which counts.
                decision = await self.limiter.hit("read", scope, limit)
        except RateLimitExceeded:
            self.metrics.count_rate_limited("read")
            raise

        async def load() -> bytes:
            return await self.call(info, customer, version, READ, payload)

        counted = local is not None or proof is not None
        try:
            if proof is not None and self._must_load(proof):
                served = await self._fresh_read(key, proof, load)
            else:
                # With the limit counted here, nothing is counted in Redis, and the cache
                # answers from its near tier first (no round trip).
                served = await self.cache.read(
                    key,
                    load,
                    limit=None if counted else limit,
                    min_gen=None if proof is None else proof.gen,
                )
        except RateLimitExceeded as error:
            if not isinstance(error, UpstreamRateLimited):
                self.metrics.count_rate_limited("read")  # the broker's own limit
            raise
        info.cache = served.outcome
        self.metrics.count_cache(served.outcome)
        return served, served.rate or decision

    def _must_load(self, proof: Proof) -> bool:
        """Whether only Bubblehouse can answer a token read: Redis never heard of the send, or
        Redis is away (another instance may hold an older list in its memory)."""
        caching = self.settings.cache_ttl > 0
        return caching and (proof.gen is None or self.cache.store.state == "down")

    async def _fresh_read(
        self, key: CacheKey, proof: Proof, load: Callable[[], Awaitable[bytes]]
    ) -> Served:
        """A list loaded after the token's send, collapsed with every other such read."""
        scope = customer_scope(key.shop, key.customer)
        body, how = await self._fresh.read((scope, key.version), proof.sent_ms, load)
        if how == "hit":
            return Served(body, "broker; hit; detail=consistency", "hit", None)
        if how == "collapsed":
            return Served(
                body, "broker; fwd=miss; collapsed; detail=consistency", "collapsed", None
            )
        return Served(body, "broker; fwd=miss; detail=consistency", "bypass", None)

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
            gen = await self.cache.invalidate(customer.shop, customer.id)
            self._fresh.drop(scope, self.settings.api_versions)
            token = self._tokens.issue(customer.shop, customer.id, gen)
            return StoredResponse(
                200, {"Content-Type": "application/json", "Consistency-Token": token}, body
            )

        if idempotency_key is None:
            return Sent(await action(), False, rate[0] if rate else None)
        stored, replayed = await self.idempotency.run(scope, idempotency_key, fingerprint, action)
        return Sent(stored, replayed, rate[0] if rate else None)
