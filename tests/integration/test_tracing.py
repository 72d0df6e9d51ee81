"""Tracing: optional OpenTelemetry span export, off by default, in the caller's trace."""

from __future__ import annotations

import asyncio
from types import ModuleType

import httpx2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.testing import capture_logs

from broker.rules.tokens import TokenMinter
from broker.services import Services, running
from broker.telemetry.metrics import Metrics
from broker.telemetry.tracing import Tracing
from broker.web.app import create_app
from broker.web.requestlog import trace_context
from tests.servers import serve_app
from tests.stack import READ_PATH, Broker, Sandbox
from tests.support import ISSUER_KEY, SECRET_A, SECRET_B, make_settings

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
ENDPOINT = "http://127.0.0.1:9"


def test_disabled_without_otel_variables() -> None:
    """No OTLP endpoint, or OTEL_SDK_DISABLED=true, means no tracer provider at all."""
    assert Tracing.from_env({}).provider is None
    assert not Tracing.from_env({"OTEL_SERVICE_NAME": "x"}).enabled
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}
    assert Tracing.from_env(disabled).provider is None
    assert not Tracing.disabled().enabled

    async def wired() -> Services:
        async with running(make_settings(), metrics=Metrics(), tracing=Tracing.disabled()) as svc:
            return svc

    assert asyncio.run(wired()).tracing is None


def test_disabled_header_is_unchanged(broker: Broker, sandbox: Sandbox) -> None:
    """Off by default: Bubblehouse gets the caller's trace id and flags with a new span id."""
    incoming = f"00-{TRACE_ID}-{PARENT_ID}-00"
    broker.read(headers={"traceparent": incoming}).raise_for_status()
    sent = sandbox.requests()[-1]["headers"]["traceparent"]
    version, trace_id, span_id, flags = sent.split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
    assert len(span_id) == 16 and span_id != PARENT_ID


def test_trace_context_reports_the_parent() -> None:
    """trace_context returns the incoming parent span id and sampled flag; none for a new trace."""
    _, _, parent, sampled = trace_context(f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert (parent, sampled) == (PARENT_ID, True)
    assert trace_context(f"00-{TRACE_ID}-{PARENT_ID}-00")[3] is False
    trace_id, _, parent, sampled = trace_context("garbage")
    assert len(trace_id) == 32 and parent is None and sampled


def test_spans_of_a_read_in_the_incoming_trace(sandbox: Sandbox) -> None:
    """A read makes a SERVER span and a CLIENT child in the caller's trace; Bubblehouse sees it."""
    exporter = InMemorySpanExporter()
    settings = make_settings(BROKER_UPSTREAM_URL=sandbox.url)
    customer, email = "cust-8675309", "shopper@example.com"
    token = TokenMinter(settings).customer_token(customer, email, None).token
    headers = {
        "Authorization": f"Bearer {token}",
        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
    }
    app = create_app(settings, tracing=Tracing.with_exporter(exporter))
    with (
        capture_logs() as events,
        serve_app(app) as server,
        httpx2.Client(base_url=server.url, timeout=30) as client,
    ):
        client.post(READ_PATH, headers=headers).raise_for_status()
        sent = sandbox.requests()[-1]["headers"]["traceparent"]
    # The server has stopped: every span has ended and been exported.
    spans = {span.kind: span for span in exporter.get_finished_spans()}
    assert set(spans) == {SpanKind.SERVER, SpanKind.CLIENT}
    server_span, client_span = spans[SpanKind.SERVER], spans[SpanKind.CLIENT]
    assert server_span.context is not None and client_span.context is not None
    assert server_span.context.trace_id == client_span.context.trace_id == int(TRACE_ID, 16)
    assert server_span.parent is not None and server_span.parent.span_id == int(PARENT_ID, 16)
    assert client_span.parent is not None
    assert client_span.parent.span_id == server_span.context.span_id
    assert sent == f"00-{TRACE_ID}-{client_span.context.span_id:016x}-01"
    assert server_span.name == "POST /api/{version}/{shop}/CustomerReferrals2"
    assert dict(server_span.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/api/{version}/{shop}/CustomerReferrals2",
        "http.response.status_code": 200,
        "broker.cache": "miss",
    }
    client_attributes = dict(client_span.attributes or {})
    assert client_attributes["http.request.method"] == "POST"
    assert client_attributes["http.response.status_code"] == 200
    assert client_span.resource.attributes["service.name"] == "referral-broker"
    request_event = next(event for event in events if event["event"] == "request")
    assert request_event["trace_id"] == TRACE_ID
    secrets = (token, email, customer, ISSUER_KEY, SECRET_A, SECRET_B)
    for span in spans.values():
        for value in (span.attributes or {}).values():
            assert not any(secret in str(value) for secret in secrets), value


def test_new_trace_is_the_logged_trace(sandbox: Sandbox) -> None:
    """Without an incoming traceparent the SERVER span starts the trace the request log names."""
    exporter = InMemorySpanExporter()
    settings = make_settings(BROKER_UPSTREAM_URL=sandbox.url)
    app = create_app(settings, tracing=Tracing.with_exporter(exporter))
    with capture_logs() as events, serve_app(app) as server:
        broker = Broker(server.url, settings, httpx2.Client(base_url=server.url, timeout=30))
        with broker.client:
            broker.read().raise_for_status()
    request_event = next(event for event in events if event["event"] == "request")
    assert len(exporter.get_finished_spans()) == 2
    for span in exporter.get_finished_spans():
        assert span.context is not None
        assert format(span.context.trace_id, "032x") == request_event["trace_id"]


def test_unsampled_caller_exports_nothing() -> None:
    """A caller's unsampled trace stays unsampled: no spans, and the flag is passed on."""
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_exporter(exporter)
    server, trace_id = tracing.start_request("GET", TRACE_ID, PARENT_ID, sampled=False)
    client, traceparent = tracing.start_upstream(server, "CustomerReferrals2")
    tracing.end_upstream(client, 200, "ok")
    tracing.end_request(server, "GET", "/healthz", 200, None, None)
    tracing.shutdown()
    assert trace_id == TRACE_ID
    assert traceparent.startswith(f"00-{TRACE_ID}-") and traceparent.endswith("-00")
    assert exporter.get_finished_spans() == ()


def test_export_over_otlp_http() -> None:
    """Enabled by OTEL_EXPORTER_OTLP_ENDPOINT, spans reach the collector by shutdown()."""
    received: list[bytes] = []

    async def traces(request: Request) -> Response:
        received.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    with serve_app(collector) as server:
        tracing = Tracing.from_env(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": server.url, "OTEL_SERVICE_NAME": "broker-test"}
        )
        assert tracing.enabled
        span, _ = tracing.start_request("GET", TRACE_ID, PARENT_ID, sampled=True)
        tracing.end_request(span, "GET", "/healthz", 200, None, None)
        tracing.shutdown()
    assert len(received) >= 1
    assert b"broker-test" in received[0]


def test_missing_packages_degrade_to_disabled() -> None:
    """Asked for but not installed, tracing warns tracing.unavailable once and stays off."""

    def missing(name: str) -> ModuleType:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    with capture_logs() as events:
        tracing = Tracing.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, import_module=missing)
    assert not tracing.enabled and tracing.provider is None
    warnings = [event for event in events if event["event"] == "tracing.unavailable"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
