"""Protection of Bubblehouse and of the broker: a circuit breaker and a per-customer back-off.

:class:`CircuitBreaker` opens on the *rate* of transient failures (5xx, timeouts, connection
failures) over a sliding window, once the window holds a minimum number of calls; it then
refuses every call for a cool-down, lets one trial through, and closes when the trial succeeds.
Answers that are wrong for one customer (too large, not JSON, a 4xx) are not transient and never
count as failures: one customer cannot open the circuit for everyone.

:class:`Backoff` is for those: after such an answer, calls for that customer (and function) are
answered for a few seconds with an error made from the first, without calling Bubblehouse.

Both are per process and use a monotonic clock that tests replace.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("broker.upstream")

Clock = Callable[[], float]

# What CircuitBreaker.acquire grants.
REFUSED = 0
CALL = 1
TRIAL = 2

_BUCKETS = 10


class CircuitBreaker:
    """Opens when at least ``failure_rate`` of the calls of the last ``window`` seconds failed
    transiently and there were at least ``min_calls`` of them; stays open ``cooldown`` seconds,
    then half-opens: one trial call goes through, and its outcome closes or reopens the circuit.

    A caller does ``permit = acquire()`` and, unless refused, exactly one of
    ``record(permit, failed)`` or ``release(permit)`` (in a ``finally``: a call that ended with
    no verdict, cancelled say, must not leave a trial running forever).
    ``on_change``, when set, hears each move between closed, open and half_open (metrics).
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.5,
        min_calls: int = 20,
        window: float = 30.0,
        cooldown: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.window = window
        self.cooldown = cooldown
        self.clock = clock
        self.on_change: Callable[[str], None] | None = None
        self.opened_at: float | None = None
        self._trial = False
        self._width = window / _BUCKETS
        self._calls = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._total_calls = 0
        self._total_failures = 0
        self._head = 0
        self._head_end = clock() + self._width

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def acquire(self) -> int:
        """CALL when closed, TRIAL for the one call let through when half-open, else REFUSED."""
        if self.opened_at is None:
            return CALL
        if self._trial or self.clock() - self.opened_at < self.cooldown:
            return REFUSED
        self._trial = True
        self._changed("half_open")
        return TRIAL

    def record(self, permit: int, failed: bool) -> None:
        """The outcome of a call: ``failed`` when it failed transiently."""
        if permit == TRIAL:
            self._trial = False
            if failed:
                self.opened_at = self.clock()  # the trial failed: another cool-down
                self._changed("open")
            else:
                self._close()
            return
        if self.opened_at is not None:
            return  # a call that began before the circuit opened says nothing new
        self._advance(self.clock())
        self._calls[self._head] += 1
        self._total_calls += 1
        if failed:
            self._failures[self._head] += 1
            self._total_failures += 1
            if (
                self._total_calls >= self.min_calls
                and self._total_failures >= self.failure_rate * self._total_calls
            ):
                self._open()

    def release(self, permit: int) -> None:
        """A call ended with no verdict: a trial it held is handed to the next call."""
        if permit == TRIAL and self._trial:
            self._trial = False

    def _advance(self, now: float) -> None:
        if now < self._head_end:
            return
        steps = int((now - self._head_end) // self._width) + 1
        if steps >= _BUCKETS:
            self._reset_window(now)
            return
        for _ in range(steps):
            self._head = (self._head + 1) % _BUCKETS
            self._total_calls -= self._calls[self._head]
            self._total_failures -= self._failures[self._head]
            self._calls[self._head] = self._failures[self._head] = 0
        self._head_end += steps * self._width

    def _reset_window(self, now: float) -> None:
        self._calls = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._total_calls = self._total_failures = 0
        self._head_end = now + self._width

    def _open(self) -> None:
        self.opened_at = self.clock()
        log.warning(
            "upstream.circuit_open",
            calls=self._total_calls,
            failures=self._total_failures,
            window=self.window,
            cooldown=self.cooldown,
        )
        self._changed("open")

    def _close(self) -> None:
        self.opened_at = None
        self._reset_window(self.clock())
        log.info("upstream.circuit_closed")
        self._changed("closed")

    def _changed(self, state: str) -> None:
        if self.on_change is not None:
            self.on_change(state)


E = TypeVar("E")


class Backoff(Generic[E]):
    """Per-key refusals for ``seconds``: :meth:`hold` remembers how to refuse, :meth:`check`
    gives the refusal while it lasts. At most ``size`` keys are kept (the oldest go first)."""

    def __init__(self, seconds: float, *, size: int = 10_000, clock: Clock = time.monotonic):
        self.seconds = seconds
        self.size = size
        self.clock = clock
        self._held: OrderedDict[object, tuple[float, Callable[[float], E]]] = OrderedDict()

    def __len__(self) -> int:
        """Keys held (false when none: callers skip building a key)."""
        return len(self._held)

    def check(self, key: object) -> E | None:
        """The refusal for ``key`` (given the seconds it has left), or None to go ahead."""
        found = self._held.get(key)
        if found is None:
            return None
        left = found[0] - self.clock()
        if left <= 0:
            del self._held[key]
            return None
        return found[1](left)

    def hold(self, key: object, refusal: Callable[[float], E]) -> None:
        """Refuse ``key`` for the next ``seconds`` with ``refusal(seconds left)``."""
        if self.seconds <= 0:
            return
        self._held[key] = (self.clock() + self.seconds, refusal)
        self._held.move_to_end(key)
        while len(self._held) > self.size:
            self._held.popitem(last=False)
