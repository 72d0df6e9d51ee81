"""Prometheus metrics of the broker: requests, upstream calls, Redis, cache, limits, breakers.

One :class:`Metrics` per app, built by the app factory (nothing is created at import). Each
instance owns its :class:`~prometheus_client.CollectorRegistry`. When ``PROMETHEUS_MULTIPROC_DIR``
is set (several worker processes), values are written to files in that directory and
:meth:`Metrics.render` merges every worker's files, so any worker answers ``/metrics`` for all.

Every label takes a bounded set of values: route templates (never raw paths), methods, status
codes, error ids (the broker's own and Bubblehouse's documented ones; any other id Bubblehouse
invents is counted as ``other``), and the fixed outcome, policy, breaker and state names below.

States are read when they are reported, not when they change: the functions given to
:meth:`Metrics.watch` (the circuit's state, Redis's) run at every flush, so the gauges are true
at the scrape (this worker's exactly, the others' as of their last second) with no traffic.
``broker_build_info`` and the ``process_*`` metrics (per worker, by ``pid``, in multi-process
mode: :mod:`broker.telemetry.processes`) are computed at the scrape.

The observations requests make (the request, the cache outcome, each call to Bubblehouse and
each Redis round trip) are tallied in plain dicts and handed to prometheus_client by
:meth:`Metrics.flush`: once a second by the app's background task, and before every render.
A prometheus_client update costs microseconds (a lock, and in multi-process mode a write to a
memory-mapped file, per value); a tally costs a dict increment. A scrape sees this worker's
numbers up to date and the other workers' numbers at most a second old.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from broker import __version__
from broker.errors import BrokerError
from broker.telemetry.processes import BuildInfo, WorkerProcesses

CACHE_OUTCOMES = ("hit", "miss", "stale", "collapsed", "bypass")
RATE_LIMIT_POLICIES = ("read", "write", "issuer")
BREAKERS = ("redis", "upstream")
BREAKER_STATES = ("closed", "open", "half_open")
# Any other method a client sends is counted as "other": the method comes straight off the wire.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Bubblehouse's documented 4xx ids (spec 4); with the broker's own ids, the error_id values.
UPSTREAM_ERROR_IDS = (
    "missing_customer_identity",
    "empty_customer_identity",
    "no_customers_match_customer_identity",
    "customer_identity_partially_mismatches_matched_customer",
    "customer_identity_does_not_match_token",
)
OTHER = "other"


def known_error_ids() -> frozenset[str]:
    """Every error id a request can be counted under besides ``other``."""
    found: set[str] = set(UPSTREAM_ERROR_IDS)
    classes: list[type] = [BrokerError]
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        ident = cls.__dict__.get("id")
        if isinstance(ident, str):
            found.add(ident)
    return frozenset(found)


def multiprocess_dir() -> str | None:
    """The shared metrics directory when running several workers, else ``None``."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The broker's metrics; every ``observe_*``/``count_*``/``set_*`` call is a few dict hits."""

    def __init__(self) -> None:
        self._multiproc_dir = multiprocess_dir()
        if self._multiproc_dir is not None and not getattr(
            values.ValueClass, "_multiprocess", False
        ):
            # prometheus_client picks its value class when it is first imported; a server that
            # sets the directory later (before forking its workers) would otherwise write nowhere.
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._error_ids = known_error_ids()
        self._shops: frozenset[str] | None = None
        self._build = BuildInfo(__version__)
        if self._multiproc_dir is None:
            registry.register(self._build)
            ProcessCollector(registry=registry)
        self._requests = Counter(
            "broker_requests_total",
            "Requests answered by the broker, by route template, method, status, error id and "
            "shop (a configured shop, or empty).",
            ("route", "method", "status", "error_id", "shop"),
            registry=registry,
        )
        self._request_seconds = Histogram(
            "broker_request_duration_seconds",
            "Time from request received to response sent, by route template.",
            ("route",),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._upstream = Counter(
            "broker_upstream_requests_total",
            "Calls to Bubblehouse, by function, outcome and HTTP status (empty when none).",
            ("function", "outcome", "status"),
            registry=registry,
        )
        self._upstream_seconds = Histogram(
            "broker_upstream_duration_seconds",
            "Duration of calls to Bubblehouse, by function.",
            ("function",),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._redis_seconds = Histogram(
            "broker_redis_duration_seconds",
            "Duration of Redis round trips, by operation.",
            ("operation",),
            buckets=REDIS_BUCKETS,
            registry=registry,
        )
        self._cache = Counter(
            "broker_cache_total",
            "Referral-list cache lookups, by outcome (hit, miss, stale, collapsed, bypass).",
            ("outcome",),
            registry=registry,
        )
        self._rate_limited = Counter(
            "broker_rate_limited_total",
            "Requests refused by the broker's own rate limits, by policy (read, write, issuer).",
            ("policy",),
            registry=registry,
        )
        self._breaker = Gauge(
            "broker_breaker_state",
            "Circuit breaker state, one-hot: 1 for the current state of each breaker.",
            ("name", "state"),
            registry=registry,
            # Each worker has its own breakers; across workers, 1 means "some live worker is in
            # this state", which is what an alert on state="open" wants.
            multiprocess_mode="livemax",
        )
        self._fallbacks = Counter(
            "broker_store_fallback_total",
            "Store operations answered from process memory although Redis is configured "
            "(Redis down, refusing writes, or a key that stayed bad).",
            registry=registry,
        )
        self._writable = Gauge(
            "broker_redis_writable",
            "1 when Redis accepts writes, 0 while it is down or refusing them (a failover, "
            "memory full); across workers, the lowest.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._watchers: list[Callable[[], None]] = []
        self._states: dict[str, str] = {}
        self._fallbacks_seen = 0
        self._writable_now: bool | None = None
        # Children are looked up in plain dicts: prometheus_client's labels() takes a lock and
        # re-stringifies every value on each call, which dominates the cost on the hot path.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._cache_children = {o: self._cache.labels(o) for o in CACHE_OUTCOMES}
        self._limit_children = {p: self._rate_limited.labels(p) for p in RATE_LIMIT_POLICIES}
        self._breaker_children = {
            (n, s): self._breaker.labels(n, s) for n in BREAKERS for s in BREAKER_STATES
        }
        # Tallies not yet handed to prometheus_client (see flush): counter child and count;
        # histogram child, count per bucket (the last: above every bound) and sum of seconds.
        self._counts: dict[tuple[Any, ...], list[Any]] = {}
        self._times: dict[tuple[Any, ...], list[Any]] = {}
        self._cache_counts: dict[str, int] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _count(self, counter: Any, labels: tuple[str, ...]) -> None:
        key = (id(counter), *labels)
        tally = self._counts.get(key)
        if tally is None:
            self._counts[key] = [self._child(counter, *labels), 1]
        else:
            tally[1] += 1

    def _time(self, histogram: Any, bounds: tuple[float, ...], label: str, seconds: float) -> None:
        key = (id(histogram), label)
        tally = self._times.get(key)
        if tally is None:
            tally = self._times[key] = [self._child(histogram, label), [0] * (len(bounds) + 1), 0.0]
        tally[1][bisect.bisect_left(bounds, seconds)] += 1
        tally[2] += seconds

    def limit_shops(self, slugs: frozenset[str]) -> None:
        """The values the ``shop`` label may take besides empty: the configured shops."""
        self._shops = slugs

    def observe_request(
        self,
        *,
        route: str,
        method: str,
        status: int,
        error_id: str | None,
        seconds: float,
        shop: str = "",
    ) -> None:
        """One answered request; ``route`` is the route template (or a fixed name for 404s),
        ``shop`` the configured shop it was for (empty when none; anything else is ``other``)."""
        if shop and self._shops is not None and shop not in self._shops:
            shop = OTHER
        if method not in METHODS:
            method = OTHER
        if error_id is None:
            error_id = ""
        elif error_id not in self._error_ids:
            error_id = OTHER  # an id Bubblehouse made up: one series, however many it invents
        self._count(self._requests, (route, method, str(status), error_id, shop))
        self._time(self._request_seconds, REQUEST_BUCKETS, route, seconds)

    def observe_upstream(
        self, *, function: str, outcome: str, status: int | None, seconds: float
    ) -> None:
        """One call to Bubblehouse; ``status`` is ``None`` when no answer came back."""
        self._count(self._upstream, (function, outcome, "" if status is None else str(status)))
        self._time(self._upstream_seconds, REQUEST_BUCKETS, function, seconds)

    def observe_redis(self, *, operation: str, seconds: float) -> None:
        """One Redis round trip (a pipeline or script counts once)."""
        self._time(self._redis_seconds, REDIS_BUCKETS, operation, seconds)

    def watch(self, refresh: Callable[[], None]) -> None:
        """Run ``refresh`` at every flush (and so before every scrape): it reports live states
        with :meth:`set_breaker`, :meth:`set_redis_writable`, :meth:`set_store_fallbacks`."""
        self._watchers.append(refresh)
        refresh()

    def flush(self) -> None:
        """Hand the tallies to prometheus_client (in multi-process mode: to this worker's file)."""
        for refresh in self._watchers:
            refresh()
        counts, self._counts = self._counts, {}
        times, self._times = self._times, {}
        caches, self._cache_counts = self._cache_counts, {}
        for child, count in counts.values():
            child.inc(count)
        for child, buckets, total in times.values():
            # prometheus_client keeps one value per bucket (plus +Inf last) and the sum.
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)
            child._sum.inc(total)
        for outcome, count in caches.items():
            self._cache_children[outcome].inc(count)

    async def run(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds, until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval)
                self.flush()
        finally:
            self.flush()

    def count_cache(self, outcome: str) -> None:
        """One cache lookup: hit, miss, stale, collapsed or bypass."""
        if outcome not in self._cache_children:
            raise ValueError(f"unknown cache outcome {outcome!r}")
        self._cache_counts[outcome] = self._cache_counts.get(outcome, 0) + 1

    def count_rate_limited(self, policy: str) -> None:
        """One request refused by the broker's own limit: read, write or issuer."""
        child = self._limit_children.get(policy)
        if child is None:
            raise ValueError(f"unknown rate-limit policy {policy!r}")
        child.inc()

    def set_breaker(self, name: str, state: str) -> None:
        """The breaker ``name`` (redis, upstream) is now in ``state`` (closed, open, half_open)."""
        if (name, state) not in self._breaker_children:
            raise ValueError(f"unknown breaker {name!r} or state {state!r}")
        if self._states.get(name) == state:
            return  # unchanged: no write to the worker's file
        self._states[name] = state
        for other in BREAKER_STATES:
            self._breaker_children[(name, other)].set(1 if other == state else 0)

    def set_redis_writable(self, writable: bool) -> None:
        """Whether Redis accepts this worker's writes now."""
        if writable != self._writable_now:
            self._writable_now = writable
            self._writable.set(1 if writable else 0)

    def set_store_fallbacks(self, total: int) -> None:
        """The store's running total of fallbacks; the counter takes what is new since the last
        call."""
        if total > self._fallbacks_seen:
            self._fallbacks.inc(total - self._fallbacks_seen)
        self._fallbacks_seen = total

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        self.flush()
        if self._multiproc_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiproc_dir)  # type: ignore[no-untyped-call]  # untyped upstream
        merged.register(self._build)
        merged.register(WorkerProcesses(self._multiproc_dir))
        return generate_latest(merged), CONTENT_TYPE_PLAIN_0_0_4

    def process_exiting(self) -> None:
        """In multi-process mode, drop this worker's live gauges so they stop counting."""
        self.flush()
        if self._multiproc_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self._multiproc_dir)  # type: ignore[no-untyped-call]  # untyped upstream
