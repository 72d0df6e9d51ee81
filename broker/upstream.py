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

The client is httpx2's API over :class:`AiohttpTransport`, an aiohttp connection pool: httpx2's
own pool slows down and queues under concurrency (encode/httpx#3215; docs/benchmarks.md has the
numbers), while the httpx2 API keeps ``MockTransport`` as the seam for tests and keeps the
engine replaceable here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
import orjson
import structlog
from yarl import URL

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
BASE_HEADERS = {"User-Agent": USER_AGENT, "Accept": "application/json"}
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
    """Opens after consecutive failures, lets one trial through after a cool-down.

    ``on_change``, when set, hears each move between closed, open and half_open (metrics).
    """

    def __init__(self, threshold: int = 5, cooldown: float = 10.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False
        self.on_change: Callable[[str], None] | None = None

    def _changed(self, state: str) -> None:
        if self.on_change is not None:
            self.on_change(state)

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
            self._changed("half_open")
            return True
        return False

    def success(self) -> None:
        self._trial_running = False
        self.failures = 0
        if self.opened_at is not None:
            self.opened_at = None
            log.info("upstream.circuit_closed")
            self._changed("closed")

    def failure(self) -> None:
        self._trial_running = False
        self.failures += 1
        if self.opened_at is not None:
            self.opened_at = time.monotonic()  # the trial failed: stay open for another cool-down
            self._changed("open")
        elif self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            log.warning("upstream.circuit_open", failures=self.failures, cooldown=self.cooldown)
            self._changed("open")


@dataclass
class Upstream:
    """Calls Bubblehouse with one long-lived pooled client.

    ``client`` is the httpx2 API over the chosen transport. With the production transport
    (:class:`AiohttpTransport`, when none is given) calls skip httpx2's request and response
    models and go to the pool directly (``direct``): httpx2's URL and header handling costs
    about 150 us a call, more than the rest of a cold read together. Errors are the same httpx2
    exceptions either way, so the translation below is shared.
    """

    settings: Settings
    client: httpx2.AsyncClient
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    direct: AiohttpTransport | None = None

    @classmethod
    def create(
        cls, settings: Settings, transport: httpx2.AsyncBaseTransport | None = None
    ) -> Upstream:
        connect = min(settings.upstream_timeout, 2.0)
        timeout = httpx2.Timeout(settings.upstream_timeout, connect=connect)
        direct = None
        if transport is None:
            transport = direct = AiohttpTransport(
                max_connections=256,
                keepalive_expiry=30,
                base_url=settings.upstream_url,
                connect_timeout=connect,
                read_timeout=settings.upstream_timeout,
            )
        client = httpx2.AsyncClient(
            base_url=settings.upstream_url,
            timeout=timeout,
            transport=transport,
            headers=BASE_HEADERS,
            follow_redirects=False,
        )
        return cls(settings, client, direct=direct)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        """(status, headers with a case-insensitive ``get``, body bytes) of one POST."""
        if self.direct is not None:
            return await self.direct.post(url, body, {**BASE_HEADERS, **headers}, MAX_BODY)
        response = await self.client.post(url, content=body, headers=headers)
        return response.status_code, response.headers, await _read_capped(response)

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
                        status, answer_headers, content = await self._post(url, body, headers)
                    break
                except httpx2.ConnectError:
                    if attempt + 1 == attempts:
                        raise
            info.status = status
            result = self._translate(status, answer_headers, content)
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

    def _translate(self, status: int, headers: Any, content: bytes) -> bytes:
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


# aiohttp derives these itself from the body and the pool; sending ours too would duplicate them.
_HOP_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2 requests over one aiohttp connection pool, with aiohttp's errors as httpx2's.

    Bodies reach httpx2 undecoded (it decodes ``Content-Encoding`` as usual); nothing is
    retried and no redirect is followed. :meth:`post` is the broker's own shortcut past
    httpx2's models. The session is made on first use, on the running loop.
    """

    def __init__(
        self,
        *,
        max_connections: int = 256,
        keepalive_expiry: float = 30.0,
        base_url: str = "",
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._base_url = base_url.rstrip("/")
        self._timeout = _client_timeout(connect_timeout, None, read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )
        return self._session

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], max_body: int
    ) -> tuple[int, Any, bytes]:
        """POST ``body`` to ``base_url + path``: (status, headers, decoded body)."""
        session = self._session or self._open()
        with _as_httpx_errors(None):
            async with session.post(
                URL(self._base_url + path, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as answer:
                length = answer.content_length
                if length is not None and length > max_body:
                    raise UpstreamError("Bubblehouse answered with a body too large to pass on.")
                content = await answer.read()
        if answer.headers.get("content-encoding", "identity").lower() != "identity":
            # Rare (Bubblehouse sends JSON plainly): let httpx2 undo gzip, deflate and the rest.
            decoded = httpx2.Response(
                answer.status, headers=list(answer.raw_headers), content=content
            )
            return answer.status, answer.headers, decoded.content
        return answer.status, answer.headers, content

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session or self._open()
        timeouts = request.extensions.get("timeout", {})
        timeout = _client_timeout(
            timeouts.get("connect"), timeouts.get("pool"), timeouts.get("read")
        )
        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in request.headers.raw
            if key.lower() not in _HOP_HEADERS
        }
        body = await request.aread()
        with _as_httpx_errors(request):
            async with session.request(
                request.method,
                URL(str(request.url), encoded=True),
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as answer:
                content = await answer.read()
        return httpx2.Response(
            answer.status,
            headers=list(answer.raw_headers),
            content=content,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _client_timeout(
    connect: float | None, pool: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if connect is None else connect + (pool or 0),
        sock_connect=connect,
        sock_read=read,
    )


@contextlib.contextmanager
def _as_httpx_errors(request: httpx2.Request | None) -> Iterator[None]:
    """aiohttp's exceptions as the httpx2 exceptions that :meth:`Upstream.call` translates."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx2.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:
        # Anything after the connection was made: the request may have been delivered.
        raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
