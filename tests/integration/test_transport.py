"""The production transport over real loopback sockets: decoding, the cap, and every failure."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import zlib

import pytest

from broker.upstream.transport import (
    MAX_BODY,
    AiohttpTransport,
    BodyTooLarge,
    ConnectFailed,
    ConnectionBroken,
    ConnectTimeout,
    Decoder,
    ReadTimeout,
    UndecodableBody,
    production_transport,
)
from tests.rawhttp import (
    RawUpstream,
    answer,
    chunk,
    deflated,
    endless,
    full_backlog,
    gzipped,
    reset_after,
    stall,
)
from tests.servers import free_port

BODY = b'{"referrals": [{"referral_bhid": "r1", "channel": "sms"}], "zeta": 1}'


def transport(url: str, *, timeout: float = 2.0) -> AiohttpTransport:
    return AiohttpTransport(url, connect_timeout=timeout, read_timeout=timeout)


async def post(url: str, *, wait: float = 2.0) -> tuple[int, bytes]:
    client = transport(url, timeout=wait)
    try:
        async with asyncio.timeout(20):
            got = await client.post("/api/v1/shop/F", b"{}", {"X-Request-ID": "r"})
        return got.status, got.body
    finally:
        await client.aclose()


async def test_plain_answer_and_request_on_the_wire() -> None:
    """A plain answer comes back as sent; the request is a POST with our headers and body."""
    with RawUpstream(answer(200, BODY, {"Retry-After": "3"})) as server:
        client = transport(server.url)
        try:
            got = await client.post("/api/v1/shop/F", b'{"a":1}', {"X-Request-ID": "r-1"})
        finally:
            await client.aclose()
    assert (got.status, got.body, got.headers.get("retry-after")) == (200, BODY, "3")
    request = server.requests[0]
    assert request.startswith(b"POST /api/v1/shop/F HTTP/1.1\r\n")
    lowered = request.lower()
    assert b"x-request-id: r-1" in lowered and b"user-agent: referral-broker/" in lowered
    assert request.endswith(b'{"a":1}')


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", gzipped(BODY)),
        ("x-gzip", gzipped(BODY)),
        ("deflate", deflated(BODY)),
        ("deflate", deflated(BODY)[2:-4]),  # raw deflate, as some servers send it
        ("identity", BODY),
    ],
    ids=["gzip", "x-gzip", "deflate", "raw-deflate", "identity"],
)
async def test_encoded_answers_are_decoded(encoding: str, encoded: bytes) -> None:
    """gzip, deflate (wrapped or raw) and identity bodies decode to the JSON that was sent."""
    with RawUpstream(answer(200, encoded, {"Content-Encoding": encoding})) as server:
        assert await post(server.url) == (200, BODY)


async def test_chunked_gzip_answer_is_decoded() -> None:
    """A chunked answer (no Content-Length) is decoded across chunk boundaries."""
    encoded = gzipped(BODY * 100)
    pieces = b"".join(chunk(encoded[i : i + 7]) for i in range(0, len(encoded), 7))
    head = answer(200, headers={"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"})
    head = head.replace(b"Content-Length: 0\r\n", b"")
    with RawUpstream(head + pieces + b"0\r\n\r\n") as server:
        assert await post(server.url) == (200, BODY * 100)


async def test_refused_connection() -> None:
    """Nothing listening: ConnectFailed (the request never left)."""
    with pytest.raises(ConnectFailed) as caught:
        await post(f"http://127.0.0.1:{free_port()}")
    assert not isinstance(caught.value, ConnectTimeout)


async def test_connect_timeout() -> None:
    """A listener that never accepts (full backlog): ConnectTimeout after the connect timeout."""
    with full_backlog() as url:
        started = time.monotonic()
        with pytest.raises(ConnectTimeout):
            await post(url, wait=0.3)
    assert time.monotonic() - started < 10


async def test_read_timeout() -> None:
    """A server that takes the request and never answers: ReadTimeout."""
    with RawUpstream(stall) as server:
        with pytest.raises(ReadTimeout):
            await post(server.url, wait=0.3)
        assert len(server.requests) == 1


async def test_reset_mid_body() -> None:
    """A connection reset halfway through the body: ConnectionBroken."""
    head = answer(200, b"", {"Content-Length": "5000"})
    head = head.replace(b"Content-Length: 0\r\n", b"")
    with RawUpstream(reset_after(head + BODY)) as server, pytest.raises(ConnectionBroken):
        await post(server.url)


async def test_closed_before_the_promised_length() -> None:
    """A clean close before Content-Length bytes arrived: ConnectionBroken."""
    head = answer(200, b"", {"Content-Length": "5000"}).replace(b"Content-Length: 0\r\n", b"")
    with RawUpstream(head + BODY) as server, pytest.raises(ConnectionBroken):
        await post(server.url)


async def test_garbage_instead_of_http() -> None:
    """Bytes that are not HTTP: ConnectionBroken."""
    with RawUpstream(b"SSH-2.0-OpenSSH_9.2\r\n\r\n") as server, pytest.raises(ConnectionBroken):
        await post(server.url)


@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        ("gzip", b"\x1f\x8b\x08\x00garbage-that-is-not-deflate" * 3),
        ("gzip", gzipped(BODY)[:-12]),  # cut short
        ("gzip", gzipped(BODY) + b"trailing"),
        ("deflate", b"\x78\x9c" + b"\xff" * 40),
        ("deflate", b"\x00"),
        ("br", BODY),
    ],
    ids=["corrupt-gzip", "truncated-gzip", "gzip-trailing", "corrupt-deflate", "tiny", "br"],
)
async def test_undecodable_bodies(encoding: str, encoded: bytes) -> None:
    """A corrupt, cut or unknown Content-Encoding: UndecodableBody, with the answer's status."""
    raw = answer(200, encoded, {"Content-Encoding": encoding})
    with RawUpstream(raw) as server, pytest.raises(UndecodableBody) as caught:
        await post(server.url)
    assert caught.value.status == 200


async def test_endless_chunked_body_stops_at_the_cap() -> None:
    """A chunked answer that never ends is refused once it passes the cap, not buffered."""
    head = answer(200, headers={"Transfer-Encoding": "chunked"}, length=False)
    with RawUpstream(endless(head, lambda: b" " * 65536)) as server, pytest.raises(BodyTooLarge):
        await post(server.url)


async def test_endless_gzip_stops_at_the_cap() -> None:
    """A gzip stream that inflates without end is refused at the cap (decoded size)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1024 * 1024)

    def piece() -> bytes:
        return compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)

    head = answer(
        200, headers={"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"}, length=False
    )
    with RawUpstream(endless(head, piece)) as server, pytest.raises(BodyTooLarge):
        await post(server.url)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_bomb_with_content_length_is_refused(encoding: str) -> None:
    """A small compressed body (Content-Length given) that inflates to 64 MB is refused."""
    bomb = (gzipped if encoding == "gzip" else deflated)(b"{" + b" " * (64 * 1024 * 1024))
    assert len(bomb) < 100_000
    with (
        RawUpstream(answer(200, bomb, {"Content-Encoding": encoding})) as server,
        pytest.raises(BodyTooLarge),
    ):
        await post(server.url)


async def test_content_length_over_the_cap_is_refused_unread() -> None:
    """A Content-Length far past the cap is refused from the header, before any body."""
    head = answer(200, headers={"Content-Length": str(64 * MAX_BODY)}, length=False)

    def head_only(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        stop.wait(10)

    with (
        RawUpstream(head_only) as server,
        pytest.raises(BodyTooLarge),
    ):
        await post(server.url, wait=5)


async def test_redirects_are_not_followed() -> None:
    """A 302 is returned as it is; the Location is never visited."""
    with RawUpstream(answer(302, b"{}", {"Location": "http://127.0.0.1:9/elsewhere"})) as server:
        assert await post(server.url) == (302, b"{}")
        assert len(server.requests) == 1


async def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY in the environment does not divert the broker's calls (trust_env off)."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert os.environ["HTTP_PROXY"] == dead_proxy
    with RawUpstream(answer(200, BODY)) as server:
        client = production_transport(server.url, 2.0)
        try:
            got = await client.post("/x", b"{}", {})
        finally:
            await client.aclose()
    assert got.body == BODY


async def test_connections_are_reused() -> None:
    """Keep-alive: two calls in a row use one connection."""
    keep = answer(200, BODY).replace(b"Connection: close\r\n", b"")
    seen: list[int] = []

    def two_answers(conn: object, stop: object) -> None:
        import socket

        assert isinstance(conn, socket.socket)
        conn.sendall(keep)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        seen.append(1)
        conn.sendall(keep)

    with RawUpstream(two_answers) as server:
        client = transport(server.url)
        try:
            await client.post("/a", b"{}", {})
            await client.post("/b", b"{}", {})
        finally:
            await client.aclose()
    assert len(server.requests) == 1 and seen == [1]


def test_decoder_cap_is_exact() -> None:
    """The cap counts decoded bytes: exactly the cap passes, one byte more does not."""
    for encoding, encode in (("identity", bytes), ("gzip", gzipped), ("deflate", deflated)):
        exact = Decoder(encoding, max_body=1000)
        data = encode(b"x" * 1000)
        assert exact.feed(data) == b"x" * 1000
        exact.finish()
        over = Decoder(encoding, max_body=1000)
        with pytest.raises(BodyTooLarge):
            over.feed(encode(b"x" * 1001))
