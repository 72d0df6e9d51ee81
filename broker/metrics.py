"""Prometheus metrics of the broker: requests, upstream calls, Redis, cache, limits, breakers.

One :class:`Metrics` per app, built by the app factory (nothing is created at import). Each
instance owns its :class:`~prometheus_client.CollectorRegistry`. When ``PROMETHEUS_MULTIPROC_DIR``
is set (several worker processes), values are written to files in that directory and
:meth:`Metrics.render` merges every worker's files, so any worker answers ``/metrics`` for all.

Every label takes a bounded set of values: route templates (never raw paths), methods, status
codes, error ids, and the fixed outcome, policy, breaker and state names below.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

CACHE_OUTCOMES = ("hit", "miss", "stale", "collapsed", "bypass")
RATE_LIMIT_POLICIES = ("read", "write", "issuer")
BREAKERS = ("redis", "upstream")
BREAKER_STATES = ("closed", "open", "half_open")
# Any other method a client sends is counted as "other": the method comes straight off the wire.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
        self._requests = Counter(
            "broker_requests_total",
            "Requests answered by the broker, by route template, method, status and error id.",
            ("route", "method", "status", "error_id"),
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
        # Children are looked up in plain dicts: prometheus_client's labels() takes a lock and
        # re-stringifies every value on each call, which dominates the cost on the hot path.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._cache_children = {o: self._cache.labels(o) for o in CACHE_OUTCOMES}
        self._limit_children = {p: self._rate_limited.labels(p) for p in RATE_LIMIT_POLICIES}
        self._breaker_children = {
            (n, s): self._breaker.labels(n, s) for n in BREAKERS for s in BREAKER_STATES
        }

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(
        self, *, route: str, method: str, status: int, error_id: str | None, seconds: float
    ) -> None:
        """One answered request; ``route`` is the route template (or a fixed name for 404s)."""
        if method not in METHODS:
            method = "other"
        key = ("r", route, method, status, error_id)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self._requests.labels(route, method, str(status), error_id or ""),
                self._child(self._request_seconds, route),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_upstream(
        self, *, function: str, outcome: str, status: int | None, seconds: float
    ) -> None:
        """One call to Bubblehouse; ``status`` is ``None`` when no answer came back."""
        key = ("u", function, outcome, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self._upstream.labels(function, outcome, "" if status is None else str(status)),
                self._child(self._upstream_seconds, function),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_redis(self, *, operation: str, seconds: float) -> None:
        """One Redis round trip (a pipeline or script counts once)."""
        self._child(self._redis_seconds, operation).observe(seconds)

    def count_cache(self, outcome: str) -> None:
        """One cache lookup: hit, miss, stale, collapsed or bypass."""
        child = self._cache_children.get(outcome)
        if child is None:
            raise ValueError(f"unknown cache outcome {outcome!r}")
        child.inc()

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
        for other in BREAKER_STATES:
            self._breaker_children[(name, other)].set(1 if other == state else 0)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        if self._multiproc_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self._multiproc_dir)  # type: ignore[no-untyped-call]  # untyped upstream
        return generate_latest(merged), CONTENT_TYPE_PLAIN_0_0_4

    def process_exiting(self) -> None:
        """In multi-process mode, drop this worker's live gauges so they stop counting."""
        if self._multiproc_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self._multiproc_dir)  # type: ignore[no-untyped-call]  # untyped upstream
