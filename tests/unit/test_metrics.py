"""The broker's Prometheus metrics: names, labels, values, and multiprocess mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import __version__
from broker.telemetry.metrics import BREAKER_STATES, CACHE_OUTCOMES, RATE_LIMIT_POLICIES, Metrics

ROOT = Path(__file__).resolve().parents[2]


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(body: bytes, metric: str, /, **labels: str) -> float | None:
    if metric == "broker_requests_total":
        labels.setdefault("shop", "")  # requests bound to no shop, unless a test names one
    return samples(body).get((metric, frozenset(labels.items())))


def test_render_is_prometheus_text() -> None:
    """render() gives the text format and its content type."""
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE broker_requests_total counter" in body


def test_observe_request() -> None:
    """A request counts by route, method, status and error id, and is timed by route."""
    metrics = Metrics()
    route = "/api/{version}/{shop}/CustomerReferrals2"
    metrics.observe_request(route=route, method="GET", status=200, error_id=None, seconds=0.02)
    metrics.observe_request(route=route, method="GET", status=200, error_id=None, seconds=0.2)
    metrics.observe_request(
        route=route, method="POST", status=401, error_id="invalid_token", seconds=0.001
    )
    body, _ = metrics.render()
    total = "broker_requests_total"
    assert value(body, total, route=route, method="GET", status="200", error_id="") == 2
    assert (
        value(body, total, route=route, method="POST", status="401", error_id="invalid_token") == 1
    )
    duration = "broker_request_duration_seconds"
    assert value(body, duration + "_count", route=route) == 3
    assert value(body, duration + "_sum", route=route) == pytest.approx(0.221)
    assert value(body, duration + "_bucket", route=route, le="0.025") == 2


def test_unknown_methods_are_one_label_value() -> None:
    """Methods off the wire cannot grow the label set: anything unusual counts as other."""
    metrics = Metrics()
    for method in ("FOO", "BAR", "get"):
        metrics.observe_request(
            route="unmatched", method=method, status=404, error_id="not_found", seconds=0.001
        )
    body, _ = metrics.render()
    labels = {"route": "unmatched", "status": "404", "error_id": "not_found"}
    assert value(body, "broker_requests_total", method="other", **labels) == 3


def test_observe_upstream() -> None:
    """Upstream calls count by function, outcome and status (empty when there was no answer)."""
    metrics = Metrics()
    metrics.observe_upstream(function="Refer2", outcome="ok", status=200, seconds=0.05)
    metrics.observe_upstream(function="Refer2", outcome="timeout", status=None, seconds=5.0)
    body, _ = metrics.render()
    total = "broker_upstream_requests_total"
    assert value(body, total, function="Refer2", outcome="ok", status="200") == 1
    assert value(body, total, function="Refer2", outcome="timeout", status="") == 1
    assert value(body, "broker_upstream_duration_seconds_count", function="Refer2") == 2
    assert value(body, "broker_upstream_duration_seconds_sum", function="Refer2") == pytest.approx(
        5.05
    )


def test_observe_redis() -> None:
    """Redis round trips are timed by operation, with sub-millisecond buckets."""
    metrics = Metrics()
    metrics.observe_redis(operation="cache_read", seconds=0.0003)
    body, _ = metrics.render()
    name = "broker_redis_duration_seconds"
    assert value(body, name + "_count", operation="cache_read") == 1
    assert value(body, name + "_bucket", operation="cache_read", le="0.0005") == 1
    assert value(body, name + "_bucket", operation="cache_read", le="0.00025") == 0


def test_count_cache_starts_at_zero_for_every_outcome() -> None:
    """Every cache outcome is exported from the start (so rate() works) and counts up."""
    metrics = Metrics()
    metrics.count_cache("hit")
    metrics.count_cache("hit")
    metrics.count_cache("collapsed")
    body, _ = metrics.render()
    counts = {o: value(body, "broker_cache_total", outcome=o) for o in CACHE_OUTCOMES}
    assert counts == {"hit": 2, "miss": 0, "stale": 0, "collapsed": 1, "bypass": 0}
    with pytest.raises(ValueError, match="cache outcome"):
        metrics.count_cache("warm")


def test_count_rate_limited() -> None:
    """Refusals by the broker's own limits count by policy; unknown policies are a bug."""
    metrics = Metrics()
    metrics.count_rate_limited("issuer")
    body, _ = metrics.render()
    counts = {p: value(body, "broker_rate_limited_total", policy=p) for p in RATE_LIMIT_POLICIES}
    assert counts == {"read": 0, "write": 0, "issuer": 1}
    with pytest.raises(ValueError, match="policy"):
        metrics.count_rate_limited("burst")


def test_set_breaker_is_one_hot() -> None:
    """A breaker's current state is 1 and its other states 0; the other breaker is untouched."""
    metrics = Metrics()
    metrics.set_breaker("upstream", "open")
    metrics.set_breaker("upstream", "half_open")
    metrics.set_breaker("redis", "closed")
    body, _ = metrics.render()
    upstream = {
        s: value(body, "broker_breaker_state", name="upstream", state=s) for s in BREAKER_STATES
    }
    redis = {s: value(body, "broker_breaker_state", name="redis", state=s) for s in BREAKER_STATES}
    assert upstream == {"closed": 0, "open": 0, "half_open": 1}
    assert redis == {"closed": 1, "open": 0, "half_open": 0}
    with pytest.raises(ValueError, match="breaker"):
        metrics.set_breaker("upstream", "ajar")
    with pytest.raises(ValueError, match="breaker"):
        metrics.set_breaker("database", "open")


def test_instances_are_independent() -> None:
    """Two apps in one process (as in tests) each own their registry: no clash, no sharing."""
    first, second = Metrics(), Metrics()
    first.count_cache("miss")
    assert value(first.render()[0], "broker_cache_total", outcome="miss") == 1
    assert value(second.render()[0], "broker_cache_total", outcome="miss") == 0


def test_invented_upstream_error_ids_are_one_label_value() -> None:
    """200 error ids Bubblehouse made up are counted under one ``other`` series; the broker's
    own ids and Bubblehouse's documented ones keep their names."""
    metrics = Metrics()
    route = "/api/{version}/{shop}/Refer2"
    for n in range(200):
        metrics.observe_request(
            route=route, method="POST", status=422, error_id=f"made_up_{n}", seconds=0.01
        )
    for known in ("invalid_input", "no_customers_match_customer_identity"):
        metrics.observe_request(route=route, method="POST", status=400, error_id=known, seconds=0)
    body, _ = metrics.render()
    series = [key for key in samples(body) if key[0] == "broker_requests_total"]
    assert len(series) == 3
    base = {"route": route, "method": "POST"}
    assert value(body, "broker_requests_total", **base, status="422", error_id="other") == 200
    assert value(body, "broker_requests_total", **base, status="400", error_id="invalid_input")


def test_build_info_and_process_metrics_are_reported() -> None:
    """broker_build_info carries the version; process_* metrics come with it."""
    body, _ = Metrics().render()
    assert value(body, "broker_build_info", version=__version__) == 1
    assert (value(body, "process_resident_memory_bytes") or 0) > 0


def test_watched_states_are_read_at_each_render() -> None:
    """A watched state is reported as it is when rendered, with no event in between."""
    metrics = Metrics()
    state: dict[str, Any] = {"upstream": "open", "writable": False, "fallbacks": 3}

    def refresh() -> None:
        metrics.set_breaker("upstream", str(state["upstream"]))
        metrics.set_redis_writable(bool(state["writable"]))
        metrics.set_store_fallbacks(int(state["fallbacks"]))

    metrics.watch(refresh)
    state.update(upstream="half_open", writable=True, fallbacks=5)
    body, _ = metrics.render()
    assert value(body, "broker_breaker_state", name="upstream", state="open") == 0
    assert value(body, "broker_breaker_state", name="upstream", state="half_open") == 1
    assert value(body, "broker_redis_writable") == 1
    assert value(body, "broker_store_fallback_total") == 5


def test_request_shop_label_is_bounded_by_the_configured_shops() -> None:
    """The shop label of a request is a configured shop, empty, or one fixed value otherwise."""
    metrics = Metrics()
    metrics.limit_shops(frozenset({"north", "south"}))
    route = "/api/{version}/{shop}/CustomerReferrals2"
    for shop in ("north", "south", "", "invented-1", "invented-2"):
        metrics.observe_request(
            route=route, method="GET", status=200, error_id=None, seconds=0.01, shop=shop
        )
    body, _ = metrics.render()
    labels = {"route": route, "method": "GET", "status": "200", "error_id": ""}
    assert value(body, "broker_requests_total", **labels, shop="north") == 1
    assert value(body, "broker_requests_total", **labels, shop="south") == 1
    assert value(body, "broker_requests_total", **labels, shop="") == 1
    assert value(body, "broker_requests_total", **labels, shop="other") == 2
