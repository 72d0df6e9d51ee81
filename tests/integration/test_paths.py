"""Paths holding a control character: 404 not_found on every route, no CORS, over a real socket."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.servers import RunningServer
from tests.stack import READ_PATH, WRITE_PATH, Broker, Sandbox, running_broker
from tests.support import ISSUER_KEY

ORIGIN = "https://shop.example"
SHOPIFY = {
    "BROKER_SHOPIFY_SECRET": "shpss_0123456789abcdef0123456789abcdef",
    "BROKER_SHOPIFY_SHOP": "test-store.myshopify.com",
}


@pytest.fixture(scope="module")
def broker(sandbox_server: RunningServer) -> Iterator[Broker]:
    """The broker on a loopback socket, with the Shopify route configured."""
    with running_broker(sandbox_server.url, wire=True, **SHOPIFY) as running:
        yield running


def raw_request(
    broker: Broker, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte (the target as given), and the answer read to close."""
    host, port = broker.url.removeprefix("http://").split(":")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + body)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    top, _, content = received.partition(b"\r\n\r\n")
    status_line, *fields = top.decode("latin-1").split("\r\n")
    answer_headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), answer_headers, content


def requests_for(broker: Broker) -> list[tuple[str, str, dict[str, str], bytes]]:
    customer = broker.auth()
    issuer = {"Authorization": f"Bearer {ISSUER_KEY}", "Content-Type": "application/json"}
    minted = json.dumps({"customer_id": "alice"}).encode()
    sent = json.dumps({"channel": "sms"}).encode()
    json_type = {"Content-Type": "application/json"}
    return [
        ("POST", "/tokens", issuer, minted),
        ("POST", "/invalidations", issuer, minted),
        ("GET", "/shopify/token", {}, b""),
        ("GET", "/metrics", {}, b""),
        ("GET", "/healthz", {}, b""),
        ("GET", "/readyz", {}, b""),
        ("GET", "/openapi.json", {}, b""),
        ("GET", "/static/manifest.json", {}, b""),
        ("POST", READ_PATH, {**customer, **json_type}, b"{}"),
        ("GET", READ_PATH, customer, b""),
        ("POST", WRITE_PATH, {**customer, **json_type}, sent),
        ("OPTIONS", WRITE_PATH, {"Access-Control-Request-Method": "POST"}, b""),
    ]


@pytest.mark.parametrize("control", ["%0A", "%0D", "%00", "%09", "%1F", "%7F", "%C2%85"])
def test_a_control_character_after_any_route_is_404_without_cors(
    broker: Broker, control: str
) -> None:
    """'/tokens%0A' and the like never reach a handler: 404 not_found, no CORS headers."""
    for method, path, headers, body in requests_for(broker):
        status, answer, content = raw_request(
            broker, method, path + control, {"Origin": ORIGIN, **headers}, body
        )
        assert status == 404, (method, path, control, content)
        assert json.loads(content)["id"] == "not_found"
        assert answer["content-type"] == "application/problem+json"
        assert not [h for h in answer if h.startswith("access-control-")], (path, answer)
        assert b"token" not in content


@pytest.mark.parametrize("target", ["/tok%0Aens", "/api/v2023061/test-shop%00/Refer2"])
def test_a_control_character_inside_a_path_is_404(broker: Broker, target: str) -> None:
    """A control character anywhere in the path is not_found."""
    status, answer, content = raw_request(broker, "GET", target, {"Origin": ORIGIN})
    assert status == 404 and json.loads(content)["id"] == "not_found"
    assert "access-control-allow-origin" not in answer


def test_an_unencoded_control_byte_in_the_path_is_refused(broker: Broker) -> None:
    """A raw control byte in the request target is refused (the server's 400 or our 404)."""
    status, answer, _ = raw_request(broker, "GET", "/healthz\x01", {"Origin": ORIGIN})
    assert status in (400, 404)
    assert "access-control-allow-origin" not in answer


def test_the_same_paths_without_control_characters_still_answer(broker: Broker) -> None:
    """The guard takes nothing else: each route answers, with CORS unless server to server."""
    for method, path, headers, body in requests_for(broker):
        status, answer, _ = raw_request(broker, method, path, {"Origin": ORIGIN, **headers}, body)
        assert status != 404 or path == "/shopify/token", (method, path)
        closed = path in ("/tokens", "/invalidations", "/shopify/token", "/metrics")
        assert ("access-control-allow-origin" in answer) != closed, (path, answer)


def test_a_control_path_is_not_found_in_process_too(sandbox: Sandbox) -> None:
    """In process too (the test client), '/tokens%0A' is not_found and mints nothing."""
    with running_broker(sandbox.url) as running:
        answer = running.client.post(
            "/tokens%0A", json={"customer_id": "alice"}, headers=running.issuer()
        )
    assert answer.status_code == 404 and answer.json()["id"] == "not_found"
