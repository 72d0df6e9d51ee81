"""The one client of Bubblehouse: calls, failure translation, and a circuit breaker.

Only this module sees raw upstream responses and httpx2 exceptions. It hands the rest of the
broker either Bubblehouse's success body (the exact bytes) or a :class:`broker.errors` error:

    2xx with a JSON object            -> the body bytes, unchanged
    401 invalid_token, 400 *_version  -> UpstreamMisconfigured (the broker's own credentials)
    429                               -> UpstreamRateLimited
    other 4xx with a slug ``id``      -> UpstreamRejected (Bubblehouse's id and status)
    5xx, non-JSON, odd shapes         -> UpstreamError
    connect failure, open circuit     -> UpstreamUnavailable
    no answer in time                 -> UpstreamTimeout
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx2
import orjson
import structlog

from broker.errors import (
    SLUG,
    BrokerError,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from broker.settings import Settings

log = structlog.get_logger("broker.upstream")

USER_AGENT = "referral-broker/1.0"
VERSION_ERRORS = frozenset(
    {"invalid_global_api_version", "obsolete_global_api_version", "inaccessible_global_api_version"}
)
MAX_BODY = 4 * 1024 * 1024  # a referral history larger than this is not a referral history


@dataclass
class CallInfo:
    """What one call did, for the request log and metrics."""

    status: int | None = None
    seconds: float = 0.0
    outcome: str = "none"


class CircuitBreaker:
    """Opens after consecutive failures, lets one trial through after a cool-down."""

    def __init__(self, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self._trial_running = False
        self.failures = 0
        if self.opened_at is not None:
            self.opened_at = None
            log.info("upstream.circuit_closed")

    def failure(self) -> None:
        self._trial_running = False
        self.failures += 1
        if self.opened_at is not None:
            self.opened_at = time.monotonic()  # the trial failed: stay open for another cool-down
        elif self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            log.warning("upstream.circuit_open", failures=self.failures, cooldown=self.cooldown)


@dataclass
class Upstream:
    """Calls Bubblehouse with one long-lived pooled client."""

    settings: Settings
    client: httpx2.AsyncClient
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    @classmethod
    def create(
        cls, settings: Settings, transport: httpx2.AsyncBaseTransport | None = None
    ) -> Upstream:
        timeout = httpx2.Timeout(
            settings.upstream_timeout, connect=min(settings.upstream_timeout, 2.0)
        )
        limits = httpx2.Limits(
            max_connections=256, max_keepalive_connections=128, keepalive_expiry=30
        )
        if transport is None:
            transport = httpx2.AsyncHTTPTransport(limits=limits, retries=0)
        client = httpx2.AsyncClient(
            base_url=settings.upstream_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )
        return cls(settings, client)

    async def aclose(self) -> None:
        await self.client.aclose()

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
    ) -> bytes:
        """POST ``payload`` to ``function``; return the success body or raise a broker error.

        ``retry_connect`` allows one more attempt when the connection could not be made, which
        is safe for any call because the request never left the broker.
        """
        if not self.breaker.allow():
            info.outcome = "circuit_open"
            raise UpstreamUnavailable("Bubblehouse is failing; the broker is giving it a rest.")
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Request-ID": request_id,
        }
        if traceparent:
            headers["traceparent"] = traceparent
        url = f"/api/{version}/{self.settings.shop}/{function}"
        body = orjson.dumps(payload)
        started = time.perf_counter()
        attempts = 2 if retry_connect else 1
        try:
            for attempt in range(attempts):
                try:
                    async with asyncio.timeout(self.settings.upstream_timeout):
                        response = await self.client.post(url, content=body, headers=headers)
                        content = await _read_capped(response)
                    break
                except httpx2.ConnectError:
                    if attempt + 1 == attempts:
                        raise
            info.status = response.status_code
            result = self._translate(response.status_code, response.headers, content)
        except BrokerError as error:
            self._account(error)
            info.outcome = error.error_id
            raise
        except (TimeoutError, httpx2.TimeoutException) as exc:
            self.breaker.failure()
            info.outcome = "timeout"
            connect = isinstance(exc, httpx2.ConnectTimeout)
            error_cls = UpstreamUnavailable if connect else UpstreamTimeout
            raise error_cls() from exc
        except (httpx2.ConnectError, httpx2.UnsupportedProtocol) as exc:
            self.breaker.failure()
            info.outcome = "unreachable"
            raise UpstreamUnavailable() from exc
        except httpx2.TransportError as exc:
            # The request may have been delivered before the connection broke.
            self.breaker.failure()
            info.outcome = "transport_error"
            raise UpstreamError() from exc
        finally:
            info.seconds = time.perf_counter() - started
        self.breaker.success()
        info.outcome = "ok"
        return result

    def _account(self, error: BrokerError) -> None:
        if isinstance(error, UpstreamError | UpstreamTimeout):
            self.breaker.failure()
        else:
            self.breaker.success()  # Bubblehouse answered sensibly: it is alive

    def _translate(self, status: int, headers: httpx2.Headers, content: bytes) -> bytes:
        if 200 <= status < 300:
            if _is_json_object(content):
                return content
            raise UpstreamError(
                "Bubblehouse answered with something that is not its JSON.", upstream_status=status
            )
        error_id = _error_id(content)
        if status == 429:
            raise UpstreamRateLimited(_retry_after(headers.get("retry-after")))
        if error_id is None or status >= 500 or status < 400:
            raise UpstreamError(upstream_status=status)
        if error_id == "invalid_token" or error_id in VERSION_ERRORS:
            raise UpstreamMisconfigured()
        if error_id == "rate_limit_exceeded":
            raise UpstreamRateLimited(_retry_after(headers.get("retry-after")))
        return _raise_rejected(error_id, status)


def _raise_rejected(error_id: str, status: int) -> bytes:
    raise UpstreamRejected(error_id, status)


async def _read_capped(response: httpx2.Response) -> bytes:
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise UpstreamError("Bubblehouse answered with a body too large to pass on.")
    return response.content


def _is_json_object(content: bytes) -> bool:
    stripped = content.lstrip()
    if not stripped.startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(content), dict)
    except orjson.JSONDecodeError:
        return False


def _error_id(content: bytes) -> str | None:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error_id = data.get("id")
    if isinstance(error_id, str) and SLUG.match(error_id):
        return error_id
    return None


def _retry_after(value: str | None) -> int:
    if value and value.strip().isdigit():
        return max(1, min(int(value.strip()), 3600))
    return 1
