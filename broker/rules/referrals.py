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
from broker.rules.functions import READ, WRITE, Function, cached_entries
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
    _tokens: ConsistencyTokens = field(init=False)
    _fresh: FreshReads = field(init=False)
    _entries: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = ConsistencyTokens(self.settings)
        self._fresh = FreshReads(keep=self.settings.cache_ttl)
        # What FreshReads keys a customer's lists by: each cached function at each version.
        self._entries = tuple(f"{f}:{v}" for f, v in cached_entries(self.settings.api_versions))

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
                shop=customer.shop,
                # Keys the per-customer back-off (broker.upstream.circuit), shop included.
                customer=customer_scope(customer.shop, customer.id),
                holds_back=function.holds_back,
                refusal_text=function.refusal_text,
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
        consistency: str | None = None,
        function: Function = READ,
    ) -> tuple[Served, Decision | None]:
        """The customer's answer of a read ``function`` (the referral list) and its limit's
        decision (raises on refusal).

        ``consistency`` is the request's ``Consistency-Token``: when the broker issued it for
        this customer, nothing older than that send is served."""
        key = CacheKey(function.name, version, customer.shop, customer.id)
        scope = customer_scope(key.shop, key.customer)
        proof = self._tokens.verify(consistency, key.shop, key.customer)
        # Strict limits are counted by the cache's script, in the lookup's round trip; otherwise
        # here (synchronised limits, and a token read, which the near tier or Bubblehouse may
        # answer, neither of which counts).
        in_script = self.limits.in_script(function.limit) if proof is None else None
        decision: Decision | None = None
        if in_script is None:
            decision = await self.limits.hit(function.limit, scope)

        async def load() -> bytes:
            return await self.call(info, customer, version, function, payload)

        try:
            if proof is not None and self._must_load(proof):
                served = await self._fresh_read(key, proof, load)
            else:
                served = await self.cache.read(
                    key, load, limit=in_script, min_gen=None if proof is None else proof.gen
                )
        except RateLimitExceeded as error:
            if not isinstance(error, UpstreamRateLimited):
                self.limits.refused(function.limit)  # the broker's own limit, in the script
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
        entry = f"{key.function}:{key.version}"
        body, how = await self._fresh.read((scope, entry), proof.sent_ms, load)
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
            gen = await self.cache.invalidate(customer.shop, customer.id)
            self._fresh.drop(scope, self._entries)
            token = self._tokens.issue(customer.shop, customer.id, gen)
            return StoredResponse(
                200, {"Content-Type": "application/json", "Consistency-Token": token}, body
            )

        if idempotency_key is None:
            return Sent(await action(), False, rate[0] if rate else None)
        stored, replayed = await self.idempotency.run(scope, idempotency_key, fingerprint, action)
        return Sent(stored, replayed, rate[0] if rate else None)
