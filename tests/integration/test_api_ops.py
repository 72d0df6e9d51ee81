"""Operations routes: health, readiness, metrics (optionally protected) and the OpenAPI document."""

from __future__ import annotations

from tests.stack import Broker, Sandbox, running_broker


def test_healthz_answers_without_io(broker: Broker) -> None:
    """/healthz is 200 with a tiny body."""
    response = broker.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_reports_the_store(broker: Broker) -> None:
    """/readyz is 200 and says which store is in use, revealing no configuration."""
    response = broker.client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "redis": "memory"}


def test_metrics_count_requests(broker: Broker) -> None:
    """/metrics is Prometheus text that counts the requests served."""
    broker.read()
    response = broker.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "broker_requests_total" in response.text
    assert 'route="/api/{version}/{shop}/CustomerReferrals2"' in response.text


def test_metrics_token_protects_metrics(sandbox: Sandbox) -> None:
    """With BROKER_METRICS_TOKEN set, /metrics needs it as a bearer token."""
    with running_broker(sandbox.url, BROKER_METRICS_TOKEN="metrics-secret-1") as broker:
        assert broker.client.get("/metrics").status_code == 401
        wrong = broker.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = broker.client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-1"})
        assert right.status_code == 200


def test_openapi_is_json(broker: Broker) -> None:
    """/openapi.json is an OpenAPI 3 document served as JSON."""
    response = broker.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/tokens" in document["paths"]


def test_broker_serves_only_the_storefront_client(broker: Broker) -> None:
    """/static holds referrals.js and its types; the demo's own files are not published."""
    script = broker.client.get("/static/referrals.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert broker.client.get("/static/referrals.d.ts").status_code == 200
    for name in ("demo.html", "demo.js", "demo.css"):
        assert broker.client.get(f"/static/{name}").status_code == 404
