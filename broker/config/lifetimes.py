"""Every lifetime the broker derives from its settings, computed in one place.

The cache, the idempotency records and the upstream back-off each need lifetimes that follow
from a few settings (the cache's TTLs, the upstream timeout, the back-off). They are derived
here, once, and handed to the pieces that use them, so that the relations between them (a lease
outlives its upstream call; a pending idempotency record outlives every cache entry) are written
down together.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.config.settings import Settings

DAY = 86_400


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Lifetimes in milliseconds (``_ms``) or seconds (``_s``)."""

    fresh_ms: int  # a cached list is served fresh this long (BROKER_CACHE_TTL); 0: no caching
    stale_ms: int  # ...and kept this much longer to be served when Bubblehouse fails
    lease_ms: int  # a fetch's lease: the upstream timeout plus a second, so it outlives the call
    wait_s: float  # a collapsed reader gives up a little after the leader's call would have
    generation_ms: int  # a customer's generation outlives every entry it guards, by a day
    backoff_ms: int  # an upstream refusal holds a customer's calls back (BROKER_UPSTREAM_BACKOFF)
    idempotency_ms: int  # a send's recorded answer is replayed for 24 h (spec 3.3)
    idempotency_wait_s: float  # a repeat waits this long for the first send's outcome
    claim_ms: int  # a claim outlives any upstream call; a crashed owner blocks its key this long
    pending_keep_ms: (
        int  # a pending record outlives every cache entry (volatile-ttl evicts those first)
    )
    # A list read while Redis is down is kept this long at most (spec 5): other processes
    # cannot reach it with their sends' invalidations.
    outage_keep_ms: int = 250

    @classmethod
    def of(cls, settings: Settings) -> Lifetimes:
        fresh, stale, timeout = (
            settings.cache_ttl,
            settings.cache_stale_ttl,
            settings.upstream_timeout,
        )
        claim_s = 120
        return cls(
            fresh_ms=fresh * 1000,
            stale_ms=stale * 1000,
            lease_ms=int((timeout + 1.0) * 1000),
            wait_s=timeout + 0.5,
            generation_ms=(fresh + stale + DAY) * 1000,
            backoff_ms=int(settings.upstream_backoff * 1000),
            idempotency_ms=DAY * 1000,
            idempotency_wait_s=timeout + 2,
            claim_ms=claim_s * 1000,
            pending_keep_ms=max(fresh + stale + 3600, claim_s) * 1000,
        )
