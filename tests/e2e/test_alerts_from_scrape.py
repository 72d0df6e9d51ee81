"""deploy/monitoring/alerts.yaml against what a real broker's /metrics says: the alerts fire
while the fault lasts and clear once it is over.

Each test serves a real broker (uvicorn on loopback, a real redis-server, the sandbox or a
failing upstream), scrapes /metrics while healthy, during the fault and after it, turns the
three scrapes into promtool input series (a counter grows each minute of a phase by what it
grew during that phase; a gauge holds its scraped value), and runs `promtool test rules` on a
generated file: the alert is quiet before, fires during, and clears after.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_deploy_monitoring import RULES, alerts, promtool
from tests.servers import RedisProcess
from tests.stack import Broker, Sandbox, running_broker
from tests.support import ISSUER_KEY

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
# Minutes of each phase: healthy, fault, over. Long enough for every `for:` of the three alerts.
PHASES = (10, 20, 20)


def scrape(broker: Broker) -> tuple[dict[str, float], dict[str, str]]:
    """One scrape of /metrics: sample -> value, and metric family -> type."""
    text = broker.client.get("/metrics").text
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            types[family] = kind
        elif (match := SAMPLE.match(line)) and not line.startswith("#"):
            samples[match[1] + (match[2] or "")] = float(match[3])
    return samples, types


def family(sample: str, types: dict[str, str]) -> str:
    name = sample.split("{", 1)[0]
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
        if name.endswith(suffix) and name.removesuffix(suffix) in types:
            return name.removesuffix(suffix)
    return name


def input_series(
    scrapes: list[tuple[dict[str, float], dict[str, str]]],
) -> list[dict[str, str]]:
    """promtool input series over :data:`PHASES`, one per sample seen in any scrape."""
    types: dict[str, str] = {}
    for _, kinds in scrapes:
        types.update(kinds)
    names = sorted({sample for samples, _ in scrapes for sample in samples})
    series = []
    for sample in names:
        if sample.split("{", 1)[0].endswith("_created"):
            continue  # creation times, not counts
        counter = types.get(family(sample, types)) in ("counter", "histogram")
        values: list[float] = []
        previous = 0.0
        for (samples, _), minutes in zip(scrapes, PHASES, strict=True):
            now = samples.get(sample, previous if counter else 0.0)
            step = max(now - previous, 0.0) if counter and values else 0.0
            start = values[-1] if values else now
            for minute in range(minutes):
                values.append(start + step * (minute + 1) if counter else now)
            previous = now
        series.append({"series": sample, "values": " ".join(f"{v:g}" for v in values)})
    return series


def expected_annotations(name: str) -> dict[str, str]:
    annotations: dict[str, str] = alerts()[name]["annotations"]
    assert "{{" not in "".join(annotations.values()), "templated; write the expectation by hand"
    return annotations


def fires_then_clears(
    tmp_path: Path,
    name: str,
    labels: dict[str, str],
    scrapes: list[tuple[dict[str, float], dict[str, str]]],
) -> None:
    """promtool: ``name`` is quiet at the end of the healthy phase, firing at the end of the
    fault, quiet again at the end of the last phase."""
    healthy, fault, over = PHASES
    firing = {"exp_labels": labels, "exp_annotations": expected_annotations(name)}
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series(scrapes),
                "alert_rule_test": [
                    {"eval_time": f"{healthy - 1}m", "alertname": name, "exp_alerts": []},
                    {
                        "eval_time": f"{healthy + fault - 1}m",
                        "alertname": name,
                        "exp_alerts": [firing],
                    },
                    {
                        "eval_time": f"{healthy + fault + over - 1}m",
                        "alertname": name,
                        "exp_alerts": [],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "generated_test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout} s"
        time.sleep(0.1)


def metric_shows(broker: Broker, sample: str, value: float) -> Callable[[], bool]:
    """Whether a scrape shows ``sample`` at ``value`` (counts are flushed once a second)."""
    return lambda: scrape(broker)[0].get(sample) == value


BREAKER_OPEN = 'broker_breaker_state{{name="{}",state="open"}}'


@pytest.fixture
def redis_broker(sandbox: Sandbox, redis_server: RedisProcess) -> Iterator[Broker]:
    """A broker on a real redis-server of this test's own, which the test stops and starts."""
    with running_broker(sandbox.url, wire=True, REDIS_URL=redis_server.url) as broker:
        yield broker


def redis_state(broker: Broker) -> Any:
    return broker.client.get("/readyz").json().get("redis")


@pytest.mark.slow
def test_redis_down_fires_and_clears(
    tmp_path: Path, redis_broker: Broker, redis_server: RedisProcess
) -> None:
    """BrokerRedisDown fires on the scrape of a broker whose Redis is stopped, and clears on
    the scrape after Redis is back."""
    broker = redis_broker
    until(lambda: redis_state(broker) == "up", "Redis up")
    assert broker.read("redis-alert").status_code == 200
    healthy = scrape(broker)
    redis_server.stop()
    until(lambda: redis_state(broker) == "down", "Redis down")
    until(metric_shows(broker, BREAKER_OPEN.format("redis"), 1), "breaker open in /metrics")
    fault = scrape(broker)
    redis_server.start()
    until(lambda: redis_state(broker) == "up", "Redis up again")
    until(metric_shows(broker, BREAKER_OPEN.format("redis"), 0), "breaker closed in /metrics")
    over = scrape(broker)
    fires_then_clears(tmp_path, "BrokerRedisDown", {"severity": "critical"}, [healthy, fault, over])


@pytest.mark.slow
def test_upstream_circuit_open_fires_and_clears(tmp_path: Path, sandbox: Sandbox) -> None:
    """BrokerUpstreamCircuitOpen fires on the scrape of a broker whose circuit to a failing
    Bubblehouse is open, and clears once a trial call succeeds."""
    env = {
        "BROKER_CIRCUIT_MIN_CALLS": "3",
        "BROKER_CIRCUIT_COOLDOWN": "2",
        "BROKER_CACHE_TTL": "0",
        "BROKER_UPSTREAM_BACKOFF": "0",
    }
    with running_broker(sandbox.url, wire=True, **env) as broker:
        assert broker.read("circuit-alert").status_code == 200
        healthy = scrape(broker)
        sandbox.fault(status=500)

        def opened() -> bool:
            answer = broker.read("circuit-alert")
            return answer.status_code == 503 and answer.json()["id"] == "upstream_unavailable"

        until(opened, "circuit open")
        until(metric_shows(broker, BREAKER_OPEN.format("upstream"), 1), "open in /metrics")
        fault = scrape(broker)
        sandbox.clear_faults()

        def closed() -> bool:
            return broker.read("circuit-alert").status_code == 200

        until(closed, "circuit closed")
        until(metric_shows(broker, BREAKER_OPEN.format("upstream"), 0), "closed in /metrics")
        over = scrape(broker)
    fires_then_clears(
        tmp_path, "BrokerUpstreamCircuitOpen", {"severity": "critical"}, [healthy, fault, over]
    )


@pytest.mark.slow
def test_issuer_key_guessing_fires_and_clears(tmp_path: Path, sandbox: Sandbox) -> None:
    """BrokerIssuerKeyGuessing fires on the scrapes of a broker refusing a client's guessed
    issuer keys with 429, and clears once the guessing stops."""
    with running_broker(sandbox.url, wire=True, BROKER_RATE_LIMIT_ISSUER="3/60s") as broker:
        good = broker.client.post("/tokens", json={"customer_id": "c1"}, headers=broker.issuer())
        assert good.status_code == 200
        healthy = scrape(broker)
        guesses = [
            broker.client.post(
                "/tokens",
                json={"customer_id": "c1"},
                headers={"Authorization": f"Bearer guess-{n:04d}-{ISSUER_KEY}"},
            ).status_code
            for n in range(8)
        ]
        assert 429 in guesses, guesses
        sample = 'broker_rate_limited_total{policy="issuer"}'
        until(lambda: scrape(broker)[0].get(sample, 0) > 0, "issuer refusals in /metrics")
        fault = scrape(broker)
        over = scrape(broker)
    fires_then_clears(
        tmp_path, "BrokerIssuerKeyGuessing", {"severity": "warning"}, [healthy, fault, over]
    )


def test_generated_series_follow_the_scrapes() -> None:
    """A counter grows each minute of a phase by its growth over that phase; a gauge holds the
    scraped value; a sample missing from the first scrape starts at 0."""
    first = ({"c_total": 5.0, "g": 0.0}, {"c": "counter", "g": "gauge"})
    second = ({"c_total": 7.0, "g": 1.0, "n_total": 3.0}, {"c": "counter", "n": "counter"})
    third: tuple[dict[str, float], dict[str, str]] = (
        {"c_total": 7.0, "g": 0.0, "n_total": 3.0},
        {},
    )
    series = {s["series"]: s["values"].split() for s in input_series([first, second, third])}
    healthy, fault, _ = PHASES
    assert series["c_total"][:healthy] == ["5"] * healthy
    assert series["c_total"][healthy : healthy + 2] == ["7", "9"]
    assert series["c_total"][-1] == series["c_total"][healthy + fault - 1]
    assert series["g"][healthy] == "1" and series["g"][-1] == "0"
    assert series["n_total"][healthy - 1] == "0" and series["n_total"][healthy] == "3"


def test_scrape_parser_reads_labels_and_types() -> None:
    """The scrape parser keeps each sample's labels and each family's type."""
    assert SAMPLE.match('broker_breaker_state{name="redis",state="open"} 1.0')
    assert not SAMPLE.match("# HELP broker_breaker_state x")
