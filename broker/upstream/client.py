"""The one client of Bubblehouse: calls, failure translation, the circuit and the back-off.

Only this module sees Bubblehouse's answers and :mod:`broker.upstream.transport`'s errors. It hands
the rest of the broker either Bubblehouse's success body (the exact bytes) or a :mod:`broker.errors`
error:

    2xx with a JSON object             -> the body bytes, unchanged
    any 401, 400 *_global_api_version  -> UpstreamMisconfigured (the broker's own credentials)
    429, or rate_limit_exceeded        -> UpstreamRateLimited
    other 4xx with a slug ``id``       -> UpstreamRejected (Bubblehouse's id and status)
    an id the broker defines itself    -> UpstreamError (a browser never sees, say, an
                                          ``invalid_input`` without a ``field`` it did not decide)
    a 4xx status outside REFUSALS      -> UpstreamError (a 407 is no refusal of the browser's)
    5xx, non-JSON, odd shapes          -> UpstreamError
    a body too large or undecodable    -> UpstreamError
    connection broken mid-answer       -> UpstreamError (the request may have been delivered)
    anything unexpected from below     -> UpstreamError (logged; never a 500)
    no connection, open circuit        -> UpstreamUnavailable
    no answer in time                  -> UpstreamTimeout
    a customer being backed off        -> UpstreamBackoff, or the same 4xx again (reads)

Only a Refer2 refusal passed through (``UpstreamRejected``) carries Bubblehouse's ``message``, as
``upstream_message``: without control, format and separator characters, cut to 500 characters.
Nothing of a 401, a 429, a read, a 5xx or a non-JSON answer reaches a browser. Numbers read from
Bubblehouse's answers (``Retry-After``) are bounded before they are converted.

Transient failures (5xx, timeouts, connection failures) feed the circuit breaker; answers that
are wrong for one customer (too large, undecodable, not a JSON object, a 4xx) do not, and hold
that customer back for ``BROKER_UPSTREAM_BACKOFF`` seconds instead (see
:mod:`broker.upstream.circuit`).
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import structlog

from broker import errors
from broker.config.settings import Settings
from broker.errors import (
    SLUG,
    BrokerError,
    UpstreamBackoff,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from broker.upstream.circuit import REFUSED, Backoff, CircuitBreaker
from broker.upstream.transport import (
    Answer,
    BodyTooLarge,
    ConnectFailed,
    ConnectTimeout,
    ReadTimeout,
    Transport,
    TransportError,
    UndecodableBody,
    production_transport,
)

log = structlog.get_logger("broker.upstream")

VERSION_ERRORS = frozenset(
    {"invalid_global_api_version", "obsolete_global_api_version", "inaccessible_global_api_version"}
)
MAX_UPSTREAM_MESSAGE = 500
# Control, format (bidi overrides, zero widths) and line/paragraph separators: never shown.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Ids the broker itself answers with, each meaning something the broker decided (spec 4).
# Bubblehouse's rate_limit_exceeded and customer_identity_does_not_match_token mean the same
# thing in both mouths; invalid_token and the version ids are UpstreamMisconfigured.
BROKER_IDS = errors.BROKER_IDS - {"rate_limit_exceeded", "customer_identity_does_not_match_token"}
# The 4xx statuses a refusal of Bubblehouse's may reach a browser with (401 and 429 have their
# own rules); anything else (407, 408, 413, 431...) says something about the broker's own call.
REFUSALS = frozenset({400, 403, 404, 409, 410, 422})
RETRY_AFTER_DIGITS = 6
RETRY_AFTER_DATE = 64  # an HTTP date is 29 characters; anything much longer is not one
MAX_RETRY_AFTER = 3600


@dataclass(slots=True)
class CallInfo:
    """What one call did, for the request log and metrics."""

    status: int | None = None
    seconds: float = 0.0
    outcome: str = "none"


@dataclass
class Upstream:
    """Calls Bubblehouse through one long-lived :class:`~broker.upstream.transport.Transport`."""

    settings: Settings
    transport: Transport
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    backoff: Backoff[BrokerError] = field(default_factory=lambda: Backoff[BrokerError](5.0))

    @classmethod
    def create(cls, settings: Settings, transport: Transport | None = None) -> Upstream:
        """The production transport (aiohttp) unless a transport is given."""
        if transport is None:
            transport = production_transport(settings.upstream_url, settings.upstream_timeout)
        breaker = CircuitBreaker(
            failure_rate=settings.circuit_failure_rate,
            min_calls=settings.circuit_min_calls,
            window=settings.circuit_window,
            cooldown=settings.circuit_cooldown,
        )
        return cls(settings, transport, breaker, Backoff(settings.upstream_backoff))

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def call(
        self,
        version: str,
        function: str,
        payload: dict[str, object],
        token: str,
        *,
        request_id: str,
        traceparent: str | None,
        retry_connect: bool,
        info: CallInfo,
        shop: str,
        customer: str = "",
        holds_back: bool = False,
        refusal_text: bool = False,
    ) -> bytes:
        """POST ``payload`` to ``function``; return the success body or raise a broker error.

        ``retry_connect`` allows one more attempt when the connection could not be made, which
        is safe for any call because the request never left the broker. ``shop`` is the
        customer's shop (the ``<shop>`` of the path called). ``customer`` (``<shop>/<customer
        id>``) keys the per-customer back-off; without it there is none. ``holds_back``: a
        refusal (4xx) is repeated to the customer for the back-off (a read's, whose next answer
        could not differ), not only a wrong answer. ``refusal_text``: a refusal's message (written
        by the shop for shoppers, Refer2's) is passed on as ``upstream_message``.
        """
        held = self.backoff.check((customer, function)) if customer and self.backoff else None
        if held is not None:
            info.outcome = "backoff"
            raise held
        permit = self.breaker.acquire()
        if permit == REFUSED:
            info.outcome = "circuit_open"
            raise UpstreamUnavailable("Bubblehouse is failing; the broker is giving it a rest.")
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Request-ID": request_id,
        }
        if traceparent:
            headers["traceparent"] = traceparent
        path = f"/api/{version}/{shop}/{function}"
        body = orjson.dumps(payload)
        started = time.perf_counter()
        failed: bool | None = None  # transient failure, Bubblehouse alive, or no verdict
        try:
            try:
                async with asyncio.timeout(self.settings.upstream_timeout):
                    answer = await self._post(path, body, headers, retry_connect)
            except Exception as exc:  # every failure below is translated here, never a 500
                failed, error = self._transport_failure(exc, info)
                if not failed:
                    self._hold(customer, function, error, holds_back)
                raise error from exc
            info.status = answer.status
            failed = answer.status >= 500
            try:
                result = self._translate(answer, refusal_text)
            except BrokerError as error:
                info.outcome = error.id
                if not failed:
                    self._hold(customer, function, error, holds_back)
                raise
            info.outcome = "ok"
            return result
        finally:
            info.seconds = time.perf_counter() - started
            if failed is None:
                self.breaker.release(permit)  # cancelled: never leave a trial running
            else:
                self.breaker.record(permit, failed)

    async def _post(
        self, path: str, body: bytes, headers: dict[str, str], retry_connect: bool
    ) -> Answer:
        try:
            return await self.transport.post(path, body, headers)
        except ConnectFailed as exc:
            # A connect timeout already spent its time; a refusal is cheap to try once more.
            if not retry_connect or isinstance(exc, ConnectTimeout):
                raise
        return await self.transport.post(path, body, headers)

    def _transport_failure(self, exc: Exception, info: CallInfo) -> tuple[bool, BrokerError]:
        """(transient, the broker error) for a failure of the transport or of the clock."""
        if isinstance(exc, ConnectTimeout):
            info.outcome = "timeout"
            return True, UpstreamUnavailable()
        if isinstance(exc, ConnectFailed):
            info.outcome = "unreachable"
            return True, UpstreamUnavailable()
        if isinstance(exc, ReadTimeout | TimeoutError):
            info.outcome = "timeout"
            return True, UpstreamTimeout()
        if isinstance(exc, BodyTooLarge | UndecodableBody):
            info.status = exc.status
            info.outcome = "too_large" if isinstance(exc, BodyTooLarge) else "undecodable"
            message = (
                "Bubblehouse answered with a body too large to pass on."
                if isinstance(exc, BodyTooLarge)
                else "Bubblehouse answered with a body that does not decode."
            )
            transient = exc.status is not None and exc.status >= 500
            return transient, UpstreamError(message, upstream_status=exc.status)
        info.outcome = "transport_error"
        if not isinstance(exc, TransportError):
            # A transport that raised something of its own: a bug below, not the browser's.
            log.error("upstream.unexpected", error_type=type(exc).__name__, exc_info=exc)
        # The request may have been delivered before the connection broke.
        return True, UpstreamError()

    def _hold(self, customer: str, function: str, error: BrokerError, holds_back: bool) -> None:
        """Back a customer off after an answer that was wrong for that customer."""
        if not customer:
            return
        if isinstance(error, UpstreamError):
            self.backoff.hold((customer, function), UpstreamBackoff)
        elif isinstance(error, UpstreamRejected) and holds_back:
            upstream_id, status = error.id, error.status
            message = error.extra.get("upstream_message")
            self.backoff.hold(
                (customer, function), lambda left: UpstreamRejected(upstream_id, status, message)
            )

    def _translate(self, answer: Answer, refusal_text: bool) -> bytes:
        status, content = answer.status, answer.body
        if 200 <= status < 300:
            if content.lstrip()[:1] == b"{" and isinstance(_loads(content), dict):
                return content
            raise UpstreamError(
                "Bubblehouse answered with something that is not its JSON.", upstream_status=status
            )
        error_id, message = _error_of(content) if 400 <= status < 500 else (None, None)
        if status == 429 or error_id == "rate_limit_exceeded":
            raise UpstreamRateLimited(_retry_after(answer.headers.get("retry-after")))
        if status == 401 or error_id == "invalid_token" or error_id in VERSION_ERRORS:
            raise UpstreamMisconfigured(upstream_status=status)
        if error_id is None or error_id in BROKER_IDS or status not in REFUSALS:
            raise UpstreamError(upstream_status=status)
        # A send's refusals carry text the shop wrote for shoppers; a read's carry nothing.
        raise UpstreamRejected(error_id, status, message if refusal_text else None)


_NOT_JSON = object()


def _loads(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _error_of(content: bytes) -> tuple[str | None, str | None]:
    """Bubblehouse's error ``id`` (only a slug) and its cleaned ``message``, from a 4xx body."""
    data = _loads(content)
    if not isinstance(data, dict):
        return None, None
    error_id = data.get("id")
    if not isinstance(error_id, str) or not SLUG.fullmatch(error_id):
        return None, None
    return error_id, clean_message(data.get("message"))


def clean_message(value: object) -> str | None:
    """Bubblehouse's ``message`` as it may reach a browser: a string without control, format
    or separator characters (Unicode categories Cc, Cf, Zl, Zp), at most 500 characters, or
    None."""
    if not isinstance(value, str):
        return None
    kept = "".join(c for c in value if unicodedata.category(c) not in _HIDDEN_CATEGORIES)
    cleaned = kept.strip()[:MAX_UPSTREAM_MESSAGE].strip()
    return cleaned or None


def _retry_after(value: str | None, now: datetime | None = None) -> int:
    """Seconds to wait from Bubblehouse's ``Retry-After``: 1-6 ASCII digits or an HTTP date,
    bounded to 1..3600; anything else is ignored (1)."""
    if value is None:
        return 1
    value = value.strip()
    seconds: float
    if 0 < len(value) <= RETRY_AFTER_DIGITS and value.isascii() and value.isdigit():
        seconds = int(value)
    elif 0 < len(value) <= RETRY_AFTER_DATE and value.isascii():
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return 1
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    else:
        return 1
    return int(max(1, min(seconds, MAX_RETRY_AFTER)))
