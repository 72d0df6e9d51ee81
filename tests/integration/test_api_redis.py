"""The broker on a real Redis, and without it: Redis dying mid-run never turns into errors."""

from __future__ import annotations

import time

from structlog.testing import capture_logs

from tests.servers import RedisProcess, free_port
from tests.stack import Sandbox, running_broker


def test_cache_lives_in_redis(sandbox: Sandbox, redis_server: RedisProcess) -> None:
    """With REDIS_URL, reads are cached in Redis and the store reports up."""
    with running_broker(sandbox.url, REDIS_URL=redis_server.url) as broker:
        assert broker.client.get("/readyz").json()["redis"] == "up"
        broker.read()
        assert broker.read().headers["cache-status"].startswith("broker; hit")
    with running_broker(sandbox.url, REDIS_URL=redis_server.url) as second:
        # A new process finds the entry the first one stored.
        assert second.read().headers["cache-status"].startswith("broker; hit")


def test_redis_killed_and_restarted_mid_run(sandbox: Sandbox, redis_server: RedisProcess) -> None:
    """Killing Redis gives no 500s, one down event, and caching resumes when it is back."""
    with (
        capture_logs() as events,
        running_broker(sandbox.url, REDIS_URL=redis_server.url) as broker,
    ):
        assert broker.read().status_code == 200
        redis_server.stop()
        statuses = [broker.read().status_code for _ in range(10)]
        statuses += [broker.refer({"channel": "sms"}).status_code for _ in range(3)]
        assert set(statuses) == {200}
        assert broker.client.get("/readyz").json() == {"status": "ready", "redis": "down"}
        redis_server.start()
        deadline = time.monotonic() + 15
        while broker.client.get("/readyz").json()["redis"] != "up":
            assert time.monotonic() < deadline, "Redis never came back"
            time.sleep(0.2)
        broker.read(customer="carol")
        assert broker.read(customer="carol").headers["cache-status"].startswith("broker; hit")
    names = [e["event"] for e in events]
    after_start = names[names.index("broker.started") :]
    assert after_start.count("store.redis_down") == 1
    assert after_start.count("store.redis_up") == 1


def test_nothing_listening_at_redis_url(sandbox: Sandbox) -> None:
    """A REDIS_URL where nothing listens: the broker starts, serves reads and sends, and says
    redis down; a keyed send, whose key no process can check, waits and is refused with 409
    idempotency_key_reused without reaching Bubblehouse."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with running_broker(sandbox.url, REDIS_URL=url, BROKER_UPSTREAM_TIMEOUT="1") as broker:
        assert broker.client.get("/readyz").json()["redis"] == "down"
        assert all(broker.read().status_code == 200 for _ in range(5))
        assert broker.refer({"channel": "sms"}).status_code == 200
        sends = sandbox.calls()["Refer2"]
        keyed = broker.refer({"channel": "sms"}, headers={"Idempotency-Key": "k"})
        assert keyed.status_code == 409 and keyed.json()["id"] == "idempotency_key_reused"
        assert sandbox.calls()["Refer2"] == sends


def metric(text: str, metric_name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text, 0 when absent."""
    for line in text.splitlines():
        wanted = all(f'{k}="{v}"' in line for k, v in labels.items())
        if line.startswith(f"{metric_name}{{") and wanted:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_show_redis_round_trips_and_its_breaker(
    sandbox: Sandbox, redis_server: RedisProcess
) -> None:
    """/metrics times each Redis round trip by operation and shows Redis's breaker move; a read
    served from the near tier makes no round trip."""
    with running_broker(sandbox.url, REDIS_URL=redis_server.url) as broker:
        broker.read()
        # The near tier goes live once the process is subscribed (in the background).
        deadline = time.monotonic() + 10
        while not broker.read().headers["cache-status"].endswith("detail=near"):
            assert time.monotonic() < deadline, "the near tier never went live"
            time.sleep(0.02)
        text = broker.client.get("/metrics").text
        round_trips = metric(text, "broker_redis_duration_seconds_count", operation="cache_read")
        assert round_trips >= 1
        assert metric(text, "broker_redis_duration_seconds_count", operation="cache_store") == 1
        assert metric(text, "broker_breaker_state", name="redis", state="closed") == 1
        assert broker.read().headers["cache-status"].endswith("detail=near")
        text = broker.client.get("/metrics").text
        assert (
            metric(text, "broker_redis_duration_seconds_count", operation="cache_read")
            == round_trips
        )
        redis_server.stop()
        broker.read(customer="dave")
        text = broker.client.get("/metrics").text
        assert metric(text, "broker_breaker_state", name="redis", state="open") == 1
        assert metric(text, "broker_breaker_state", name="redis", state="closed") == 0
