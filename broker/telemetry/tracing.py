"""Optional OpenTelemetry span export: one SERVER span per request, one CLIENT span per call.

Off by default. :meth:`Tracing.from_env` turns it on when the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and
``OTEL_SDK_DISABLED`` is not ``true``), and only if the ``otel`` extra is installed; otherwise
it logs ``tracing.unavailable`` once and stays off. The hot path holds ``None`` instead of a
disabled :class:`Tracing`, so switched off it costs one ``is None`` check.

Spans carry only the method, route template, statuses, the broker's error id and cache outcome:
never tokens, email addresses, customer ids or bodies. The tracer provider is the broker's own,
not OpenTelemetry's global one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

import structlog

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    Handle: TypeAlias = Span  # a started span, opaque to the rest of the broker

log = structlog.get_logger("broker.tracing")

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_SERVICE = "referral-broker"
REQUIRED_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")
UPSTREAM_ROUTE = "/api/{version}/{shop}/"


def traces_endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL the environment names, or None when it names none."""
    url = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if url:
        return url
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/traces" if base else None


class Tracing:
    """The broker's spans, or nothing. Methods other than the constructors need ``enabled``."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer: Tracer | None = None
        if provider is not None:
            self.tracer = provider.get_tracer("broker")

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def disabled(cls) -> Tracing:
        return cls()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        import_module: Callable[[str], ModuleType] = importlib.import_module,
    ) -> Tracing:
        """Export over OTLP/HTTP if the standard OTEL_* variables ask for it, else disabled."""
        endpoint = traces_endpoint(environ)
        if endpoint is None or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls.disabled()
        try:
            for name in REQUIRED_MODULES:
                import_module(name)
        except ImportError as error:
            log.warning(
                "tracing.unavailable",
                missing=error.name,
                hint="pip install 'referral-broker[otel]'",
            )
            return cls.disabled()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # The endpoint comes from ``environ``; headers, timeout and TLS the exporter reads itself.
        exporter = OTLPSpanExporter(endpoint=endpoint)
        service = environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE
        return cls(_provider(service, BatchSpanProcessor(exporter)))

    @classmethod
    def with_exporter(cls, exporter: SpanExporter, service: str = DEFAULT_SERVICE) -> Tracing:
        """Enabled, exporting each span as it ends to ``exporter`` (for tests)."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        return cls(_provider(service, SimpleSpanProcessor(exporter)))

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        if self.provider is not None:
            self.provider.shutdown()

    # --- the hot path (only when enabled) ---------------------------------------------------

    def start_request(
        self, method: str, trace_id: str, parent_span_id: str | None, sampled: bool
    ) -> tuple[Handle, str]:
        """(SERVER span, its trace id): a child of the incoming span, or a new trace's root."""
        from opentelemetry import trace

        assert self.tracer is not None
        context = None
        if parent_span_id is not None:
            parent = trace.SpanContext(
                int(trace_id, 16),
                int(parent_span_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else 0),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        span = self.tracer.start_span(
            method,
            context,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method},
        )
        return span, format(span.get_span_context().trace_id, "032x")

    def end_request(
        self,
        handle: Handle,
        method: str,
        route: str,
        status: int,
        error_id: str | None,
        cache: str | None,
    ) -> None:
        from opentelemetry.trace import StatusCode

        handle.update_name(f"{method} {route}")
        handle.set_attribute("http.route", route)
        handle.set_attribute("http.response.status_code", status)
        if error_id is not None:
            handle.set_attribute("broker.error_id", error_id)
        if cache is not None:
            handle.set_attribute("broker.cache", cache)
        if status >= 500 or status == 0:
            handle.set_status(StatusCode.ERROR)
        handle.end()

    def start_upstream(self, handle: Handle | None, function: str) -> tuple[Handle, str]:
        """(CLIENT span, the ``traceparent`` naming it) for one call to Bubblehouse."""
        from opentelemetry import trace

        assert self.tracer is not None
        template = UPSTREAM_ROUTE + function
        span = self.tracer.start_span(
            f"POST {template}",
            trace.set_span_in_context(handle) if handle is not None else None,
            kind=trace.SpanKind.CLIENT,
            attributes={"http.request.method": "POST", "url.template": template},
        )
        ids = span.get_span_context()
        traceparent = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{int(ids.trace_flags):02x}"
        return span, traceparent

    def end_upstream(self, handle: Handle, status: int | None, outcome: str) -> None:
        from opentelemetry.trace import StatusCode

        if status is not None:
            handle.set_attribute("http.response.status_code", status)
        handle.set_attribute("broker.upstream.outcome", outcome)
        if outcome != "ok":
            handle.set_attribute("error.type", outcome)
            handle.set_status(StatusCode.ERROR)
        handle.end()


def _provider(service: str, processor: SpanProcessor) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    return provider
