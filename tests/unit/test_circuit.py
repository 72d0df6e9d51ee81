"""The circuit opens on a rate of transient failures only; one customer gets a back-off instead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import orjson
import pytest

from broker.errors import (
    UpstreamBackoff,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from broker.rules.functions import BY_NAME
from broker.upstream.circuit import CALL, REFUSED, TRIAL, Backoff, CircuitBreaker
from broker.upstream.client import CallInfo, Upstream
from broker.upstream.transport import Answer, BodyTooLarge, FakeTransport, Handler, UndecodableBody
from tests.support import make_settings


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **options: float) -> CircuitBreaker:
    settings = {"failure_rate": 0.5, "min_calls": 10, "window": 10.0, "cooldown": 5.0}
    settings.update(options)
    return CircuitBreaker(
        failure_rate=settings["failure_rate"],
        min_calls=int(settings["min_calls"]),
        window=settings["window"],
        cooldown=settings["cooldown"],
        clock=clock,
    )


def test_opens_on_the_rate_once_the_window_has_the_minimum_volume() -> None:
    """Failures below the minimum volume never open it; at the volume, the rate decides."""
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(9):
        circuit.record(circuit.acquire(), True)
    assert circuit.state == "closed"  # 9 of 9 failed, but 9 < min_calls
    circuit.record(circuit.acquire(), True)
    assert circuit.state == "open" and circuit.acquire() == REFUSED


def test_a_low_failure_rate_never_opens_it() -> None:
    """40% failures over many calls (threshold 50%) keep the circuit closed."""
    clock = Clock()
    circuit = breaker(clock)
    for i in range(200):
        clock.now += 0.01
        circuit.record(circuit.acquire(), i % 5 >= 3)
    assert circuit.state == "closed"


def test_old_failures_slide_out_of_the_window() -> None:
    """Failures older than the window do not count toward the rate."""
    clock = Clock()
    circuit = breaker(clock)
    for _ in range(8):
        circuit.record(circuit.acquire(), True)
    clock.now += 11  # the whole window later
    for _ in range(12):
        circuit.record(circuit.acquire(), False)
    circuit.record(circuit.acquire(), True)
    assert circuit.state == "closed"


def test_half_open_trial_closes_or_reopens() -> None:
    """After the cool-down one trial goes through; success closes, failure reopens."""
    clock = Clock()
    circuit = breaker(clock, min_calls=1)
    circuit.record(circuit.acquire(), True)
    assert circuit.state == "open"
    clock.now += 5
    assert circuit.state == "half_open"
    trial = circuit.acquire()
    assert trial == TRIAL and circuit.acquire() == REFUSED  # one trial at a time
    circuit.record(trial, True)
    assert circuit.state == "open"
    clock.now += 5
    trial = circuit.acquire()
    circuit.record(trial, False)
    assert circuit.state == "closed" and circuit.acquire() == CALL


def test_a_trial_without_verdict_is_released() -> None:
    """A trial that ended with no outcome (cancelled, a bug) lets the next call try."""
    clock = Clock()
    circuit = breaker(clock, min_calls=1)
    circuit.record(circuit.acquire(), True)
    clock.now += 5
    trial = circuit.acquire()
    circuit.release(trial)
    assert circuit.acquire() == TRIAL


def test_stragglers_do_not_move_an_open_circuit() -> None:
    """A call that began before the circuit opened and succeeds afterwards does not close it."""
    clock = Clock()
    circuit = breaker(clock, min_calls=2)
    early = circuit.acquire()
    circuit.record(circuit.acquire(), True)
    circuit.record(circuit.acquire(), True)
    assert circuit.state == "open"
    circuit.record(early, False)
    assert circuit.state == "open"


def test_state_changes_are_reported() -> None:
    """on_change hears open, half_open and closed (for the metrics gauge)."""
    clock = Clock()
    circuit = breaker(clock, min_calls=1)
    seen: list[str] = []
    circuit.on_change = seen.append
    circuit.record(circuit.acquire(), True)
    clock.now += 5
    circuit.record(circuit.acquire(), False)
    assert seen == ["open", "half_open", "closed"]


def test_backoff_expires_and_is_bounded() -> None:
    """A held key is refused until its seconds pass; the oldest keys go past the size."""
    clock = Clock()
    backoff: Backoff[str] = Backoff(3.0, size=2, clock=clock)
    backoff.hold("a", lambda left: f"a:{left:g}")
    clock.now += 1
    assert backoff.check("a") == "a:2" and backoff.check("b") is None
    backoff.hold("b", lambda left: "b")
    backoff.hold("c", lambda left: "c")
    assert backoff.check("a") is None  # evicted
    clock.now += 3
    assert backoff.check("b") is None and backoff.check("c") is None
    off: Backoff[str] = Backoff(0.0, clock=clock)
    off.hold("a", lambda left: "a")
    assert off.check("a") is None


# --- through Upstream ---------------------------------------------------------------------------


def upstream_for(handler: Handler, **env: str) -> tuple[Upstream, FakeTransport]:
    fake = FakeTransport(handler)
    env.setdefault("BROKER_CIRCUIT_MIN_CALLS", "10")
    env.setdefault("BROKER_CIRCUIT_FAILURE_RATE", "0.5")
    return Upstream.create(make_settings(**env), fake), fake


async def call(upstream: Upstream, customer: str, function: str = "CustomerReferrals2") -> bytes:
    return await upstream.call(
        "v2023061",
        function,
        {},
        "t",
        request_id="r",
        traceparent=None,
        retry_connect=False,
        info=CallInfo(),
        shop="test-shop",
        customer=customer,
        holds_back=BY_NAME[function].holds_back,
        refusal_text=BY_NAME[function].refusal_text,
    )


def by_customer(bad: dict[str, Answer | Exception]) -> Handler:
    """Answers per customer (read from the token-less path: the X-Request-ID carries it)."""

    def handler(path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        found = bad.get(headers["X-Request-ID"])
        if isinstance(found, Exception):
            raise found
        return found or Answer(200, {}, b'{"referrals": []}')

    return handler


async def call_as(upstream: Upstream, customer: str, function: str = "CustomerReferrals2") -> None:
    await upstream.call(
        "v2023061",
        function,
        {},
        "t",
        request_id=customer,
        traceparent=None,
        retry_connect=False,
        info=CallInfo(),
        shop="test-shop",
        customer=customer,
        holds_back=BY_NAME[function].holds_back,
        refusal_text=BY_NAME[function].refusal_text,
    )


@pytest.mark.parametrize(
    "bad",
    [
        Answer(200, {}, b"<html>not json</html>"),
        Answer(200, {}, b"[1, 2]"),
        Answer(404, {}, orjson.dumps({"id": "no_customers_match_customer_identity"})),
        Answer(400, {}, b"not json at all"),
        BodyTooLarge("12 MB"),
        UndecodableBody("corrupt gzip"),
    ],
    ids=["html", "array", "4xx", "4xx-not-json", "too-large", "corrupt-gzip"],
)
async def test_one_customer_never_opens_the_circuit_for_others(bad: Answer | Exception) -> None:
    """However often one customer's answers are unusable (two calls in three, back-off off so
    every one reaches the transport), the circuit stays closed and others are served."""
    upstream, fake = upstream_for(by_customer({"mallory": bad}), BROKER_UPSTREAM_BACKOFF="0")
    for _ in range(30):
        for _ in range(2):
            with pytest.raises((UpstreamError, UpstreamRejected)):
                await call_as(upstream, "mallory")
        await call_as(upstream, "alice")
    assert upstream.breaker.state == "closed"
    assert len(fake.requests) == 90
    await call_as(upstream, "bob")


async def test_backoff_refuses_without_calling_and_frees_a_send() -> None:
    """After an unusable answer, that customer's next calls within the back-off are refused
    without a call, as upstream_error with Retry-After, and do not count as reaching Bubblehouse;
    another customer is called as usual."""
    upstream, fake = upstream_for(
        by_customer({"mallory": Answer(200, {}, b"oops")}), BROKER_UPSTREAM_BACKOFF="30"
    )
    with pytest.raises(UpstreamError) as first:
        await call_as(upstream, "mallory", "Refer2")
    assert first.value.reached_upstream
    info = CallInfo()
    with pytest.raises(UpstreamBackoff) as held:
        await upstream.call(
            "v2023061",
            "Refer2",
            {},
            "t",
            request_id="mallory",
            traceparent=None,
            retry_connect=False,
            info=info,
            shop="test-shop",
            customer="mallory",
        )
    assert len(fake.requests) == 1 and info.outcome == "backoff"
    assert held.value.id == "upstream_error" and held.value.status == 502
    assert not held.value.reached_upstream and held.value.stale_ok
    assert 1 <= int(held.value.headers()["Retry-After"]) <= 30
    await call_as(upstream, "alice", "Refer2")
    assert len(fake.requests) == 2


async def test_a_read_4xx_is_answered_again_during_the_backoff() -> None:
    """A read refused with Bubblehouse's 4xx gets the same id again without a call; a send's
    4xx is about that send and is never held."""
    refusal = Answer(
        404, {}, orjson.dumps({"id": "no_customers_match_customer_identity", "message": "Hi"})
    )
    upstream, fake = upstream_for(by_customer({"newbie": refusal}), BROKER_UPSTREAM_BACKOFF="30")
    for _ in range(3):
        with pytest.raises(UpstreamRejected) as caught:
            await call_as(upstream, "newbie")
        assert caught.value.id == "no_customers_match_customer_identity"
        assert caught.value.status == 404 and "upstream_message" not in caught.value.extra
    assert len(fake.requests) == 1
    for _ in range(2):
        with pytest.raises(UpstreamRejected):
            await call_as(upstream, "newbie", "Refer2")
    assert len(fake.requests) == 3


async def test_5xx_above_the_rate_with_volume_opens_the_circuit() -> None:
    """5xx for 60% of calls across many customers opens the circuit for everyone."""
    upstream, fake = upstream_for(
        lambda path, body, headers: Answer(
            500 if int(headers["X-Request-ID"][1:]) % 5 < 3 else 200, {}, b'{"id": "boom"}'
        )
    )
    for i in range(11):
        with contextlib.suppress(UpstreamError):
            await call_as(upstream, f"c{i}")
        assert upstream.breaker.state == ("open" if i == 10 else "closed")  # 7 of 11 failed
    with pytest.raises(UpstreamUnavailable):
        await call_as(upstream, "c99")
    assert len(fake.requests) == 11


async def test_timeouts_and_broken_connections_count_as_transient() -> None:
    """Timeouts and broken connections are transient failures: they open the circuit."""
    from broker.upstream.transport import ConnectionBroken, ReadTimeout

    failures = [ReadTimeout("slow"), ConnectionBroken("reset")]

    def handler(path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        raise failures[len(fake.requests) % 2]

    upstream, fake = upstream_for(handler)
    for i in range(10):
        with pytest.raises(Exception):  # noqa: B017, PT011 - upstream_timeout or upstream_error
            await call_as(upstream, f"c{i}")
    assert upstream.breaker.state == "open"


async def test_a_cancelled_or_failed_trial_never_sticks_the_circuit() -> None:
    """A half-open trial that is cancelled or hits anything unexpected leaves the circuit able
    to try again: it closes as soon as Bubblehouse answers."""
    clock = Clock()
    answers: list[object] = []

    async def handler(path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        step = answers.pop(0)
        if step == "hang":
            await asyncio.sleep(30)
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, Answer)
        return step

    fake = FakeTransport(handler)
    upstream = Upstream.create(make_settings(BROKER_CIRCUIT_MIN_CALLS="1"), fake)
    upstream.breaker.clock = clock
    answers.append(Answer(503, {}, b""))
    with pytest.raises(UpstreamError):
        await call(upstream, "a")
    assert upstream.breaker.state == "open"
    clock.now += 60
    answers.append("hang")
    task = asyncio.create_task(call(upstream, "a"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    answers.append(UndecodableBody("corrupt gzip"))  # a trial ending in a corrupt answer
    with pytest.raises(UpstreamError):
        await call(upstream, "b")
    assert upstream.breaker.state == "closed"
    answers.append(Answer(200, {}, b"{}"))
    assert await call(upstream, "c") == b"{}"


def test_breaker_settings_defaults_and_refusals() -> None:
    """The circuit's settings default sensibly; a bad value names its variable, not its value."""
    from broker.config.settings import ConfigError

    settings = make_settings()
    assert (
        settings.circuit_failure_rate,
        settings.circuit_min_calls,
        settings.circuit_window,
        settings.circuit_cooldown,
        settings.upstream_backoff,
    ) == (0.5, 20, 30.0, 10.0, 5.0)
    upstream = Upstream.create(
        make_settings(BROKER_CIRCUIT_FAILURE_RATE="0.25", BROKER_CIRCUIT_COOLDOWN="2.5"),
        FakeTransport(lambda path, body, headers: Answer(200, {}, b"{}")),
    )
    assert upstream.breaker.failure_rate == 0.25 and upstream.breaker.cooldown == 2.5
    for name, value in (
        ("BROKER_CIRCUIT_FAILURE_RATE", "1.5"),
        ("BROKER_CIRCUIT_FAILURE_RATE", "nan"),
        ("BROKER_CIRCUIT_MIN_CALLS", "-7"),
        ("BROKER_CIRCUIT_WINDOW", "forever"),
        ("BROKER_CIRCUIT_COOLDOWN", "-1"),
        ("BROKER_UPSTREAM_BACKOFF", "1e9"),
    ):
        with pytest.raises(ConfigError) as caught:
            make_settings(**{name: value})
        assert caught.value.problems[0].startswith(name + ":")
        assert f"'{value}'" not in caught.value.problems[0]
