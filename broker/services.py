"""The resources of one broker process, built together and closed together.

:func:`running` opens everything a request needs (the upstream client, the store, the cache and
its near tier, the limits, the idempotency keys, the read and send rules) and yields one fully
built :class:`Services`; the app's lifespan yields it as the lifespan :class:`State`, which the
server hands to every request (``scope["state"]``, read by :func:`services_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import structlog

from broker.cache.cache import ReferralCache
from broker.cache.near import Invalidations, NearCache
from broker.config.lifetimes import Lifetimes
from broker.config.settings import Settings
from broker.errors import NotReady
from broker.rules.functions import READ, cached_entries
from broker.rules.referrals import Referrals
from broker.rules.tokens import TokenMinter, TokenVerifier
from broker.store.idempotency import Idempotency
from broker.store.keys import LOG_KEY
from broker.store.limits import Limits, LocalLimits
from broker.store.shared import shared_secret
from broker.store.store import Store, open_store
from broker.tasks import stop
from broker.telemetry.logs import hash_key
from broker.telemetry.metrics import Metrics
from broker.telemetry.tracing import Tracing
from broker.upstream.client import Upstream
from broker.upstream.transport import Transport

log = structlog.get_logger("broker.services")
# How long start-up waits for the near tier's first subscription while Redis answers (seconds).
NEAR_START_WAIT = 1.0
WRITES_REFUSED_SECONDS = 5.0  # Redis counts as refusing writes this long after a refusal


@dataclass
class Services:
    """Everything a handler needs, created once per process."""

    settings: Settings
    minter: TokenMinter
    verifier: TokenVerifier
    metrics: Metrics
    log_key: bytes
    upstream: Upstream
    store: Store
    cache: ReferralCache
    limits: Limits
    idempotency: Idempotency
    referrals: Referrals
    tracing: Tracing | None = None  # None when span export is off
    ready: bool = True  # False once the process is stopping


class State(TypedDict):
    """The app's lifespan state: what the server copies into every request's ``scope["state"]``."""

    services: Services


def services_of(scope: Mapping[str, Any]) -> Services:
    """The request's :class:`Services` (from the lifespan state), or :class:`NotReady` (503)
    when the app runs without its lifespan."""
    try:
        services: Services = scope["state"]["services"]
    except KeyError:
        raise NotReady() from None
    return services


def watch(upstream: Upstream, store: Store, metrics: Metrics) -> None:
    """Report the breakers' and Redis's states to the metrics as they are at each flush (so at
    each scrape, with or without traffic), and Redis round-trip times as they happen."""

    def refresh() -> None:
        metrics.set_breaker("upstream", upstream.breaker.state)
        if store.state == "memory":
            return
        up = store.state == "up"
        metrics.set_breaker("redis", "closed" if up else "open")
        refused = store.writes_refused_at
        metrics.set_redis_writable(
            up and (refused is None or time.monotonic() - refused > WRITES_REFUSED_SECONDS)
        )
        metrics.set_store_fallbacks(store.fallbacks)

    metrics.watch(refresh)
    store.timing = lambda op, seconds: metrics.observe_redis(operation=op, seconds=seconds)


def cache_for(settings: Settings, store: Store, near: NearCache | None = None) -> ReferralCache:
    """The referral cache of ``settings`` on ``store`` (every cached function and version)."""
    return ReferralCache(
        store,
        Lifetimes.of(settings),
        cached_entries(settings.api_versions),
        near=near,
        limit_policy=READ.limit,
    )


def build(
    settings: Settings,
    store: Store,
    upstream: Upstream,
    metrics: Metrics,
    *,
    near: NearCache | None = None,
    local: LocalLimits | None = None,
    tracing: Tracing | None = None,
    log_secret: bytes | None = None,
) -> Services:
    """Every piece of one process, wired from the settings and the opened resources (no I/O,
    no background work: :func:`running` adds those). Tests that wire services by hand call it."""
    lifetimes = Lifetimes.of(settings)
    minter = TokenMinter(settings)
    cache = cache_for(settings, store, near)
    limits = Limits(
        store,
        {
            "read": settings.rate_limit_read,
            "write": settings.rate_limit_write,
            "issuer": settings.rate_limit_issuer,
        },
        metrics.count_rate_limited,
        local,
    )
    idempotency = Idempotency(store, lifetimes)
    return Services(
        settings=settings,
        minter=minter,
        verifier=TokenVerifier(settings),
        metrics=metrics,
        # Customer hashes in logs: keyed by the secret the instances share in Redis, so that a
        # customer has one hash on every instance and across signing-key rotations; without
        # Redis (one process), by the signing secret.
        log_key=hash_key(log_secret or settings.first_shop.signing_key.secret.reveal()),
        upstream=upstream,
        store=store,
        cache=cache,
        limits=limits,
        idempotency=idempotency,
        referrals=Referrals(
            settings=settings,
            minter=minter,
            upstream=upstream,
            cache=cache,
            limits=limits,
            idempotency=idempotency,
            metrics=metrics,
            tracing=tracing,
        ),
        tracing=tracing,
    )


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    metrics: Metrics,
    tracing: Tracing,
    upstream_transport: Transport | None = None,
    store: Store | None = None,
) -> AsyncIterator[Services]:
    """Open every resource, yield the services, and close everything on the way out.

    A ``store`` given by the caller (tests) is used and left open; otherwise one is opened for
    ``REDIS_URL`` (or process memory). Background work (metrics flushing, the near tier's
    subscription, the limits' pushes) runs while the services are yielded.
    """
    upstream = Upstream.create(settings, upstream_transport)
    own_store = store is None
    opened = store if store is not None else await open_store(settings)
    watch(upstream, opened, metrics)
    background: list[asyncio.Task[None]] = [
        asyncio.create_task(metrics.run(), name="metrics-flush")
    ]
    near = None
    if opened.redis is not None and settings.near_cache_mb > 0 and settings.redis_url:
        near = NearCache(
            cached_entries(settings.api_versions), max_bytes=settings.near_cache_mb << 20
        )
        tier = near
        tier.set_store_up(opened.state == "up")
        opened.on_state_change(lambda state: tier.set_store_up(state == "up"))
        listener = Invalidations(opened, tier, settings.redis_url.reveal())
        background.append(asyncio.create_task(listener.run(), name="near-invalidations"))
        if tier.store_up:
            # Serve with the tier from the first request when Redis answers; never wait long.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(NEAR_START_WAIT):
                    await tier.is_live.wait()
    local_limits = None
    if settings.rate_limit_sync > 0:
        local_limits = LocalLimits(opened, settings.rate_limit_sync)
        background.append(asyncio.create_task(local_limits.run(), name="limit-sync"))
    services = build(
        settings,
        opened,
        upstream,
        metrics,
        near=near,
        local=local_limits,
        tracing=tracing if tracing.enabled else None,
        log_secret=await shared_secret(opened, LOG_KEY),
    )
    if len(settings.shops) == 1:
        only = settings.first_shop
        log.info(
            "keys.loaded",
            shop=only.slug,
            signing_kid=only.signing_key.kid,
            verifying_kids=[key.kid for key in only.signing_keys],
            issuer_count=len(only.issuer_keys),
        )
    else:
        # One line, whatever the number of shops (a line per shop would flood at 1,000).
        log.info("keys.loaded", shops=len(settings.shops), shops_file=settings.shops_file)
    log.info(
        "broker.started",
        shop=settings.first_shop.slug if len(settings.shops) == 1 else None,
        shops=len(settings.shops),
        store=opened.state,
    )
    try:
        yield services
    finally:
        services.ready = False
        await stop(background)
        if local_limits is not None:
            with contextlib.suppress(Exception):
                await local_limits.sync()  # the last counts reach the others
        await upstream.aclose()
        if own_store:
            await opened.aclose()
        metrics.process_exiting()
        # Flushing may wait on the collector: off the event loop.
        await asyncio.to_thread(tracing.shutdown)
        log.info("broker.stopped")
