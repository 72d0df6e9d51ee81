"""What one worker lets a connection do: the HTTP protocol of ``broker serve`` (spec 3.4).

:class:`BoundedProtocol` is uvicorn's httptools protocol with every connection held to bounds:

- **Head size.** A request line and headers over :data:`MAX_HEADER_BYTES` get 431 and the
  connection closed, counted from the first byte of each request's head, on a kept-alive
  connection too, so no more than the limit (and one small piece) is ever buffered.
- **Head deadline.** A connection that has not sent a complete request head within
  :data:`HEAD_SECONDS` of connecting, or of its previous answer, is closed (a client trickling
  a byte every few seconds included).
- **Body deadline.** A request body must arrive within :data:`BODY_SECONDS` of its head:
  otherwise 408 (or, once an answer has begun, the connection closed).
- **Idle.** uvicorn's keep-alive timer closes an idle kept-alive connection
  (:data:`IDLE_SECONDS`, set by the server).
- **Stopping.** When the worker stops (SIGTERM, a reload), an answer in progress finishes and
  an idle kept-alive connection closes, as in uvicorn; but a connection accepted a moment
  before, whose request is still on its way (or half read), is not cut off: it gets
  :data:`STOP_GRACE_SECONDS` for its request, answered with ``Connection: close`` (Go's
  ``http.Server.Shutdown`` spares new connections the same way).
- **Count.** A worker holds ``limit`` connections (``BROKER_MAX_CONNECTIONS``); past it, a
  request is answered 503 at once and its connection closed, except ``GET /healthz``, which
  keeps answering. Up to :data:`RESERVE` connections beyond the limit are accepted for that
  (with a short head deadline); past those, a connection is answered 503 and closed as soon
  as it is accepted.

A request costs two timer operations beyond uvicorn's own (one deadline armed at the answer,
cancelled at the next head) and one flag test per received chunk.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 16 * 1024  # request line and headers together
HEAD_SECONDS = 10.0  # to send a complete request head, from connecting or the last answer
BODY_SECONDS = 10.0  # to send the body, from the end of the head
IDLE_SECONDS = 5  # a kept-alive connection with no request (uvicorn's keep-alive timer)
RESERVE = 64  # connections accepted past the limit, to answer /healthz and say 503
RESERVE_HEAD_SECONDS = 2.0  # what a connection in the reserve gets to send its head
STOP_GRACE_SECONDS = 2.0  # a new connection's time to send its request once the worker stops
PIECE = 4 * 1024  # bytes fed at a time while a request's head may begin mid-chunk
HEALTH_PATHS = (b"/healthz", b"/healthz?")

_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\n"
    b"connection: close\r\n\r\n"
)
_BUSY_MESSAGE = "The server holds as many connections as it may; try again in a moment."
_LATE_BODY = "The request body did not arrive in time."


def _problem(status: int, reason: bytes, error_id: str, message: str, *extra: bytes) -> bytes:
    """A whole problem+json answer that closes the connection (a fresh request id each time)."""
    request_id = secrets.token_hex(8)
    body = orjson.dumps(
        {
            "type": f"urn:referral-broker:error:{error_id}",
            "title": reason.decode(),
            "status": status,
            "id": error_id,
            "message": message,
            "retryable": True,
            "request_id": request_id,
        }
    )
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/problem+json\r\n",
            b"cache-control: no-store\r\n",
            b"x-request-id: " + request_id.encode() + b"\r\n",
            *extra,
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
    )


def busy_answer() -> bytes:
    """The 503 written to a connection past the limit."""
    return _problem(503, b"Service Unavailable", "not_ready", _BUSY_MESSAGE, b"retry-after: 1\r\n")


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head, deadline and connection bounds above.

    The connection limit is uvicorn's ``limit_concurrency`` setting, read here instead of by
    uvicorn (whose own check counts tasks too and spares nothing for /healthz).
    """

    _reading_head = True
    _head_bytes = 0
    _body_pending = False  # a head is in, its body is not: armed after the chunk is fed
    _deadline: asyncio.TimerHandle | None = None
    _for_body = False  # whether the deadline is the body's
    _too_large = False  # a head over the limit, refused once the answer in progress is sent
    _stopping = False  # the worker stops: the request on its way is the connection's last

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_connections: int | None = self.limit_concurrency
        self.limit_concurrency = None  # uvicorn's own check stays out of the way

    # Connection life -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own signature
        super().connection_made(transport)
        limit = self.max_connections
        if limit is not None and len(self.connections) > limit:
            if len(self.connections) > limit + RESERVE:
                self.connections.discard(self)
                transport.write(busy_answer())
                transport.close()
                return
            self._arm(RESERVE_HEAD_SECONDS, self._head_expired)
            return
        self._arm(HEAD_SECONDS, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The worker stops. A connection between requests closes (uvicorn's way) unless a
        request's head has begun or none has come yet: that one is answered, then closed."""
        if self.transport.is_closing():
            return
        if self._reading_head and (self.cycle is None or self.cycle.response_complete):
            self._stopping = True
            left = STOP_GRACE_SECONDS
            if self._deadline is not None:  # the head deadline already running, if sooner
                left = min(left, self._deadline.when() - self.loop.time())
            self._arm(left, self._head_expired)
            return
        super().shutdown()

    def _arm(self, seconds: float, expired: Any) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, expired)
        self._for_body = expired == self._body_expired

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_expired(self) -> None:
        """No complete head in time: close (nothing was asked, so nothing is answered)."""
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_expired(self) -> None:
        """The body did not arrive in time: 408 unless an answer has begun, then close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the app hears a disconnect; its answer goes nowhere
            self.transport.write(_problem(408, b"Request Timeout", "request_timeout", _LATE_BODY))
        self.transport.close()

    # Parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_head:  # the next request on a kept-alive connection
            self._reading_head = True
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._disarm()
        limit = self.max_connections
        if limit is not None and len(self.connections) > limit and not self._is_health():
            app, self.app = self.app, _busy_app
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()
        if self._stopping:
            self.cycle.keep_alive = False
        self._body_pending = True

    def on_message_complete(self) -> None:
        self._body_pending = False
        if self._for_body:
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._too_large:
            self._too_large = False
            self._refuse_head()
            return
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm(HEAD_SECONDS, self._head_expired)  # the next head, from this answer

    def _in_head(self) -> bool:
        """Whether a request's head is being read (the parser's callbacks may have changed it)."""
        return self._reading_head

    def _is_health(self) -> bool:
        url: bytes = self.url
        return url == HEALTH_PATHS[0] or url.startswith(HEALTH_PATHS[1])

    # Bytes -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._too_large:
            return  # refused: read no further
        self._feed(data)
        if self._body_pending and self._deadline is None and not self.transport.is_closing():
            self._arm(BODY_SECONDS, self._body_expired)

    def _feed(self, data: bytes) -> None:
        if self._reading_head:
            self._head_data(data)
            return
        if len(data) <= PIECE:
            super().data_received(data)
            if self._in_head():  # a head began in this chunk: count all of it against it
                self._head_bytes = len(data)
            return
        # A head may begin anywhere in a large chunk (a pipelined request after a body):
        # feed it in pieces, and count from the piece it begins in.
        for start in range(0, len(data), PIECE):
            super().data_received(data[start : start + PIECE])
            if self.transport.is_closing():
                return
            if self._in_head():
                self._head_bytes = min(PIECE, len(data) - start)
                rest = data[start + PIECE :]
                if rest:
                    self._head_data(rest)
                return

    def _head_data(self, data: bytes) -> None:
        room = MAX_HEADER_BYTES - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        # Feed what fits: if the head ends inside it, the rest is body (or the next request).
        self._head_bytes = MAX_HEADER_BYTES
        if room > 0:
            super().data_received(data[:room])
        if self._in_head():
            self._refuse_head()
            return
        self._feed(data[room:])

    def _refuse_head(self) -> None:
        """431 and close; after the answer to an earlier request still being made, if any."""
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._too_large = True  # on_response_complete refuses; nothing more is read
            self.flow.pause_reading()
            return
        self.transport.write(_HEADERS_TOO_LARGE)
        self.transport.close()


async def _busy_app(scope: Any, receive: Any, send: Any) -> None:
    """The answer past the connection limit: 503 problem+json, connection closed."""
    head, _, body = busy_answer().partition(b"\r\n\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
