"""What operators see: structured logs (``logs``), Prometheus metrics (``metrics``), and
OpenTelemetry tracing (``tracing``)."""
