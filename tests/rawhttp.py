"""A Bubblehouse that misbehaves on the wire: a loopback TCP server answering crafted raw bytes.

Each request is read (head and Content-Length body), recorded, and answered by the next reply
in line (the last one repeats): bytes to write, or a function that gets the socket and may
stall, stream forever, or reset the connection. Connections are closed after each answer.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from types import TracebackType

Reply = bytes | Callable[[socket.socket, threading.Event], None]


def answer(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: bool = True,
) -> bytes:
    """An HTTP/1.1 answer with Connection: close (and Content-Length unless ``length`` is off)."""
    lines = [f"HTTP/1.1 {status} X"]
    fields = {"Content-Type": "application/json", "Connection": "close", **(headers or {})}
    if length:
        fields.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def gzipped(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def deflated(data: bytes) -> bytes:
    return zlib.compress(data, 9)


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def stall(conn: socket.socket, stop: threading.Event) -> None:
    """Read the request, never answer (until the test ends)."""
    stop.wait(10)


def endless(head: bytes, piece: Callable[[], bytes]) -> Reply:
    """Write ``head``, then chunks of ``piece()`` for as long as the client keeps reading."""

    def reply(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        while not stop.is_set():
            conn.sendall(chunk(piece()))

    return reply


def reset_after(data: bytes) -> Reply:
    """Write ``data``, then reset the connection (RST, not a clean close)."""

    def reply(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(data)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return reply


class RawUpstream:
    """The server; use as a context manager. ``requests`` holds each request's raw bytes."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> RawUpstream:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                piece = conn.recv(65536)
                if not piece:
                    break
                body += piece
            with self._lock:
                self.requests.append(head + b"\r\n\r\n" + body)
                reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
            if isinstance(reply, bytes):
                conn.sendall(reply)
            else:
                reply(conn, self._stop)


@contextlib.contextmanager
def full_backlog() -> Iterator[str]:
    """A loopback address whose listener never accepts and whose backlog is full: a connect
    there neither succeeds nor fails until the connect timeout (no network needed)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
