"""The broker's own seam to Bubblehouse: POST a path, a body and headers; get an :class:`Answer`.

:class:`AiohttpTransport` is the one production implementation (one aiohttp connection pool per
process); :class:`FakeTransport` answers from a function, for unit tests. Only this module sees
aiohttp. Every failure is one of the errors below, so :mod:`broker.upstream.client` translates a
closed set and anything else is a bug there:

    TransportError
    ├── ConnectFailed       the request never left: refused, no route, bad address (retry-safe)
    │   └── ConnectTimeout  no connection within the connect timeout
    ├── ReadTimeout         no answer (or no next piece of it) in time; it may have been delivered
    ├── ConnectionBroken    the connection broke or spoke garbage after the request went out
    ├── UndecodableBody     a Content-Encoding that is unknown or does not decode (corrupt gzip)
    └── BodyTooLarge        the decoded body passes the cap

The body is read as a stream with aiohttp's own decompression off: ``gzip``, ``deflate`` and
``identity`` are decoded here with :func:`zlib.decompressobj`, and reading stops at ``max_body``
decoded bytes, whether or not there is a Content-Length, and however far the body would inflate.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

MAX_BODY = 4 * 1024 * 1024  # decoded bytes: a referral history larger than this is not one
# Compressed bytes read at most: deflate's worst case (stored blocks) adds about 5 bytes per
# 64 KiB, so a body whose compressed form passes this cannot decode to within the cap.
_RAW_SLACK = 64 * 1024
_CHUNK = 64 * 1024


class TransportError(Exception):
    """The call went wrong below HTTP semantics.

    ``status`` is the answer's HTTP status when one had arrived (a body that failed to decode).
    """

    status: int | None = None


class ConnectFailed(TransportError):
    """No connection was made: the request never left the broker."""


class ConnectTimeout(ConnectFailed):
    """No connection within the connect timeout."""


class ReadTimeout(TransportError):
    """The request was sent but the answer did not come (in full) in time."""


class ConnectionBroken(TransportError):
    """The connection failed after the request went out (reset, closed early, bad HTTP)."""


class UndecodableBody(TransportError):
    """The body's Content-Encoding is unknown or its data does not decode."""


class BodyTooLarge(TransportError):
    """The decoded body is larger than the cap."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, headers (``get`` with lower-case names), decoded body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport:
    """What :class:`broker.upstream.client.Upstream` needs from HTTP: one POST, and closing."""

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections; the transport may not be used afterwards."""


class Decoder:
    """Decodes one body's Content-Encoding chunk by chunk, refusing past ``max_body`` bytes."""

    __slots__ = ("_deflate", "_inflate", "_max_body", "_max_raw", "_pending", "_raw", "_size")

    def __init__(self, encoding: str | None, max_body: int = MAX_BODY) -> None:
        name = (encoding or "identity").strip().lower()
        self._max_body = max_body
        self._max_raw = max_body + _RAW_SLACK
        self._raw = 0
        self._size = 0
        self._pending = b""
        self._deflate = name == "deflate"  # zlib-wrapped or raw: told by the first two bytes
        self._inflate: zlib._Decompress | None = None
        if name in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif name not in ("identity", "deflate"):
            raise UndecodableBody(f"unsupported Content-Encoding {name!r}")

    def feed(self, chunk: bytes) -> bytes:
        """The decoded bytes of ``chunk``; raises when the body passes the cap or is corrupt."""
        self._raw += len(chunk)
        if self._raw > self._max_raw:
            raise BodyTooLarge("the body passes the cap")
        inflate = self._inflate
        if inflate is None and self._deflate:
            chunk = self._pending + chunk
            if len(chunk) < 2:
                self._pending = chunk
                return b""
            # RFC 9110 deflate is zlib-wrapped; some servers send it raw (browsers accept both).
            wrapped = chunk[0] & 0x0F == 8 and (chunk[0] << 8 | chunk[1]) % 31 == 0
            inflate = self._inflate = zlib.decompressobj(
                zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            )
        if inflate is None:
            out = chunk
        else:
            if inflate.eof:
                if chunk:
                    raise UndecodableBody("data after the end of the compressed stream")
                return b""
            try:
                # Never inflate more than one byte past the cap: a zip bomb stops right here.
                out = inflate.decompress(chunk, self._max_body - self._size + 1)
            except zlib.error as exc:
                raise UndecodableBody(f"corrupt compressed body: {exc}") from None
            if inflate.unused_data:  # only ever set once the stream has ended
                raise UndecodableBody("data after the end of the compressed stream")
        self._size += len(out)
        if self._size > self._max_body:
            raise BodyTooLarge("the body passes the cap")
        return out

    def finish(self) -> None:
        """The body ended: refuse a compressed stream that is empty or cut short."""
        if self._deflate and self._inflate is None:
            raise UndecodableBody("the deflate body is empty")
        if self._inflate is not None and not self._inflate.eof:
            raise UndecodableBody("the compressed body ends early")


class AiohttpTransport(Transport):
    """One aiohttp connection pool: keep-alive, no redirects, no proxy from the environment.

    ``max_connections`` bounds the pool; ``connect_timeout`` bounds making a connection and
    ``read_timeout`` each wait for the answer's next bytes (the caller bounds the whole call).
    The session is made on first use, on the running loop.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int = 256,
        keepalive: float = 30.0,
        max_body: int = MAX_BODY,
        user_agent: str = "referral-broker/1.0",
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._max_connections = max_connections
        self._keepalive = keepalive
        self._max_body = max_body
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._base_headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            trust_env=False,  # HTTP_PROXY and friends are not for the hot path: see the README
            headers=self._base_headers,
        )
        return self._session

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        session = self._session or self._open()
        try:
            async with session.post(
                URL(self._base_url + path, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as answer:
                try:
                    return Answer(answer.status, answer.headers, await self._read(answer))
                except (UndecodableBody, BodyTooLarge) as exc:
                    exc.status = answer.status
                    raise
        except TransportError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectTimeout(str(exc) or "connect timeout") from exc
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise ReadTimeout(str(exc) or "read timeout") from exc
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # After the connection was made: the request may have been delivered.
            raise ConnectionBroken(str(exc) or type(exc).__name__) from exc

    async def _read(self, answer: aiohttp.ClientResponse) -> bytes:
        length = answer.content_length
        if length is not None and length > self._max_body + _RAW_SLACK:
            raise BodyTooLarge("Content-Length passes the cap")
        decoder = Decoder(answer.headers.get("Content-Encoding"), self._max_body)
        parts = []
        async for chunk in answer.content.iter_chunked(_CHUNK):
            parts.append(decoder.feed(chunk))
        decoder.finish()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def production_transport(
    upstream_url: str, upstream_timeout: float, *, max_connections: int = 256
) -> AiohttpTransport:
    """The transport ``broker serve`` uses, for anything else that talks to Bubblehouse
    (``broker check``) so that it connects exactly as the broker does (no proxy variables)."""
    return AiohttpTransport(
        upstream_url,
        # Well inside the whole call's bound, so that a hung connect is told from a slow answer.
        connect_timeout=min(upstream_timeout / 2, 2.0),
        read_timeout=upstream_timeout,
        max_connections=max_connections,
    )


Handler = Callable[[str, bytes, Mapping[str, str]], Awaitable[Answer] | Answer]


class FakeTransport(Transport):
    """Answers from ``handler(path, body, headers)`` (which may raise a TransportError); keeps
    every request it saw in ``requests``. For unit tests: no socket involved."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []
        self.closed = False

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.requests.append((path, body, dict(headers)))
        result = self.handler(path, body, headers)
        if isinstance(result, Answer):
            return result
        return await result

    async def aclose(self) -> None:
        self.closed = True
